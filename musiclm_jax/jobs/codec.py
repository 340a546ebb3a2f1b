"""The codec training job: SoundStream on audio crops, adversarially, resumable; and its loader.

`train_codec()` is what `musiclm-jax train` runs for a codec run file (gin/runs/soundstream_*.gin).
It shares the step/log/checkpoint loop with the stage LMs (`train_loop.py`): a job killed at any
point and started again continues with exactly the batches it would have seen. At every log
point the chief also writes a few reconstructions (all levels and one level) to TensorBoard.

`load_codec(model_dir)` rebuilds the trained codec from its checkpoint alone (the architecture
is in the checkpoint's metadata) for tokenization and decoding.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers

from musiclm_jax import architecture
from musiclm_jax.checkpoints import CheckpointConfig, Checkpointer, CheckpointMismatchError
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.models.soundstream import CodecLossConfig, SoundStreamGAN
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.tokenizers.soundstream.codec import SoundStreamCodec
from musiclm_jax.tokenizers.soundstream.config import (
  SoundStreamConfig,
)
from musiclm_jax.tokenizers.soundstream.model import SoundStream
from musiclm_jax.training import loop as train_loop
from musiclm_jax.training.gan_trainer import DISCRIMINATOR, GENERATOR, GanTrainer, GanTrainState
from musiclm_jax.training.optimizers import OptimizerConfig, make_optimizer, make_schedule

CHECKPOINT_SUBDIR = "checkpoints"


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


def make_trainer(
  model: SoundStreamGAN,
  partitioner: Partitioner,
  batch_size: int,
  generator_optimizer: OptimizerConfig,
  discriminator_optimizer: OptimizerConfig,
) -> GanTrainer:
  """The codec's GAN trainer: one optax optimizer (and schedule) per player."""
  configs = {GENERATOR: generator_optimizer, DISCRIMINATOR: discriminator_optimizer}
  return GanTrainer(
    model,
    {name: make_optimizer(c) for name, c in configs.items()},
    partitioner,
    batch_size=batch_size,
    learning_rate_fns={name: make_schedule(c) for name, c in configs.items()},
  )


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
  batches = train_loop.host_audio_batches(
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

  def __init__(self, model: SoundStreamGAN, writer: Any, clips: np.ndarray):
    self.model, self.writer, self.clips = model, writer, clips
    self._reconstruct = jax.jit(model.reconstruct, static_argnums=3)

  def __call__(self, step: int, state: GanTrainState) -> None:
    if jax.process_index() != 0 or not len(self.clips):
      return
    params, model_state = jax.device_get((state.params[GENERATOR], state.model_state))
    audios = {"audio/original": self.clips}
    for name, levels in (("audio/all_levels", None), ("audio/1_level", 1)):
      audios[name] = np.asarray(self._reconstruct(params, model_state, self.clips, levels))
    self.writer.write_audios(
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
    train_loop.host_audio_batches(
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
    eval_batches: batches of the final evaluation.
    log_every_steps: scalars and audio summaries cadence.
    num_audio_summaries: eval clips written to TensorBoard with their reconstructions.
    max_nonfinite_steps: abort after this many consecutive skipped (non-finite) steps.
  Returns:
    The last logged metrics, plus eval/mel_distance_* when evaluated.
  """
  if source.sample_rate != model.config.sample_rate:
    raise ValueError(
      f"Dataset {source.name} holds {source.sample_rate} Hz audio; the codec expects "
      f"{model.config.sample_rate} Hz. Build the dataset at the codec's rate."
    )
  partitioner = partitioner or Partitioner()
  trainer = make_trainer(
    model, partitioner, batch_size, generator_optimizer, discriminator_optimizer
  )
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(model_dir, just_logging=not is_chief)
  checkpoint_dir = os.path.join(model_dir, CHECKPOINT_SUBDIR)
  with Checkpointer(checkpoint_dir, checkpoint, metadata=codec_metadata(model)) as checkpointer:
    state, data_batches = train_loop.restore_or_init(trainer, checkpointer, seed)
    start = int(state.step)
    summary_split = eval_split or train_split
    clips = _summary_clips(source, summary_split, model, num_audio_summaries, data_seed)
    loop = train_loop.TrainLoop(
      trainer,
      checkpointer,
      writer,
      train_loop.host_audio_batches(
        source, train_split, model.crop_samples, batch_size, data_seed, data_batches
      ),
      num_steps=num_steps,
      log_every=log_every_steps,
      max_nonfinite=max_nonfinite_steps,
      throughput=train_loop.Throughput(
        batch_size * model.crop_samples / model.config.sample_rate, "audio_seconds"
      ),
      console_line=_console_line,
      on_log=_AudioSummaries(model, writer, clips),
    )
    state, scalars = loop.run(state, data_batches)
    if eval_split and num_steps > start:
      metrics = evaluate_codec(trainer, state, source, eval_split, eval_batches, data_seed)
      scalars.update({f"eval/{k}": v for k, v in metrics.items()})
      writer.write_scalars(int(state.step), {k: v for k, v in scalars.items() if "/" in k})
  writer.flush()
  if is_chief:
    scalars = train_loop.write_final_metrics(model_dir, int(state.step), scalars)
  return scalars


def load_codec(
  model_dir: str, step: int | None = None, partitioner: Partitioner | None = None
) -> SoundStreamCodec:
  """The trained codec in `model_dir` (architecture from the checkpoint), ready to encode/decode.

  Raises:
    FileNotFoundError: no complete checkpoint in `model_dir/checkpoints`.
    CheckpointMismatchError: the checkpoint is not a SoundStream codec.
  """
  partitioner = partitioner or Partitioner()
  directory = os.path.join(model_dir, CHECKPOINT_SUBDIR)
  with Checkpointer(directory, CheckpointConfig(save_on_sigterm=False)) as reader:
    metadata = reader.saved_metadata(step)
  if metadata.get("model") != SoundStreamGAN.name:
    raise CheckpointMismatchError(
      f"{directory} holds a {metadata.get('model')!r} checkpoint, not a SoundStream codec."
    )
  config = config_from_metadata(metadata["architecture"])
  loss = CodecLossConfig(**metadata.get("loss", {}))
  model = SoundStreamGAN(config, loss)
  trainer = make_trainer(
    model, partitioner, partitioner.data_parallel_size, *[OptimizerConfig()] * 2
  )
  with Checkpointer(
    directory, CheckpointConfig(save_on_sigterm=False), metadata=codec_metadata(model)
  ) as checkpointer:
    state, _ = checkpointer.restore(trainer.abstract_state, step)
  variables = {"params": state.params[GENERATOR], **state.model_state}
  return SoundStreamCodec(config, jax.device_get(variables))


def reconstruction_distances(
  codec: SoundStreamCodec, audio: np.ndarray, levels: tuple[int, ...]
) -> dict[int, float]:
  """Mean mel distance of encode → decode with each number of levels (for reports and tests)."""
  from musiclm_jax.tokenizers.soundstream.losses import mel_distance

  codes = codec.encode(audio)
  out = {}
  for n in levels:
    decoded = codec.decode(codes[..., :n])[:, : audio.shape[-1]]
    out[n] = float(jnp.mean(mel_distance(decoded, jnp.asarray(audio), codec.sample_rate)))
  return out


def latent_errors(
  codec: SoundStreamCodec, audio: np.ndarray, levels: tuple[int, ...]
) -> dict[int, float]:
  """RMS of encoder output minus its quantization with each number of levels.

  Tells a quantizer that stopped refining (this grows flat in the levels) from a decoder that
  does not use what deeper levels add (this falls, `reconstruction_distances` does not).
  """
  model = SoundStream(codec.config)
  latent = model.apply(codec.variables, jnp.asarray(audio), method=SoundStream.embed)
  codes = codec.encode(audio)
  out = {}
  for n in levels:
    quantized = model.apply(
      codec.variables, codes[..., :n], method=lambda m, c: m.quantizer.decode(c)
    )
    out[n] = float(jnp.sqrt(jnp.mean(jnp.square(latent - quantized))))
  return out
