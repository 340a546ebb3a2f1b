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
from musiclm_jax.tokenizers.hubert.config import HubertEncoderConfig
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
  fitted = _random_kmeans(num_clusters, config.d_model, seed)
  return SemanticTokenizer(config, params, fitted, config.kmeans_layer)


def random_hubert_tokenizer(
  config: HubertEncoderConfig, num_clusters: int, sample_rate: int = 24_000, seed: int = 0
):
  """An imported-HuBERT / MERT semantic tokenizer (25 Hz tokens of `sample_rate` audio) with
  random weights and centroids."""
  from musiclm_jax.tokenizers.hubert import hf_import
  from musiclm_jax.tokenizers.hubert import semantic as hubert_semantic

  frames = hubert_semantic.semantic_frames(config, sample_rate, 25)
  params = hf_import.random_params(config, seed)
  fitted = _random_kmeans(num_clusters, config.hidden_size, seed)
  return hubert_semantic.HubertSemanticTokenizer(
    config, params, fitted, config.num_layers // 2, frames
  )


def _random_kmeans(num_clusters: int, dim: int, seed: int) -> kmeans.KMeansModel:
  rng = np.random.default_rng(seed)
  return kmeans.KMeansModel(
    centroids=rng.standard_normal((num_clusters, dim)).astype(np.float32),
    mean=np.zeros(dim, np.float32),
    std=np.ones(dim, np.float32),
    normalization="standardize",
  )


def bench_semantic(
  config: W2VBertConfig | HubertEncoderConfig,
  *,
  seconds: float,
  batch_sizes: Sequence[int],
  num_clusters: int = 1024,
  repeats: int = 3,
  seed: int = 0,
) -> list[dict[str, Any]]:
  """Semantic-token extraction speed of a random-init w2v-BERT (or imported-HuBERT / MERT
  architecture, on 24 kHz audio) on `seconds` of audio each.

  Returns:
    One dict per batch size: batch, seconds, frames, params, tokenize_s (median wall seconds per
    call), audio_seconds_per_s (audio seconds tokenized per wall second, whole batch).
  """
  if isinstance(config, HubertEncoderConfig):
    tokenizer = random_hubert_tokenizer(config, num_clusters, seed=seed)
    num_params = sum(x.size for x in jax.tree.leaves(tokenizer._arguments[0]))
  else:
    tokenizer = random_tokenizer(config, num_clusters, seed)
    num_params = config.num_params()
  samples = int(round(seconds * tokenizer.config.sample_rate))
  rng = np.random.default_rng(seed)
  rows = []
  for batch in batch_sizes:
    audio = rng.uniform(-0.5, 0.5, (batch, samples)).astype(np.float32)
    elapsed = timing.median_seconds(lambda a=audio: tokenizer.semantic_tokens(a), repeats)
    rows.append(
      {
        "batch": batch,
        "seconds": seconds,
        "frames": samples // tokenizer.config.samples_per_frame,
        "params": num_params,
        "tokenize_s": elapsed,
        "audio_seconds_per_s": batch * seconds / elapsed,
      }
    )
  return rows
