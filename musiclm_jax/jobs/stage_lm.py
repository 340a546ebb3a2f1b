"""The training job: model + data + trainer + checkpoints, resumable (t5x's train.py role).

`train()` is what `musiclm-jax train` runs once gin has bound its arguments. It restores the
newest complete checkpoint in `model_dir` if there is one (state, RNG and data position), so a
job killed at any point and started again continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import seqio

from musiclm_jax.checkpoints import CheckpointConfig
from musiclm_jax.data import stage_tasks
from musiclm_jax.models import code_embeddings
from musiclm_jax.models.stage_lm import StageLM, train_flops_per_token
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.runtime import distributed
from musiclm_jax.stages import ACOUSTIC, MULAN, SEMANTIC, StageLayout
from musiclm_jax.training import loop as train_loop
from musiclm_jax.training import runner
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
    "codebook_softmax": model.codebook_softmax,
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
  per_host = distributed.per_host_batch_size(batch_size)
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


def unigram_accuracy(batches: Sequence[Mapping[str, np.ndarray]]) -> float:
  """Accuracy of always predicting, at each target position, its most frequent token here.

  The baseline an LM must beat to have learnt more than token frequencies: the majority is taken
  over the very batches it is scored on, per position (so per RVQ level and per place in the
  frame), which makes it an oracle unigram, not a fitted one.
  """
  targets = np.concatenate([b["decoder_target_tokens"] for b in batches])
  weights = np.concatenate([b["decoder_loss_weights"] for b in batches]).astype(bool)
  correct = 0
  for position in range(targets.shape[1]):
    ids = targets[weights[:, position], position]
    if len(ids):
      correct += np.unique(ids, return_counts=True)[1].max()
  return float(correct / max(weights.sum(), 1))


def repeat_accuracy(batches: Sequence[Mapping[str, np.ndarray]], layout: StageLayout) -> float:
  """Accuracy of predicting each target as the same level's token one frame earlier.

  The baseline of a stage whose tokens change slowly (acoustic codes at 50 Hz repeat from frame
  to frame far more often than chance): an LM that has learnt the music, not only the code
  frequencies, beats it. Scored over the target positions that have a previous frame.
  """
  targets = np.concatenate([b["decoder_target_tokens"] for b in batches])
  weights = np.concatenate([b["decoder_loss_weights"] for b in batches]).astype(bool)
  correct = total = 0
  start = layout.inputs_length
  for segment in layout.targets_segments:
    period = 1 if segment.family == SEMANTIC else segment.num_levels
    now = slice(start + period, start + segment.length)
    before = slice(start, start + segment.length - period)
    scored = weights[:, now] & weights[:, before]
    correct += int(np.sum((targets[:, now] == targets[:, before]) & scored))
    total += int(scored.sum())
    start += segment.length
  return float(correct / max(total, 1))


def swapped_conditioning(batch: Mapping[str, np.ndarray], layout: StageLayout) -> dict | None:
  """`batch` with each example's MuLan tokens taken from the next example (rolled by one).

  An LM that uses its conditioning scores worse on it; one that ignores it (or only uses it to
  recall training clips, on held-out data) scores the same. None: the stage has no MuLan prefix.
  """
  first = layout.inputs_segments[0]
  if first.family != MULAN:
    return None
  span = first.length  # the prefix's first segment; decoder inputs are shifted right by BOS
  swapped = {name: np.array(value) for name, value in batch.items()}
  targets, inputs = swapped["decoder_target_tokens"], swapped["decoder_input_tokens"]
  targets[:, :span] = np.roll(targets[:, :span], 1, axis=0)
  inputs[:, 1 : span + 1] = np.roll(inputs[:, 1 : span + 1], 1, axis=0)
  return swapped


def evaluate(
  trainer: Trainer, params: Any, task: str | seqio.Task, split: str, num_batches: int, seed: int
) -> dict[str, float]:
  """Per-token loss/accuracy over the first `num_batches` batches of `split` (no shuffling),
  beside `unigram_accuracy` and `repeat_accuracy` of the same batches (this host's share), and
  for stages conditioned on MuLan `swapped_conditioning_loss`: the loss with each example's MuLan
  tokens swapped for another's (equal to `loss`: the conditioning is not used)."""
  batches = _batches(task, trainer.model, split, trainer.batch_size, seed, 0, shuffle=False)
  batches = list(itertools.islice(batches, num_batches))
  described = f"Split {split!r} of {task}"
  metrics = trainer.evaluate(params, iter(batches), num_batches, described)
  layout = trainer.model.layout
  metrics |= {
    "unigram_accuracy": unigram_accuracy(batches),
    "repeat_accuracy": repeat_accuracy(batches, layout),
  }
  swapped = [swapped_conditioning(batch, layout) for batch in batches]
  if batches and swapped[0] is not None:
    swapped_metrics = trainer.evaluate(params, iter(swapped), len(swapped), described)
    metrics["swapped_conditioning_loss"] = swapped_metrics["loss"]
  return metrics


def _code_initialised(model: StageLM, codec_dir: str, seed: int) -> StageLM:
  if ACOUSTIC not in model.layout.families:  # the semantic stage: nothing to initialise
    return model
  from musiclm_jax.tokenizers.codec_api import load_codec

  codebooks = load_codec(codec_dir).codebooks()
  ids, rows = code_embeddings.acoustic_code_rows(
    model.layout, codebooks, model.config.d_model, seed
  )
  return model.with_initial_code_rows(ids, rows)


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
  on_start: Callable[[], None] | None = None,
  code_embeddings_codec_dir: str | None = None,
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
    on_start: called on the chief once the checkpoint (if any) is accepted, before anything is
      written into `model_dir` (see `runner.run`).
    code_embeddings_codec_dir: initialise the acoustic ids' embeddings and output rows from the
      codebooks of the codec in this model dir (`models.code_embeddings`); None: random.
  Returns:
    The last logged metrics (train, and eval/... if evaluated).
  Raises:
    runner.Preempted: SIGTERM stopped the run after saving (rerun to resume).
  """
  partitioner = partitioner or Partitioner()
  if code_embeddings_codec_dir is not None:
    model = _code_initialised(model, code_embeddings_codec_dir, seed)
  trainer = Trainer(
    model,
    make_optimizer(optimizer),
    partitioner,
    batch_size=batch_size,
    num_microbatches=num_microbatches,
    learning_rate_fn=make_schedule(optimizer),
  )
  job = runner.TrainJob(
    trainer=trainer,
    metadata=model_metadata(model),
    batches=lambda skip: _batches(task, model, train_split, batch_size, data_seed, skip, shuffle),
    throughput=_throughput(model, batch_size),
    console_line=_console_line,
    evaluate=None
    if eval_split is None
    else lambda state: evaluate(trainer, state.params, task, eval_split, eval_batches, data_seed),
    hparams={
      "num_params": model.num_params(),
      "batch_size": batch_size,
      "num_devices": jax.device_count(),
    },
  )
  settings = runner.RunSettings(
    model_dir=model_dir,
    num_steps=num_steps,
    checkpoint=checkpoint,
    seed=seed,
    log_every_steps=log_every_steps,
    eval_every_steps=eval_every_steps,
    max_nonfinite_steps=max_nonfinite_steps,
  )
  return runner.run(job, settings, on_start)
