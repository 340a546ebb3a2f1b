"""Codec speed behind `musiclm-jax bench codec`: SoundStream encode / decode against real time.

Both directions run through `SoundStreamCodec` (input checks included, as a caller pays them) on
randomly initialised weights: the programs, hence the speed, do not depend on the weights' values.
Compilation is excluded (one warm-up call per shape); each figure is the median of `repeats`
calls, blocked until the result is ready.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from musiclm_jax import timing
from musiclm_jax.tokenizers.soundstream.codec import SoundStreamCodec
from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig


def bench_codec(
  config: SoundStreamConfig,
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
  codec = SoundStreamCodec.random_init(config, seed)
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
