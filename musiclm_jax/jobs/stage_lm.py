"""The training job: model + data + trainer + checkpoints, resumable (t5x's train.py role).

`train()` is what `musiclm-jax train` runs once gin has bound its arguments. It restores the
newest complete checkpoint in `model_dir` if there is one (state, RNG and data position), so a
job killed at any point and started again continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
import seqio
from clu import metric_writers

from musiclm_jax.checkpoints import CheckpointConfig, Checkpointer, CheckpointMismatchError
from musiclm_jax.data import stage_tasks
from musiclm_jax.models.stage_lm import StageLM, train_flops_per_token
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.training import loop as train_loop
from musiclm_jax.training.optimizers import OptimizerConfig, make_optimizer, make_schedule
from musiclm_jax.training.trainer import Trainer

PyTree = Any


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
  per_host = train_loop.per_host_batch_size(batch_size)
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


def _throughput(model: StageLM, batch_size: int) -> train_loop.Throughput:
  tokens_per_step = batch_size * model.sequence_length
  flops_per_token = train_flops_per_token(model.config, model.vocab_size, model.sequence_length)
  return train_loop.Throughput(tokens_per_step, "tokens", tokens_per_step * flops_per_token)


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
  batches = _batches(task, trainer.model, split, trainer.batch_size, seed, 0, shuffle=False)
  return trainer.evaluate(params, batches, num_batches, f"Split {split!r} of {task}")


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
  shuffle: bool = True,
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
    shuffle: shuffle the training examples. Each host shuffles its own shard (seqio's
      convention), so only an unshuffled, uncropped stream gives every process count the same
      global batches (what the multi-host equivalence test uses).
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
    state, data_batches = train_loop.restore_or_init(trainer, checkpointer, seed)
    start = int(state.step)
    if is_chief and start == 0:
      writer.write_hparams(
        {
          "num_params": model.num_params(),
          "batch_size": batch_size,
          "num_devices": jax.device_count(),
        }
      )
    batches = _batches(task, model, train_split, batch_size, data_seed, data_batches, shuffle)
    loop = train_loop.TrainLoop(
      trainer,
      checkpointer,
      writer,
      batches,
      num_steps=num_steps,
      log_every=log_every_steps,
      max_nonfinite=max_nonfinite_steps,
      throughput=_throughput(model, batch_size),
      console_line=_console_line,
    )
    state, scalars = loop.run(state, data_batches)
    if eval_split and (eval_every_steps or num_steps > start):
      scalars.update(_eval_scalars(trainer, state, task, eval_split, eval_batches, data_seed))
      writer.write_scalars(int(state.step), {k: v for k, v in scalars.items() if "/" in k})
  writer.flush()
  if is_chief:
    scalars = train_loop.write_final_metrics(model_dir, int(state.step), scalars)
  return scalars


def _eval_scalars(trainer, state, task, split, num_batches, seed) -> dict[str, float]:
  metrics = evaluate(trainer, state.params, task, split, num_batches, seed)
  return {f"eval/{k}": v for k, v in metrics.items()}


def load_stage_lm(model_dir: str, step: int | None = None) -> tuple[StageLM, PyTree, int]:
  """(model, params on the host, step) of a trained stage LM, rebuilt from its checkpoint alone.

  The architecture and layout come from the checkpoint's metadata (`model_metadata`); the
  sampling settings are the caller's (the decoding pipeline sets each stage's).

  Raises:
    FileNotFoundError: no complete checkpoint in `model_dir/checkpoints`.
  """
  from musiclm_jax import architecture
  from musiclm_jax.layers.config import TransformerConfig
  from musiclm_jax.stages import StageLayout, TokenSpec

  directory = os.path.join(model_dir, "checkpoints")
  with Checkpointer(directory, CheckpointConfig(save_on_sigterm=False)) as reader:
    saved = reader.saved_metadata(step)
  layout = saved.get("layout")
  if layout is None or saved.get("model") not in ("semantic", "coarse", "fine"):
    raise CheckpointMismatchError(f"{directory} holds no stage LM ({saved.get('model')!r}).")
  model = StageLM(
    architecture.from_json(TransformerConfig, saved["architecture"]),
    StageLayout(layout["stage"], TokenSpec(**layout["tokens"]), layout["crop_seconds"]),
  )
  _, params, step = train_loop.load_trained_params(directory, model.name, "a stage LM", step)
  return model, params, step
