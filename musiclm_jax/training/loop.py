"""The resumable step/log/checkpoint loop shared by every training job.

A job (stage LMs in `train_job.py`, the codec in `codec_train_job.py`) supplies a trainer with
`train_step(state, batch)`, `partitioner`, `init_state(seed)` and `abstract_state`, a batch
iterator, and how to describe throughput on the console. The loop owns the rest: restoring the
newest checkpoint, NaN-run aborts, checkpoint cadence, preemption, final metrics.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import jax
import numpy as np
from absl import logging

from musiclm_jax.checkpoints import CheckpointConfig, Checkpointer, CheckpointMismatchError
from musiclm_jax.data.audio_batches import AudioSource, audio_crop_dataset
from musiclm_jax.runtime import distributed, hardware

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


def per_host_batch_size(batch_size: int) -> int:
  """This host's share of a global batch (every host feeds the same number of examples)."""
  per_host, remainder = divmod(batch_size, jax.process_count())
  if remainder:
    raise ValueError(f"batch_size {batch_size} is not divisible by {jax.process_count()} hosts.")
  return per_host


def host_audio_batches(
  source: AudioSource,
  split: str,
  crop_samples: int,
  batch_size: int,
  seed: int,
  skip_batches: int,
  *,
  shuffle: bool = True,
  features: tuple[str, ...] = ("audio",),
  num_epochs: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """This host's share of each global batch of audio crops, as numpy {feature: [b, samples]}.

  The audio-model jobs (codec, w2v-BERT, k-means, MuLan) all read their data through this;
  asking for the "caption" feature adds the clips' captions (bytes). `num_epochs` None repeats
  the split forever.
  """
  dataset = audio_crop_dataset(
    source,
    split=split,
    crop_samples=crop_samples,
    batch_size=per_host_batch_size(batch_size),
    seed=seed,
    shuffle=shuffle,
    shard_id=jax.process_index(),
    num_shards=jax.process_count(),
    skip_batches=skip_batches,
    with_captions="caption" in features,
    num_epochs=num_epochs,
  )
  for batch in dataset.as_numpy_iterator():
    yield {name: batch[name] for name in features}


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
  logging.info("Resumed from %s step %d.", checkpointer.directory, int(state.step))
  return state, int(extra.get("data_batches", int(state.step)))


def load_trained_params(
  checkpoint_dir: str, model_name: str, what: str, step: int | None = None
) -> tuple[dict[str, Any], PyTree, int]:
  """(saved metadata, params on the host, step) of a trained `model_name` in `checkpoint_dir`.

  The loaders of the trained audio models share this: the architecture comes from the metadata,
  the weights are read whatever optimizer state was saved with them.

  Raises:
    FileNotFoundError: no complete checkpoint (or not `step`).
    CheckpointMismatchError: the checkpoint holds another model (named `what` in the message).
  """
  with Checkpointer(checkpoint_dir, CheckpointConfig(save_on_sigterm=False)) as reader:
    metadata = reader.saved_metadata(step)
    step = reader.latest_step() if step is None else step
    if metadata.get("model") != model_name:
      raise CheckpointMismatchError(
        f"{checkpoint_dir} holds a {metadata.get('model')!r} checkpoint, not {what}."
      )
    params = reader.restore_params(step)
  return metadata, jax.device_get(params), step


def write_final_metrics(model_dir: str, step: int, scalars: dict[str, float]) -> dict[str, float]:
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


class TrainLoop:
  """Steps, logs and checkpoints until `num_steps` or a preemption.

  Args:
    console_line: formats one log line from (step, num_steps, scalars).
    on_log: called as on_log(step, state) at each log point (e.g. audio summaries).
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
    on_log: Callable[[int, PyTree], None] | None = None,
  ):
    self.trainer, self.checkpointer, self.writer = trainer, checkpointer, writer
    self.batches, self.num_steps, self.log_every = batches, num_steps, log_every
    self.max_nonfinite, self.throughput = max_nonfinite, throughput
    self.console_line, self.on_log = console_line, on_log

  def run(self, state: PyTree, data_batches: int) -> tuple[PyTree, dict[str, float]]:
    step, scalars, nonfinite_run = int(state.step), {}, 0
    self.throughput.reset(step)
    while step < self.num_steps:
      batch = self._next_batch(step)
      state, metrics = self.trainer.train_step(state, self.trainer.partitioner.shard_batch(batch))
      step, data_batches = step + 1, data_batches + 1
      if step % self.log_every == 0 or step == self.num_steps:
        scalars = self._log(step, metrics)
        if self.on_log is not None:
          self.on_log(step, state)
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
      print(self.console_line(step, self.num_steps, scalars), flush=True)
    return scalars
