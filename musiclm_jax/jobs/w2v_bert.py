"""The w2v-BERT training job: self-supervised pre-training on audio crops, resumable.

`train_w2v_bert()` is what `musiclm-jax train` runs for a w2v-BERT run file
(gin/runs/w2v_bert_rendered.gin). It drives the core trainer (sharded, microbatched, NaN-guarded)
through the runner every training job shares (`training/runner.py`): a job killed at any point and
started again continues with exactly the batches it would have seen.

The trained model is read back by `tokenizers.w2v_bert.load.load_w2v_bert(model_dir)` (for the
k-means fit and semantic tokenization).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from musiclm_jax import architecture
from musiclm_jax.checkpoints import CheckpointConfig
from musiclm_jax.data import audio_batches
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.models.w2v_bert import W2VBertModel
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.training import loop as train_loop
from musiclm_jax.training import runner
from musiclm_jax.training.optimizers import OptimizerConfig, make_optimizer, make_schedule
from musiclm_jax.training.trainer import Trainer

_FEATURES = ("audio", "audio_mask")


def w2v_bert_metadata(model: W2VBertModel) -> dict[str, Any]:
  """What a checkpoint must match to be restored into `model` (and what rebuilds it)."""
  return {"model": model.name, "architecture": architecture.to_json(model.config)}


def _make_trainer(
  model: W2VBertModel,
  partitioner: Partitioner,
  batch_size: int,
  optimizer: OptimizerConfig,
  num_microbatches: int = 1,
) -> Trainer:
  return Trainer(
    model,
    make_optimizer(optimizer),
    partitioner,
    batch_size=batch_size,
    num_microbatches=num_microbatches,
    learning_rate_fn=make_schedule(optimizer),
  )


def evaluate_w2v_bert(
  trainer: Trainer, params: Any, source: AudioSource, split: str, num_batches: int, seed: int
) -> dict[str, float]:
  """Masked-prediction and contrastive metrics over the first `num_batches` unshuffled batches.

  Evaluation masks with a fixed key (the wrapper's deterministic mode), so it is repeatable.
  """
  crop = trainer.model.crop_samples
  batches = audio_batches.host_audio_batches(
    source, split, crop, trainer.batch_size, seed, 0, shuffle=False, features=_FEATURES
  )
  return trainer.evaluate(params, batches, num_batches, f"Split {split!r} of {source.name}")


def _console_line(step: int, num_steps: int, scalars: Mapping[str, float]) -> str:
  return (
    f"step {step}/{num_steps}  loss {scalars['loss']:.4f}  "
    f"mlm {scalars['mlm_loss']:.3f} (acc {scalars['mlm_accuracy']:.3f})  "
    f"contrastive {scalars['contrastive_loss']:.3f}  ppl {scalars['codebook_perplexity']:.1f}  "
    f"{scalars['audio_seconds_per_s']:.1f} audio-s/s  {scalars['step_time_s']:.3f} s/step"
  )


def train_w2v_bert(
  *,
  model: W2VBertModel,
  source: AudioSource,
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
  eval_split: str | None = "eval",
  eval_batches: int = 2,
  log_every_steps: int = 10,
  max_nonfinite_steps: int = 20,
  eval_every_steps: int = 0,
  on_start: Callable[[], None] | None = None,
) -> dict[str, float]:
  """Pre-trains w2v-BERT on `source` until `num_steps`, resuming from `model_dir` if possible.

  Args:
    model: the w2v-BERT wrapper (architecture, crop length).
    source: a TFDS audio dataset at the model's sample rate.
    model_dir: checkpoints (`model_dir/checkpoints`), TensorBoard events, final metrics.
    num_steps: total optimizer steps (a resumed job runs the remainder).
    batch_size: global batch of crops of `model.crop_samples`.
    optimizer: optimizer and schedule.
    partitioner: mesh and rules (default: every device on 'data').
    checkpoint: cadence and retention.
    num_microbatches: gradient accumulation.
    seed: init, masking and dropout seed; data_seed: crops and shuffling.
    train_split, eval_split: dataset splits (eval_split None: no evaluation).
    eval_batches: batches per evaluation.
    log_every_steps: metrics cadence (TensorBoard + console).
    max_nonfinite_steps: abort after this many consecutive skipped (non-finite) steps.
    eval_every_steps: evaluate every N steps during training (0: only at the end).
    on_start: called on the chief once the checkpoint (if any) is accepted (`runner.run`).
  Returns:
    The last logged metrics, plus eval/... when evaluated.
  Raises:
    runner.Preempted: SIGTERM stopped the run after saving (rerun to resume).
  """
  if source.sample_rate != model.config.sample_rate:
    raise ValueError(
      f"Dataset {source.name} holds {source.sample_rate} Hz audio; w2v-BERT expects "
      f"{model.config.sample_rate} Hz. Build the dataset at the model's rate."
    )
  partitioner = partitioner or Partitioner()
  trainer = _make_trainer(model, partitioner, batch_size, optimizer, num_microbatches)
  job = runner.TrainJob(
    trainer=trainer,
    metadata=w2v_bert_metadata(model),
    batches=lambda skip: audio_batches.host_audio_batches(
      source, train_split, model.crop_samples, batch_size, data_seed, skip, features=_FEATURES
    ),
    throughput=train_loop.Throughput(
      batch_size * model.crop_samples / model.config.sample_rate, "audio_seconds"
    ),
    console_line=_console_line,
    evaluate=None
    if eval_split is None
    else lambda state: evaluate_w2v_bert(
      trainer, state.params, source, eval_split, eval_batches, 0
    ),
    hparams={"num_params": model.num_params(), "batch_size": batch_size},
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
