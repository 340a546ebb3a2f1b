"""The training job: model + data + trainer + checkpoints, resumable (t5x's train.py role).

`train()` is what `musiclm-jax train` runs once gin has bound its arguments. It restores the
newest complete checkpoint in `model_dir` if there is one (state, RNG and data position), so a
job killed at any point and started again continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
import seqio
from absl import logging
from clu import metric_writers

from musiclm_jax import hardware
from musiclm_jax.checkpoints import CheckpointConfig, Checkpointer
from musiclm_jax.data import stage_tasks
from musiclm_jax.models.stage_lm import StageLM, train_flops_per_token
from musiclm_jax.optimizers import OptimizerConfig, make_optimizer, make_schedule
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.trainer import Trainer, TrainState, summarize_eval


class NonFiniteLossError(RuntimeError):
  """Training produced non-finite losses for too many consecutive steps."""


def model_metadata(model: StageLM) -> dict[str, Any]:
  """What a checkpoint must match to be restored into `model` (architecture and layout)."""
  return {
    "model": model.name,
    "architecture": dataclasses.asdict(model.config),
    "layout": {
      "stage": model.layout.stage,
      "crop_seconds": model.layout.crop_seconds,
      "tokens": dataclasses.asdict(model.layout.tokens),
    },
    "vocab_size": model.vocab_size,
  }


def _batches(
  task: str | seqio.Task,
  model: StageLM,
  split: str,
  batch_size: int,
  seed: int,
  skip_batches: int,
  shuffle: bool = True,
  num_epochs: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """This host's share of each global batch, as numpy."""
  per_host, remainder = divmod(batch_size, jax.process_count())
  if remainder:
    raise ValueError(f"batch_size {batch_size} is not divisible by {jax.process_count()} hosts.")
  dataset = stage_tasks.get_stage_dataset(
    task,
    model.layout,
    split=split,
    batch_size=per_host,
    seed=seed,
    shuffle=shuffle,
    num_epochs=num_epochs,
    shard_id=jax.process_index(),
    num_shards=jax.process_count(),
    skip_batches=skip_batches,
  )
  return dataset.as_numpy_iterator()


class _Throughput:
  """Tokens/s, step time and MFU between two log points."""

  def __init__(self, model: StageLM, batch_size: int):
    self.tokens_per_step = batch_size * model.sequence_length
    self.flops_per_step = self.tokens_per_step * train_flops_per_token(
      model.config, model.vocab_size, model.sequence_length
    )
    self.peak = hardware.peak_flops()
    self.reset(0)

  def reset(self, step: int) -> None:
    self.step, self.time = step, time.perf_counter()

  def measure(self, step: int) -> dict[str, float]:
    elapsed = max(time.perf_counter() - self.time, 1e-9)
    steps = max(step - self.step, 1)
    out = {
      "step_time_s": elapsed / steps,
      "tokens_per_s": self.tokens_per_step * steps / elapsed,
    }
    if self.peak:
      out["mfu"] = self.flops_per_step * steps / elapsed / (self.peak * jax.device_count())
    self.reset(step)
    return out


def _console_line(step: int, num_steps: int, scalars: Mapping[str, float]) -> str:
  line = (
    f"step {step}/{num_steps}  loss {scalars['loss']:.4f}  acc {scalars['accuracy']:.3f}  "
    f"{scalars['tokens_per_s']:,.0f} tok/s  {scalars['step_time_s']:.3f} s/step  "
    f"lr {scalars.get('learning_rate', float('nan')):.2e}  gnorm {scalars['grad_norm']:.3f}"
  )
  if "mfu" in scalars:
    line += f"  mfu {100 * scalars['mfu']:.1f}%"
  return line


def evaluate(
  trainer: Trainer, params: Any, task: str | seqio.Task, split: str, num_batches: int, seed: int
) -> dict[str, float]:
  """Per-token loss/accuracy over the first `num_batches` batches of `split` (no shuffling)."""
  summed = None
  batches = _batches(task, trainer.model, split, trainer.batch_size, seed, 0, shuffle=False)
  for _, batch in zip(range(num_batches), batches, strict=False):
    metrics = trainer.eval_step(params, trainer.partitioner.shard_batch(batch))
    summed = metrics if summed is None else jax.tree.map(lambda a, b: a + b, summed, metrics)
  if summed is None:
    raise ValueError(f"Split {split!r} of {task} produced no batch of {trainer.batch_size}.")
  return summarize_eval(jax.device_get(summed))


def _restore_or_init(
  trainer: Trainer, checkpointer: Checkpointer, seed: int
) -> tuple[TrainState, int]:
  if checkpointer.latest_step() is None:
    return trainer.init_state(seed), 0
  state, extra = checkpointer.restore(trainer.abstract_state)
  logging.info("Resumed from %s step %d.", checkpointer.directory, int(state.step))
  return state, int(extra.get("data_batches", int(state.step)))


def train(
  *,
  model: StageLM,
  task: str | seqio.Task,
  model_dir: str,
  num_steps: int,
  batch_size: int,
  optimizer: OptimizerConfig = OptimizerConfig(),
  partitioner: Partitioner | None = None,
  checkpoint: CheckpointConfig = CheckpointConfig(),
  num_microbatches: int = 1,
  seed: int = 0,
  data_seed: int = 0,
  train_split: str = "train",
  eval_split: str | None = "validation",
  eval_every_steps: int = 0,
  eval_batches: int = 2,
  log_every_steps: int = 10,
  max_nonfinite_steps: int = 20,
) -> dict[str, float]:
  """Trains `model` on `task` until `num_steps`, resuming from `model_dir` if possible.

  Args:
    model: the stage LM.
    task: seqio task/mixture (or its registered name) of stage examples for `model.layout`.
    model_dir: checkpoints (`model_dir/checkpoints`), TensorBoard events and the operative config.
    num_steps: total optimizer steps (a resumed job runs the remainder).
    batch_size: global batch size.
    optimizer: optimizer and schedule.
    partitioner: mesh and rules (default: every device on 'data').
    checkpoint: checkpoint cadence and retention.
    num_microbatches: gradient accumulation.
    seed: parameter init and dropout seed.
    data_seed: shuffling and crop seed.
    train_split, eval_split: data splits (eval_split None: no evaluation).
    eval_every_steps: evaluate every N steps and at the end (0: only at the end).
    eval_batches: batches per evaluation.
    log_every_steps: metrics cadence (TensorBoard + console).
    max_nonfinite_steps: abort after this many consecutive skipped (non-finite) steps.
  Returns:
    The last logged metrics (train, and eval/... if evaluated).
  """
  partitioner = partitioner or Partitioner()
  trainer = Trainer(
    model,
    make_optimizer(optimizer),
    partitioner,
    batch_size=batch_size,
    num_microbatches=num_microbatches,
    learning_rate_fn=make_schedule(optimizer),
  )
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(model_dir, just_logging=not is_chief)
  with Checkpointer(
    os.path.join(model_dir, "checkpoints"), checkpoint, metadata=model_metadata(model)
  ) as checkpointer:
    state, data_batches = _restore_or_init(trainer, checkpointer, seed)
    start = int(state.step)
    if is_chief and start == 0:
      writer.write_hparams(
        {
          "num_params": model.num_params(),
          "batch_size": batch_size,
          "num_devices": jax.device_count(),
        }
      )
    batches = _batches(task, model, train_split, batch_size, data_seed, data_batches)
    loop = _TrainLoop(
      trainer, checkpointer, writer, batches, num_steps, log_every_steps, max_nonfinite_steps
    )
    state, scalars = loop.run(state, data_batches)
    if eval_split and (eval_every_steps or num_steps > start):
      scalars.update(_eval_scalars(trainer, state, task, eval_split, eval_batches, data_seed))
      writer.write_scalars(int(state.step), {k: v for k, v in scalars.items() if "/" in k})
  writer.flush()
  if is_chief:
    scalars = _write_final_metrics(model_dir, int(state.step), scalars)
  return scalars


def _write_final_metrics(model_dir: str, step: int, scalars: dict[str, float]) -> dict[str, float]:
  """Updates final_metrics.json; a resumed job with nothing left to train keeps the old ones."""
  path = os.path.join(model_dir, "final_metrics.json")
  previous = {}
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
  merged = {**previous, **scalars, "step": step}
  with open(path + ".tmp", "w") as f:
    json.dump(merged, f, indent=2)
  os.replace(path + ".tmp", path)  # atomic: a kill never leaves half a file
  return {k: v for k, v in merged.items() if k != "step"}


def _eval_scalars(trainer, state, task, split, num_batches, seed) -> dict[str, float]:
  metrics = evaluate(trainer, state.params, task, split, num_batches, seed)
  return {f"eval/{k}": v for k, v in metrics.items()}


class _TrainLoop:
  """Steps, logs and checkpoints until `num_steps` or a preemption."""

  def __init__(self, trainer, checkpointer, writer, batches, num_steps, log_every, max_nonfinite):
    self.trainer, self.checkpointer, self.writer = trainer, checkpointer, writer
    self.batches, self.num_steps, self.log_every = batches, num_steps, log_every
    self.max_nonfinite = max_nonfinite
    self.throughput = _Throughput(trainer.model, trainer.batch_size)

  def run(self, state: TrainState, data_batches: int) -> tuple[TrainState, dict[str, float]]:
    step, scalars, nonfinite_run = int(state.step), {}, 0
    self.throughput.reset(step)
    while step < self.num_steps:
      batch = self._next_batch(step)
      state, metrics = self.trainer.train_step(state, self.trainer.partitioner.shard_batch(batch))
      step, data_batches = step + 1, data_batches + 1
      if step % self.log_every == 0 or step == self.num_steps:
        scalars = self._log(step, metrics)
        nonfinite_run = nonfinite_run + 1 if scalars["nonfinite"] else 0
        if nonfinite_run * self.log_every >= self.max_nonfinite:
          raise NonFiniteLossError(
            f"Loss was not finite at step {step} and before; the last "
            f"good parameters are in {self.checkpointer.directory}."
          )
      if step == self.num_steps or self.checkpointer.should_save(step):
        self.checkpointer.save(step, state, {"data_batches": data_batches}, force=True)
      if self.checkpointer.preempted:
        logging.warning("Preempted: saved step %d, exiting.", step)
        break
    self.checkpointer.wait_until_finished()
    return state, scalars

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
      print(_console_line(step, self.num_steps, scalars), flush=True)
    return scalars
