"""The w2v-BERT network: quantizer targets from unmasked features, k-means embeddings path."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.tokenizers.w2v_bert import W2VBert
from tests.size_configs import size_config

CONFIG = size_config("w2v_bert", "tiny")
SAMPLES = 12000  # 0.5 s: 12 frames
FRAMES = SAMPLES // 960
MODEL = W2VBert(CONFIG)


def _audio(seed=0):
  return jnp.asarray(0.1 * np.random.RandomState(seed).randn(2, SAMPLES), jnp.float32)


@functools.cache
def _params():
  masked = jnp.zeros((2, FRAMES), bool)
  variables = jax.jit(MODEL.init)(jax.random.key(0), _audio(), None, masked)
  return nn.unbox(variables["params"])


def test_targets_come_from_the_unmasked_features():
  apply = jax.jit(lambda p, a, m: MODEL.apply({"params": p}, a, None, m))
  none = np.zeros((2, FRAMES), bool)
  some = none.copy()
  some[:, 3:7] = True
  plain, masked = apply(_params(), _audio(), none), apply(_params(), _audio(), some)
  assert plain.mlm_logits.shape == (2, FRAMES, CONFIG.codebook_size)
  assert plain.context.shape == plain.quantized.shape == (2, FRAMES, CONFIG.codebook_dim)
  np.testing.assert_array_equal(plain.ids, masked.ids)
  np.testing.assert_array_equal(plain.quantized, masked.quantized)
  np.testing.assert_array_equal(plain.code_probs, masked.code_probs)
  assert np.abs(plain.mlm_logits[:, 3:7] - masked.mlm_logits[:, 3:7]).max() > 1e-3
  assert plain.valid.all()


@functools.cache
def _embeddings(layer):
  return jax.jit(lambda p, a: MODEL.apply({"params": p}, a, None, layer, method=W2VBert.embeddings))


def test_embeddings_of_a_chosen_mlm_layer():
  audio = _audio(1)
  default = _embeddings(None)(_params(), audio)
  assert default.shape == (2, FRAMES, CONFIG.d_model)
  np.testing.assert_array_equal(_embeddings(CONFIG.kmeans_layer)(_params(), audio), default)
  first = _embeddings(1)(_params(), audio)
  assert np.abs(first - default).max() > 1e-3
  np.testing.assert_array_equal(_embeddings(None)(_params(), audio), default)  # deterministic
