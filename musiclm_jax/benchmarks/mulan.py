"""MuLan embedding speed behind `musiclm-jax bench mulan`: audio windows and captions per second.

Random-init weights (the programs, hence the speed, do not depend on them). Compilation is
excluded (one warm-up call per shape); each figure is the median of `repeats` calls. Audio is
timed per window of the tower (paper: 10 s), the unit the clip embedding averages; a clip of
S seconds costs about (S - window) / hop + 1 windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from musiclm_jax.benchmarks import timing
from musiclm_jax.tokenizers.mulan.config import MuLanConfig
from musiclm_jax.tokenizers.mulan.model import MuLan


def _random_params(config: MuLanConfig, seed: int) -> Any:
  window = np.zeros((1, config.audio.window_samples), np.float32)
  ids = np.zeros((1, config.text.max_length), np.int32)
  init = jax.jit(lambda key: MuLan(config).init(key, window, ids, ids + 1))
  return nn.meta.unbox(init(jax.random.key(seed))["params"])


def bench_mulan(
  config: MuLanConfig, *, batch_sizes: Sequence[int], repeats: int = 3, seed: int = 0
) -> list[dict[str, Any]]:
  """Audio-window and caption embedding speed of a random-init MuLan.

  Returns:
    One dict per batch size: batch, audio_s / text_s (median wall seconds per call),
    audio_seconds_per_s (window audio embedded per wall second), captions_per_s.
  """
  params = _random_params(config, seed)
  module = MuLan(config)
  embed_audio = jax.jit(lambda p, a: module.apply({"params": p}, a, method=MuLan.embed_audio))
  embed_text = jax.jit(lambda p, i, m: module.apply({"params": p}, i, m, method=MuLan.embed_text))
  rng = np.random.default_rng(seed)
  window_seconds = config.audio.window_seconds
  rows = []
  for batch in batch_sizes:
    audio = rng.uniform(-0.5, 0.5, (batch, config.audio.window_samples)).astype(np.float32)
    ids = rng.integers(1, config.text.vocab_size, (batch, config.text.max_length), np.int32)
    mask = np.ones_like(ids)
    audio_s = timing.median_seconds(lambda a=audio: embed_audio(params, a), repeats)
    text_s = timing.median_seconds(lambda i=ids, m=mask: embed_text(params, i, m), repeats)
    rows.append(
      {
        "batch": batch,
        "window_seconds": window_seconds,
        "caption_tokens": config.text.max_length,
        "audio_s": audio_s,
        "text_s": text_s,
        "audio_seconds_per_s": batch * window_seconds / audio_s,
        "captions_per_s": batch / text_s,
      }
    )
  return rows
