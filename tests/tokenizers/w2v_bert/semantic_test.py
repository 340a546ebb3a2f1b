"""SemanticTokenizer: shapes and id ranges (tiny for real, paper abstractly), checks of its input."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.benchmarks.semantic import random_tokenizer
from musiclm_jax.tokenizers import kmeans
from musiclm_jax.tokenizers.w2v_bert.model import W2VBert
from musiclm_jax.tokenizers.w2v_bert.semantic import SemanticTokenizer, semantic_ids
from tests.size_configs import size_config

SAMPLE_RATE = 24_000


@pytest.fixture(scope="module")
def tokenizer() -> SemanticTokenizer:
  return random_tokenizer(size_config("w2v_bert", "tiny"), num_clusters=16)


def test_ten_seconds_give_250_ids_in_range(tokenizer):
  audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 10 * SAMPLE_RATE)).astype(np.float32)
  ids = tokenizer.semantic_tokens(audio)
  assert ids.shape == (2, 250) and ids.dtype == np.int32
  assert ids.min() >= 0 and ids.max() < 16
  assert tokenizer.frame_rate == 25.0
  assert len(np.unique(ids)) > 1  # random centroids still split random audio


def test_paper_config_gives_250_ids_of_1024():
  """Shapes only (jax.eval_shape): 10 s → 250 ids from 1024 clusters, no paper weights made."""
  config = size_config("w2v_bert", "paper")
  samples = 10 * SAMPLE_RATE
  audio = jax.ShapeDtypeStruct((1, samples), jnp.float32)
  masked = jax.ShapeDtypeStruct((1, config.num_frames(samples)), jnp.bool_)
  variables = jax.eval_shape(
    lambda a, m: W2VBert(config).init(jax.random.key(0), a, a, m, deterministic=True),
    audio,
    masked,
  )
  params = nn.meta.unbox(variables["params"])
  centroids = jax.ShapeDtypeStruct((1024, config.d_model), jnp.float32)
  stats = jax.ShapeDtypeStruct((config.d_model,), jnp.float32)
  ids = jax.eval_shape(
    functools.partial(semantic_ids, config, 7, "standardize"),
    params,
    centroids,
    stats,
    stats,
    audio,
    audio,
  )
  assert ids.shape == (1, 250) and ids.dtype == jnp.int32


def test_padding_mask_is_accepted_and_checked(tokenizer):
  audio = np.zeros((1, 960 * 8), np.float32)
  audio[:, : 960 * 4] = 0.1
  mask = (audio != 0).astype(np.float32)
  assert tokenizer.semantic_tokens(audio, mask).shape == (1, 8)
  with pytest.raises(ValueError, match="audio_mask shape"):
    tokenizer.semantic_tokens(audio, mask[:, :-1])


@pytest.mark.parametrize(
  "audio, message",
  [
    (np.zeros(960 * 4, np.float32), r"must be \[batch, samples\]"),
    (np.zeros((1, 100), np.float32), "shorter than one w2v-BERT frame"),
    (np.array([[0.0] * 960, [np.nan] * 960], np.float32), r"audio rows \[1\] hold NaN or inf"),
  ],
)
def test_bad_audio_is_refused_clearly(tokenizer, audio, message):
  with pytest.raises(ValueError, match=message):
    tokenizer.semantic_tokens(audio)


def test_centroids_of_another_width_are_refused():
  config = size_config("w2v_bert", "tiny")
  wrong = kmeans.KMeansModel(np.zeros((4, config.d_model + 1)), np.zeros(33), np.ones(33), "none")
  with pytest.raises(ValueError, match="centroids are 33-d"):
    SemanticTokenizer(config, {}, wrong, layer=1)
