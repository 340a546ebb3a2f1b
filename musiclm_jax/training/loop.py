"""The resumable step/log/eval/checkpoint loop under every training job (`runner.py` drives it).

The loop takes a trainer with `train_step(state, batch)`, `partitioner`, `init_state(seed)` and
`abstract_state`, a batch iterator, and how to describe throughput on the console. It owns the
steps: logging, periodic evaluation, log hooks, non-finite aborts, checkpoint cadence and
preemption. Restoring and final metrics are here too, for the runner.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from absl import logging

from musiclm_jax.checkpoints import Checkpointer
from musiclm_jax.runtime import atomic, distributed, hardware

PyTree = Any


class NonFiniteLossError(RuntimeError):
  """Training produced non-finite losses for too many consecutive steps."""


class SteppingTrainer(Protocol):
  partitioner: Any
  abstract_state: PyTree

  def init_state(self, seed: int) -> PyTree: ...

  def train_step(self, state: PyTree, batch: Mapping[str, Any]) -> tuple[PyTree, dict]: ...


class Throughput:
  """Items/s, step time and (where the device's peak is known) MFU between two log points.

  Args:
    items_per_step: what one step consumes (tokens, audio seconds, ...).
    unit: the console/metric name of an item ("tokens", "audio_seconds").
    flops_per_step: model FLOPs of one step (0: no MFU).
  """

  def __init__(self, items_per_step: float, unit: str, flops_per_step: float = 0.0):
    self.items_per_step, self.unit, self.flops_per_step = items_per_step, unit, flops_per_step
    self.peak = hardware.peak_flops()
    self.reset(0)

  def reset(self, step: int) -> None:
    self.step, self.time = step, time.perf_counter()

  def measure(self, step: int) -> dict[str, float]:
    elapsed = max(time.perf_counter() - self.time, 1e-9)
    steps = max(step - self.step, 1)
    out = {
      "step_time_s": elapsed / steps,
      f"{self.unit}_per_s": self.items_per_step * steps / elapsed,
    }
    if self.peak and self.flops_per_step:
      out["mfu"] = self.flops_per_step * steps / elapsed / (self.peak * jax.device_count())
    self.reset(step)
    return out


def restore_or_init(
  trainer: SteppingTrainer, checkpointer: Checkpointer, seed: int
) -> tuple[PyTree, int]:
  """The newest complete checkpoint's state and data position, or a fresh state at 0.

  Raises:
    DistributedError: the hosts of a multi-host job see different newest checkpoints (e.g. each
      wrote to its own local disk instead of one shared directory).
  """
  latest = checkpointer.latest_step()
  distributed.check_agreement(f"newest checkpoint in {checkpointer.directory}", str(latest))
  if latest is None:
    return trainer.init_state(seed), 0
  state, extra = checkpointer.restore(trainer.abstract_state)
  if jax.process_index() == 0:
    print(f"resumed from step {int(state.step)} ({checkpointer.directory})", flush=True)
  return state, int(extra.get("data_batches", int(state.step)))


def write_final_metrics(model_dir: str, step: int, scalars: dict[str, float]) -> dict[str, float]:
  """Updates final_metrics.json; a resumed job with nothing left to train keeps the old ones."""
  path = os.path.join(model_dir, "final_metrics.json")
  previous = {}
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
  merged = {**previous, **scalars, "step": step}
  atomic.atomic_write_json(path, merged)  # a kill never leaves half a file
  return {k: v for k, v in merged.items() if k != "step"}


class TrainLoop:
  """Steps, logs, evaluates and checkpoints until `num_steps` or a preemption.

  Args:
    console_line: formats one log line from (step, num_steps, scalars).
    log_hooks: each called as hook(step, state, writer) at every log point (e.g. audio
      summaries).
    evaluate: state -> eval metrics; with `eval_every` > 0 it runs at every multiple of
      `eval_every` before `num_steps` (the runner evaluates the final state itself).
  """

  def __init__(
    self,
    trainer: SteppingTrainer,
    checkpointer: Checkpointer,
    writer: Any,
    batches: Iterator[dict[str, np.ndarray]],
    *,
    num_steps: int,
    log_every: int,
    max_nonfinite: int,
    throughput: Throughput,
    console_line: Callable[[int, int, Mapping[str, float]], str],
    log_hooks: Sequence[Callable[[int, PyTree, Any], None]] = (),
    evaluate: Callable[[PyTree], Mapping[str, float]] | None = None,
    eval_every: int = 0,
  ):
    self.trainer, self.checkpointer, self.writer = trainer, checkpointer, writer
    self.batches, self.num_steps, self.log_every = batches, num_steps, log_every
    self.max_nonfinite, self.throughput = max_nonfinite, throughput
    self.console_line, self.log_hooks = console_line, tuple(log_hooks)
    self.evaluate, self.eval_every = evaluate, eval_every if evaluate is not None else 0

  def run(self, state: PyTree, data_batches: int) -> tuple[PyTree, dict[str, float]]:
    step, scalars, nonfinite_run = int(state.step), {}, 0
    self.throughput.reset(step)
    while step < self.num_steps:
      batch = self._next_batch(step)
      state, metrics = self.trainer.train_step(state, self.trainer.partitioner.shard_batch(batch))
      step, data_batches = step + 1, data_batches + 1
      if step % self.log_every == 0 or step == self.num_steps:
        scalars = self._log(step, metrics)
        for hook in self.log_hooks:
          hook(step, state, self.writer)
        nonfinite_run = nonfinite_run + 1 if scalars["nonfinite"] else 0
        if nonfinite_run * self.log_every >= self.max_nonfinite:
          raise NonFiniteLossError(
            f"Loss was not finite at step {step} and before; the last "
            f"good parameters are in {self.checkpointer.directory}."
          )
      if self.eval_every and step % self.eval_every == 0 and step < self.num_steps:
        self.evaluate_and_log(step, state)
        self.throughput.reset(step)  # evaluation time is not training time
      if step == self.num_steps or self.checkpointer.should_save(step):
        self.checkpointer.save(step, state, {"data_batches": data_batches}, force=True)
      if self.checkpointer.preempted:
        logging.warning("Preempted: saved step %d, exiting.", step)
        break
    self.checkpointer.wait_until_finished()
    return state, scalars

  def evaluate_and_log(self, step: int, state: PyTree) -> dict[str, float]:
    """Evaluates `state`, writes eval/... scalars at `step` and prints them; returns them."""
    if self.evaluate is None:
      return {}
    scalars = {f"eval/{k}": float(v) for k, v in self.evaluate(state).items()}
    self.writer.write_scalars(step, scalars)
    if jax.process_index() == 0:
      shown = "  ".join(f"{k[len('eval/') :]} {v:.4g}" for k, v in sorted(scalars.items()))
      print(f"eval at step {step}/{self.num_steps}  {shown}", flush=True)
    return scalars

  def _next_batch(self, step: int) -> dict[str, np.ndarray]:
    try:
      return next(self.batches)
    except StopIteration:
      raise ValueError(
        f"The training data ran out at step {step}; use a repeating split or fewer steps."
      ) from None

  def _log(self, step: int, metrics: Mapping[str, jax.Array]) -> dict[str, float]:
    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
    scalars.update(self.throughput.measure(step))
    self.writer.write_scalars(step, scalars)
    if jax.process_index() == 0:
      print(self.console_line(step, self.num_steps, scalars), flush=True)
    return scalars
