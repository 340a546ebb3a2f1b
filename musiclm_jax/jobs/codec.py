"""The codec training job: SoundStream on audio crops, adversarially, resumable.

`train_codec()` is what `musiclm-jax train` runs for a codec run file (gin/runs/soundstream_*.gin).
It runs on the runner every training job shares (`training/runner.py`): a job killed at any
point and started again continues with exactly the batches it would have seen. At every log
point the chief also writes a few reconstructions (all levels and one level) to TensorBoard.

The trained codec is read back by `tokenizers.soundstream.codec.load_codec(model_dir)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from musiclm_jax import architecture
from musiclm_jax.checkpoints import CheckpointConfig
from musiclm_jax.data import audio_batches
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.models.soundstream import SoundStreamGAN
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.tokenizers.soundstream.config import (
  SoundStreamConfig,
)
from musiclm_jax.training import loop as train_loop
from musiclm_jax.training import runner
from musiclm_jax.training.gan_trainer import GENERATOR, GanTrainer, GanTrainState, make_gan_trainer
from musiclm_jax.training.optimizers import OptimizerConfig


def codec_metadata(model: SoundStreamGAN) -> dict[str, Any]:
  """What a checkpoint must match to be restored into `model` (and what rebuilds it)."""
  return {
    "model": model.name,
    "architecture": dataclasses.asdict(model.config),
    "loss": dataclasses.asdict(model.loss),
  }


def config_from_metadata(saved: Mapping[str, Any]) -> SoundStreamConfig:
  """The SoundStreamConfig saved in a checkpoint's metadata."""
  return architecture.from_json(SoundStreamConfig, saved)


def evaluate_codec(
  trainer: GanTrainer,
  state: GanTrainState,
  source: AudioSource,
  split: str,
  num_batches: int,
  seed: int,
) -> dict[str, float]:
  """Mean eval metrics (mel distances) over the first `num_batches` unshuffled batches."""
  crop = trainer.model.crop_samples
  batches = audio_batches.host_audio_batches(
    source, split, crop, trainer.batch_size, seed, 0, shuffle=False
  )
  totals, count = None, 0
  for _, batch in zip(range(num_batches), batches, strict=False):
    metrics = jax.device_get(trainer.eval_step(state, trainer.partitioner.shard_batch(batch)))
    totals = metrics if totals is None else {k: totals[k] + v for k, v in metrics.items()}
    count += 1
  if not count:
    raise ValueError(f"Split {split!r} of {source.name} produced no batch of {trainer.batch_size}.")
  return {k: float(v) / count for k, v in totals.items()}


class _AudioSummaries:
  """Writes a few fixed clips and their reconstructions (all levels, one level) to TensorBoard."""

  def __init__(self, model: SoundStreamGAN, clips: np.ndarray):
    self.model, self.clips = model, clips
    self._reconstruct = jax.jit(model.reconstruct, static_argnums=3)

  def __call__(self, step: int, state: GanTrainState, writer: Any) -> None:
    if jax.process_index() != 0 or not len(self.clips):
      return
    params, model_state = jax.device_get((state.params[GENERATOR], state.model_state))
    audios = {"audio/original": self.clips}
    for name, levels in (("audio/all_levels", None), ("audio/1_level", 1)):
      audios[name] = np.asarray(self._reconstruct(params, model_state, self.clips, levels))
    writer.write_audios(
      step,
      {k: np.clip(v, -1.0, 1.0)[..., None] for k, v in audios.items()},
      sample_rate=self.model.config.sample_rate,
    )


def _console_line(step: int, num_steps: int, scalars: Mapping[str, float]) -> str:
  return (
    f"step {step}/{num_steps}  mel {scalars['generator/mel_loss']:.3f}  "
    f"stft {scalars['generator/stft_loss']:.3f}  adv {scalars['generator/adversarial_loss']:.3f}  "
    f"disc {scalars['discriminator/hinge_loss']:.3f}  "
    f"ppl {scalars['generator/codebook_perplexity']:.1f}  "
    f"{scalars['audio_seconds_per_s']:.1f} audio-s/s  {scalars['step_time_s']:.3f} s/step"
  )


def _summary_clips(source, split, model, num_clips, seed) -> np.ndarray:
  if not num_clips:
    return np.zeros((0, model.crop_samples), np.float32)
  batch = next(
    audio_batches.host_audio_batches(
      source, split, model.crop_samples, num_clips, seed, 0, shuffle=False
    )
  )
  return batch["audio"]


def train_codec(
  *,
  model: SoundStreamGAN,
  source: AudioSource,
  model_dir: str,
  num_steps: int,
  batch_size: int,
  generator_optimizer: OptimizerConfig = OptimizerConfig(),
  discriminator_optimizer: OptimizerConfig = OptimizerConfig(),
  partitioner: Partitioner | None = None,
  checkpoint: CheckpointConfig = CheckpointConfig(),
  seed: int = 0,
  data_seed: int = 0,
  train_split: str = "train",
  eval_split: str | None = "eval",
  eval_batches: int = 2,
  log_every_steps: int = 10,
  num_audio_summaries: int = 2,
  max_nonfinite_steps: int = 20,
  eval_every_steps: int = 0,
  on_start: Callable[[], None] | None = None,
) -> dict[str, float]:
  """Trains the codec on `source` until `num_steps`, resuming from `model_dir` if possible.

  Args:
    model: the codec and its loss weights (`SoundStreamGAN`).
    source: a TFDS audio dataset at the codec's sample rate.
    model_dir: checkpoints (`model_dir/checkpoints`), TensorBoard events, final metrics.
    num_steps: total steps (a resumed job runs the remainder).
    batch_size: global batch of crops of `model.crop_samples`.
    generator_optimizer, discriminator_optimizer: the two players' optimizers.
    partitioner: mesh and rules (default: every device on 'data').
    checkpoint: cadence and retention.
    seed: init, quantizer and dropout seed; data_seed: crops and shuffling.
    train_split, eval_split: dataset splits (eval_split None: no evaluation).
    eval_batches: batches per evaluation.
    log_every_steps: scalars and audio summaries cadence.
    num_audio_summaries: eval clips written to TensorBoard with their reconstructions.
    max_nonfinite_steps: abort after this many consecutive skipped (non-finite) steps.
    eval_every_steps: evaluate every N steps during training (0: only at the end).
    on_start: called on the chief once the checkpoint (if any) is accepted (`runner.run`).
  Returns:
    The last logged metrics, plus eval/mel_distance_* when evaluated.
  Raises:
    runner.Preempted: SIGTERM stopped the run after saving (rerun to resume).
  """
  if source.sample_rate != model.config.sample_rate:
    raise ValueError(
      f"Dataset {source.name} holds {source.sample_rate} Hz audio; the codec expects "
      f"{model.config.sample_rate} Hz. Build the dataset at the codec's rate."
    )
  partitioner = partitioner or Partitioner()
  trainer = make_gan_trainer(
    model, partitioner, batch_size, generator_optimizer, discriminator_optimizer
  )
  summary_clips = _summary_clips(
    source, eval_split or train_split, model, num_audio_summaries, data_seed
  )
  job = runner.TrainJob(
    trainer=trainer,
    metadata=codec_metadata(model),
    batches=lambda skip: audio_batches.host_audio_batches(
      source, train_split, model.crop_samples, batch_size, data_seed, skip
    ),
    throughput=train_loop.Throughput(
      batch_size * model.crop_samples / model.config.sample_rate, "audio_seconds"
    ),
    console_line=_console_line,
    evaluate=None
    if eval_split is None
    else lambda state: evaluate_codec(trainer, state, source, eval_split, eval_batches, data_seed),
    log_hooks=(_AudioSummaries(model, summary_clips),),
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
