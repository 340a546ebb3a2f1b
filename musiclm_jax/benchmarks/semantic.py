"""Semantic-token extraction speed behind `musiclm-jax bench semantic`.

Runs `SemanticTokenizer.semantic_tokens` (input checks included, as a caller pays them) on a
randomly initialised w2v-BERT and random centroids: the programs, hence the speed, do not depend
on the weights' values. Compilation is excluded (one warm-up call per shape); each figure is the
median of `repeats` calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from musiclm_jax.benchmarks import timing
from musiclm_jax.tokenizers import kmeans
from musiclm_jax.tokenizers.w2v_bert.config import W2VBertConfig
from musiclm_jax.tokenizers.w2v_bert.model import W2VBert
from musiclm_jax.tokenizers.w2v_bert.semantic import SemanticTokenizer


def random_tokenizer(config: W2VBertConfig, num_clusters: int, seed: int = 0) -> SemanticTokenizer:
  """A semantic tokenizer with random weights and centroids (benchmarks, shape tests)."""
  samples = config.samples_per_frame * 4
  audio = np.zeros((1, samples), np.float32)
  masked = np.zeros((1, config.num_frames(samples)), bool)
  init = jax.jit(lambda key: W2VBert(config).init(key, audio, audio, masked, deterministic=True))
  params = nn.meta.unbox(init(jax.random.key(seed))["params"])
  rng = np.random.default_rng(seed)
  fitted = kmeans.KMeansModel(
    centroids=rng.standard_normal((num_clusters, config.d_model)).astype(np.float32),
    mean=np.zeros(config.d_model, np.float32),
    std=np.ones(config.d_model, np.float32),
    normalization="standardize",
  )
  return SemanticTokenizer(config, params, fitted, config.kmeans_layer)


def bench_semantic(
  config: W2VBertConfig,
  *,
  seconds: float,
  batch_sizes: Sequence[int],
  num_clusters: int = 1024,
  repeats: int = 3,
  seed: int = 0,
) -> list[dict[str, Any]]:
  """Semantic-token extraction speed of a random-init w2v-BERT on `seconds` of audio each.

  Returns:
    One dict per batch size: batch, seconds, frames, params, tokenize_s (median wall seconds per
    call), audio_seconds_per_s (audio seconds tokenized per wall second, whole batch).
  """
  tokenizer = random_tokenizer(config, num_clusters, seed)
  samples = int(round(seconds * config.sample_rate))
  rng = np.random.default_rng(seed)
  rows = []
  for batch in batch_sizes:
    audio = rng.uniform(-0.5, 0.5, (batch, samples)).astype(np.float32)
    elapsed = timing.median_seconds(lambda a=audio: tokenizer.semantic_tokens(a), repeats)
    rows.append(
      {
        "batch": batch,
        "seconds": seconds,
        "frames": tokenizer.num_frames(samples),
        "params": config.num_params(),
        "tokenize_s": elapsed,
        "audio_seconds_per_s": batch * seconds / elapsed,
      }
    )
  return rows
