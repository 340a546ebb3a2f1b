"""Tests of `SelfAttention`'s modes: one mode per pass, and dropout on every path that trains."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.layers.attention import AttentionMode, SelfAttention, add_position_bias
from musiclm_jax.layers.config import TransformerConfig

CONFIG = TransformerConfig(
  num_layers=1,
  num_heads=2,
  head_dim=8,
  d_model=16,
  d_ff=32,
  dropout_rate=0.5,
  relative_attention_num_buckets=8,
  relative_attention_max_distance=16,
)
BATCH, LENGTH = 2, 6


def _inputs():
  x = jax.random.normal(jax.random.key(0), (BATCH, LENGTH, CONFIG.d_model))
  bias = jnp.zeros((1, CONFIG.num_heads, LENGTH, LENGTH))
  mask = jnp.ones((1, 1, LENGTH, LENGTH), bool)
  return x, bias, mask


@pytest.mark.parametrize("attention_impl", ["xla", "dot_product_attention"])
def test_training_applies_attention_dropout_on_every_implementation(attention_impl):
  config = dataclasses.replace(CONFIG, attention_impl=attention_impl)
  x, bias, mask = _inputs()
  params = SelfAttention(config).init(jax.random.key(1), x, bias, mask)

  def run(deterministic, seed=0):
    module = SelfAttention(config, deterministic=deterministic)
    return np.asarray(module.apply(params, x, bias, mask, rngs={"dropout": jax.random.key(seed)}))

  plain = run(True)
  first, second = run(False, 0), run(False, 1)
  assert not np.allclose(first, plain)
  assert not np.allclose(first, second)


@pytest.mark.parametrize("mode", ["prefill", "decode"])
def test_cached_modes_refuse_dropout(mode):
  x, bias, mask = _inputs()
  module = SelfAttention(CONFIG, deterministic=False, mode=mode)
  position = jnp.zeros((), jnp.int32) if mode == "decode" else None
  with pytest.raises(ValueError, match="inference only"):
    module.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, bias, mask, position
    )


@pytest.mark.parametrize("mode", list(AttentionMode))
def test_decode_position_is_given_in_decode_mode_only(mode):
  x, bias, mask = _inputs()
  wrong = None if mode == AttentionMode.DECODE else jnp.zeros((), jnp.int32)
  with pytest.raises(ValueError, match="decode_position"):
    SelfAttention(CONFIG, mode=mode).init(jax.random.key(0), x, bias, mask, wrong)


def test_an_unknown_mode_is_refused():
  x, bias, mask = _inputs()
  with pytest.raises(ValueError, match="'train_and_decode' is not a valid AttentionMode"):
    SelfAttention(CONFIG, mode="train_and_decode").init(jax.random.key(0), x, bias, mask)


@pytest.mark.parametrize("bias_shape", [(1, 2, 5, 5), (3, 2, 5, 5), (1, 1, 1, 1), (1, 2, 1, 5)])
def test_position_bias_gradient_equals_the_plain_sums(bias_shape):
  """add_position_bias's custom gradient (the batch summed by slices on CPU) is the sum's."""
  logits = jax.random.normal(jax.random.key(0), (3, 2, 5, 5))
  bias = jax.random.normal(jax.random.key(1), bias_shape)
  weights = jax.random.normal(jax.random.key(2), (3, 2, 5, 5))

  def loss(add, logits, bias):
    return jnp.sum(jnp.tanh(add(logits, bias)) * weights)

  ours = jax.jit(jax.grad(functools.partial(loss, add_position_bias), (0, 1)))(logits, bias)
  plain = jax.grad(functools.partial(loss, jnp.add), (0, 1))(logits, bias)
  assert ours[1].shape == bias.shape
  for a, b in zip(ours, plain, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
