"""Codec speed behind `musiclm-jax bench codec`: encode / decode of any codec configuration
(SoundStream or spectral, by its gin size file) against real time; and behind `bench codec-train`:
the SoundStream training step before and after the adversarial phase.

Both directions run through the codec API (input checks included, as a caller pays them) on
randomly initialised weights: the programs, hence the speed, do not depend on the weights' values.
Compilation is excluded (one warm-up call per shape); each figure is the median of `repeats`
calls, blocked until the result is ready.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.benchmarks import timing
from musiclm_jax.models.soundstream import CodecLossConfig, SoundStreamGAN
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.tokenizers import codec_api
from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig
from musiclm_jax.training.gan_trainer import make_gan_trainer
from musiclm_jax.training.optimizers import OptimizerConfig


def bench_codec(
  config: codec_api.CodecConfig,
  *,
  seconds: float,
  batch_sizes: Sequence[int],
  repeats: int = 3,
  seed: int = 0,
) -> list[dict[str, Any]]:
  """Encode and decode speed of a random-init codec on `seconds` of audio per example.

  Args:
    config: codec architecture.
    seconds: audio length of each example.
    batch_sizes: one row per batch size.
    repeats: timed calls per figure (median).
    seed: of the weights and the (uniform noise) audio.
  Returns:
    One dict per batch size: batch, seconds, encode_s / decode_s (median wall seconds per call),
    encode_x_realtime / decode_x_realtime (audio seconds processed per wall second, all
    examples counted), encode_rtf / decode_rtf (real-time factor: wall / audio seconds),
    params (encoder + decoder weights, codebooks not counted).
  Raises:
    ValueError: if seconds is shorter than one frame, a batch size is < 1 or repeats < 1.
  """
  samples = round(seconds * config.sample_rate)
  if samples < config.hop_length or min(batch_sizes, default=0) < 1 or repeats < 1:
    raise ValueError(
      f"bench_codec needs seconds >= one frame ({config.hop_length / config.sample_rate:g} s), "
      f"batch sizes >= 1 and repeats >= 1; got seconds={seconds}, batch_sizes={batch_sizes}, "
      f"repeats={repeats}."
    )
  codec = codec_api.random_codec(config, seed)
  rows = []
  for batch in batch_sizes:
    key = jax.random.key(seed + batch)
    audio = jax.random.uniform(key, (batch, samples), jnp.float32, -0.5, 0.5)
    codes = codec.encode(audio)
    encode_s = timing.median_seconds(lambda audio=audio: codec.encode(audio), repeats)
    decode_s = timing.median_seconds(lambda codes=codes: codec.decode(codes), repeats)
    audio_s = batch * samples / config.sample_rate
    rows.append(
      {
        "batch": batch,
        "seconds": samples / config.sample_rate,
        "encode_s": encode_s,
        "decode_s": decode_s,
        "encode_x_realtime": audio_s / encode_s,
        "decode_x_realtime": audio_s / decode_s,
        "encode_rtf": encode_s / audio_s,
        "decode_rtf": decode_s / audio_s,
        "params": codec.num_params,
      }
    )
  return rows


def bench_codec_train(
  config: SoundStreamConfig,
  partitioner: Partitioner,
  *,
  batch_size: int,
  seconds: float,
  repeats: int = 5,
  seed: int = 0,
) -> list[dict[str, Any]]:
  """Training step time of a codec before and after its adversarial phase, in one process.

  Before `adversarial_start_step` the step trains on the reconstruction losses only and skips
  the discriminators (a `lax.cond` in one compiled step); after it, both players run.

  Args:
    config: codec architecture.
    partitioner: devices of the step.
    batch_size: crops per step (global).
    seconds: crop length (a whole number of frames).
    repeats: timed steps per phase (median), after one warm-up step each.
    seed: of the weights and the (uniform noise) audio.
  Returns:
    Two dicts, phase 'reconstruction' then 'adversarial': s_per_step, audio_s_per_s (training
    audio per wall second), batch, seconds.
  Raises:
    ValueError: if the crop is not a whole number of frames, batch_size < 1 or repeats < 1.
  """
  crop = round(seconds * config.sample_rate)
  if crop < config.hop_length or crop % config.hop_length or batch_size < 1 or repeats < 1:
    raise ValueError(
      f"bench_codec_train needs a crop of whole frames ({config.hop_length} samples each), "
      f"batch_size >= 1 and repeats >= 1; got seconds={seconds} ({crop} samples), "
      f"batch_size={batch_size}, repeats={repeats}."
    )
  start = repeats + 1  # steps 0 .. start - 1 reconstruct only; one of each phase warms up
  model = SoundStreamGAN(config, CodecLossConfig(adversarial_start_step=start), crop)
  optimizer = OptimizerConfig(schedule="constant", warmup_steps=0)
  trainer = make_gan_trainer(model, partitioner, batch_size, optimizer, optimizer)
  state = trainer.init_state(seed)
  audio = jax.random.uniform(jax.random.key(seed), (batch_size, crop), jnp.float32, -0.5, 0.5)
  batch = {"audio": np.asarray(audio)}
  times = []
  for _ in range(2 * start):
    began = time.perf_counter()
    state, metrics = trainer.train_step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - began)
  rows = []
  for phase, timed in (("reconstruction", times[1:start]), ("adversarial", times[start + 1 :])):
    step_s = float(np.median(timed))
    rows.append(
      {
        "phase": phase,
        "batch": batch_size,
        "seconds": seconds,
        "s_per_step": step_s,
        "audio_s_per_s": batch_size * seconds / step_s,
      }
    )
  return rows
