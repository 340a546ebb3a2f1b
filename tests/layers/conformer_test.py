"""Conformer blocks: padding invariance, per-layer outputs, parameter count, depthwise conv."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.layers.conformer import Conformer, ConformerConfig, depthwise_conv

CONFIG = ConformerConfig(
  num_layers=2,
  num_heads=2,
  head_dim=8,
  d_model=16,
  d_ff=32,
  conv_kernel_size=3,
  dropout_rate=0.0,
  relative_attention_num_buckets=8,
  relative_attention_max_distance=16,
)
BATCH, LENGTH = 2, 12


@functools.cache
def _params():
  x = jnp.zeros((BATCH, LENGTH, CONFIG.d_model))
  variables = jax.jit(Conformer(CONFIG).init)(jax.random.key(0), x)
  return nn.unbox(variables["params"])


@functools.cache
def _apply():
  def apply(params, x, valid):
    return Conformer(CONFIG).apply({"params": params}, x, valid)

  return jax.jit(apply)


def test_num_params_matches_the_initialised_tree():
  count = sum(x.size for x in jax.tree.leaves(_params()))
  assert count == CONFIG.num_params()


def test_real_frames_ignore_padding_content_and_every_layer_is_returned():
  rng = np.random.RandomState(0)
  x = rng.randn(BATCH, LENGTH, CONFIG.d_model).astype(np.float32)
  valid = np.ones((BATCH, LENGTH), bool)
  valid[0, 8:] = False  # example 0: 8 real frames, then padding
  other_padding = x.copy()
  other_padding[0, 8:] = 100.0 * rng.randn(LENGTH - 8, CONFIG.d_model)
  out, hidden = _apply()(_params(), x, valid)
  out_other, _ = _apply()(_params(), other_padding, valid)
  assert out.shape == (BATCH, LENGTH, CONFIG.d_model)
  assert len(hidden) == CONFIG.num_layers
  np.testing.assert_array_equal(hidden[-1], out)
  np.testing.assert_allclose(out_other[0, :8], out[0, :8], atol=1e-5)
  np.testing.assert_allclose(out_other[1], out[1], atol=1e-6)
  # The same change on a real frame does reach the other real frames (attention, conv).
  changed = x.copy()
  changed[0, 7] = other_padding[0, 8]
  out_changed, _ = _apply()(_params(), changed, valid)
  assert np.abs(out_changed[0, :7] - out[0, :7]).max() > 1e-3


def test_num_layers_runs_a_prefix_of_the_stack():
  x = jnp.asarray(np.random.RandomState(1).randn(BATCH, LENGTH, CONFIG.d_model), jnp.float32)
  module = Conformer(CONFIG)
  first, hidden = module.apply({"params": _params()}, x, num_layers=1)
  assert len(hidden) == 1
  _, all_hidden = _apply()(_params(), x, jnp.ones((BATCH, LENGTH), bool))
  np.testing.assert_allclose(first, all_hidden[0], atol=1e-5)
  with pytest.raises(ValueError, match="num_layers=3"):
    module.apply({"params": _params()}, x, num_layers=3)


@pytest.mark.parametrize("taps", [1, 3, 4])
def test_depthwise_conv_matches_numpy(taps):
  rng = np.random.RandomState(taps)
  x = rng.randn(2, 9, 3).astype(np.float32)
  kernel = rng.randn(taps, 3).astype(np.float32)
  out = np.asarray(depthwise_conv(jnp.asarray(x), jnp.asarray(kernel)))
  left = (taps - 1) // 2
  for b in range(2):
    for c in range(3):
      # np.convolve flips the kernel; correlation is what the layer computes.
      full = np.convolve(x[b, :, c], kernel[::-1, c], mode="full")
      np.testing.assert_allclose(
        out[b, :, c], full[taps - 1 - left : taps - 1 - left + 9], atol=1e-5
      )
