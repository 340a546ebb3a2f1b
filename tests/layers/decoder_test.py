"""Tests of the prefix-LM decoder: KV-cached decoding, masks, relative positions, dtypes.

Cached decoding is checked against one uncached forward pass of the same module, so the cache,
prefill and per-step relative position bias all have to agree with the training code path.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.layers.decoder import Decoder, prefix_lm_mask
from musiclm_jax.layers.relative_position import relative_position_bucket

VOCAB = 32
BATCH = 2
LENGTH = 10
PREFIX = 4
CONFIG = TransformerConfig(
  num_layers=2,
  num_heads=2,
  head_dim=8,
  d_model=16,
  d_ff=32,
  dropout_rate=0.0,
  relative_attention_num_buckets=8,
  relative_attention_max_distance=16,
)


def _config(**overrides) -> TransformerConfig:
  return dataclasses.replace(CONFIG, **overrides)


def _tokens(seed: int = 0, length: int = LENGTH) -> jax.Array:
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.integers(2, VOCAB, (BATCH, length)), jnp.int32)


def _prefix(length: int = LENGTH, prefix: int = PREFIX) -> jax.Array:
  """[batch, length] 1 on the first `prefix` positions."""
  return jnp.broadcast_to(jnp.arange(length) < prefix, (BATCH, length)).astype(jnp.int32)


@functools.cache
def _params(module: Decoder) -> dict:
  tokens = jnp.zeros((BATCH, LENGTH), jnp.int32)
  return nn.unbox(jax.jit(module.init)(jax.random.key(0), tokens, _prefix())["params"])


def _empty_cache(module: Decoder, cache_length: int) -> dict:
  """The KV cache made by initialising in decode mode on [batch, cache_length], zeroed."""
  tokens = jnp.zeros((BATCH, cache_length), jnp.int32)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(1), tokens, tokens, mode="decode"))
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.unbox(shapes["cache"]))


@functools.partial(jax.jit, static_argnums=0)
def _apply(module: Decoder, params, tokens, causal, valid):
  return module.apply({"params": params}, tokens, causal, valid)


def _forward(module: Decoder, params, tokens, causal=None, valid=None) -> np.ndarray:
  """One uncached forward pass: logits [batch, length, vocab]."""
  return np.asarray(_apply(module, params, tokens, causal, valid))


def _cached_logits(module: Decoder, params, tokens, prompt_length: int, cache_length: int):
  """Prefills `tokens[:, :prompt_length]`, then feeds the rest one token per call.

  Returns:
    logits [batch, length, vocab] collected from the prefill call and every decode step.
  """
  cache = _empty_cache(module, cache_length)

  @jax.jit
  def prefill(cache, prompt):
    return module.apply(
      {"params": params, "cache": cache},
      prompt,
      jnp.ones_like(prompt),
      mode="prefill",
      mutable=["cache"],
    )

  @jax.jit
  def step(cache, token):
    return module.apply({"params": params, "cache": cache}, token, mode="decode", mutable=["cache"])

  logits, variables = prefill(cache, tokens[:, :prompt_length])
  outputs = [logits]
  for i in range(prompt_length, tokens.shape[1]):
    logits, variables = step(variables["cache"], tokens[:, i : i + 1])
    outputs.append(logits)
  return np.asarray(jnp.concatenate(outputs, axis=1))


@pytest.mark.parametrize(
  "overrides",
  [
    dict(scan_layers=True, remat_policy="none"),
    dict(scan_layers=False, remat_policy="none"),
    dict(scan_layers=True, remat_policy="full"),
    dict(scan_layers=False, remat_policy="dots"),
    dict(scan_layers=True, attention_impl="dot_product_attention"),
    # Chunks of 7 in a cache of LENGTH + 3 = 13: the second starts at 6, not 7, to stay in bounds.
    dict(scan_layers=False, decode_chunk_length=7),
    dict(scan_layers=True, decode_chunk_length=1),
  ],
  ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_cached_decoding_equals_full_recomputation(overrides):
  """Prefill of the prefix plus one-token decode steps reproduce the logits of one full pass.

  The cache is longer than the sequence, so unwritten cache slots must stay masked.
  """
  module = Decoder(_config(**overrides), VOCAB)
  params = _params(module)
  tokens = _tokens()
  full = _forward(module, params, tokens, _prefix())
  cached = _cached_logits(module, params, tokens, PREFIX, cache_length=LENGTH + 3)
  assert cached.shape == full.shape == (BATCH, LENGTH, VOCAB)
  np.testing.assert_allclose(cached, full, atol=1e-5, rtol=1e-5)


def test_decode_step_takes_one_token():
  module = Decoder(CONFIG, VOCAB)
  params = _params(module)
  tokens = _tokens()
  cache = _empty_cache(module, LENGTH)
  with pytest.raises(ValueError, match="one token per call"):
    module.apply(
      {"params": params, "cache": cache}, tokens[:, :2], mode="decode", mutable=["cache"]
    )


def test_later_target_tokens_do_not_change_earlier_logits():
  module = Decoder(CONFIG, VOCAB)
  params = _params(module)
  tokens = _tokens()
  changed_at = PREFIX + 3
  changed = tokens.at[:, changed_at].set((tokens[:, changed_at] + 1) % VOCAB)
  before = _forward(module, params, tokens, _prefix())
  after = _forward(module, params, changed, _prefix())
  np.testing.assert_array_equal(after[:, :changed_at], before[:, :changed_at])
  assert np.abs(after[:, changed_at:] - before[:, changed_at:]).max() > 1e-3


def test_later_prefix_tokens_change_earlier_prefix_logits():
  """Inside the prefix attention is bidirectional: the last prefix token reaches position 0."""
  module = Decoder(CONFIG, VOCAB)
  params = _params(module)
  tokens = _tokens()
  changed = tokens.at[:, PREFIX - 1].set((tokens[:, PREFIX - 1] + 1) % VOCAB)
  before = _forward(module, params, tokens, _prefix())
  after = _forward(module, params, changed, _prefix())
  for position in range(PREFIX):
    assert np.abs(after[:, position] - before[:, position]).max() > 1e-3, position
  # Without a prefix the same change leaves every earlier position alone.
  causal_before = _forward(module, params, tokens)
  causal_after = _forward(module, params, changed)
  np.testing.assert_array_equal(causal_after[:, : PREFIX - 1], causal_before[:, : PREFIX - 1])


def test_padding_does_not_affect_valid_positions():
  module = Decoder(CONFIG, VOCAB)
  params = _params(module)
  tokens = _tokens()
  valid = np.ones((BATCH, LENGTH), bool)
  padded = [1, LENGTH - 2, LENGTH - 1]  # inside the prefix and at the end
  valid[:, padded] = False
  changed = tokens.at[:, padded].set((tokens[:, padded] + 7) % VOCAB)
  before = _forward(module, params, tokens, _prefix(), jnp.asarray(valid))
  after = _forward(module, params, changed, _prefix(), jnp.asarray(valid))
  np.testing.assert_allclose(after[valid], before[valid], atol=1e-6)
  # Control: the same change with every position valid does reach the others.
  all_valid = jnp.ones((BATCH, LENGTH), bool)
  unmasked_before = _forward(module, params, tokens, _prefix(), all_valid)
  unmasked_after = _forward(module, params, changed, _prefix(), all_valid)
  assert np.abs(unmasked_after[valid] - unmasked_before[valid]).max() > 1e-3


def _numpy_prefix_lm_mask(causal: np.ndarray, valid: np.ndarray) -> np.ndarray:
  batch, length = causal.shape
  mask = np.zeros((batch, 1, length, length), bool)
  for b in range(batch):
    for q in range(length):
      for k in range(length):
        allowed = k <= q or (causal[b, q] and causal[b, k])
        # Only keys are masked: a real query right after padding still sees its context.
        mask[b, 0, q, k] = allowed and valid[b, k]
  return mask


def test_prefix_lm_mask_matches_numpy():
  causal = np.array([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
  valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]], bool)
  mask = prefix_lm_mask(jnp.asarray(causal), jnp.asarray(valid), 6)
  np.testing.assert_array_equal(np.asarray(mask), _numpy_prefix_lm_mask(causal, valid))


def test_prefix_lm_mask_without_prefix_or_padding_is_causal():
  mask = np.asarray(prefix_lm_mask(None, None, 5))
  assert mask.shape == (1, 1, 5, 5)
  np.testing.assert_array_equal(mask[0, 0], np.tril(np.ones((5, 5), bool)))


BUCKETS = dict(num_buckets=32, max_distance=128)


def _bucket(distance, bidirectional: bool = True, **kwargs) -> np.ndarray:
  """Bucket of keys `distance` positions before the query (negative: after)."""
  relative = -jnp.asarray(distance, jnp.int32)  # key - query
  return np.asarray(
    relative_position_bucket(relative, bidirectional=bidirectional, **(BUCKETS | kwargs))
  )


def test_relative_position_buckets_small_offsets_are_exact():
  distances = np.arange(8)  # max_exact = 32 // 2 // 2
  np.testing.assert_array_equal(_bucket(distances), distances)
  np.testing.assert_array_equal(_bucket(-distances[1:]), 16 + distances[1:])


@pytest.mark.parametrize("sign", [1, -1], ids=["keys_before", "keys_after"])
def test_relative_position_buckets_are_monotone_and_saturate(sign):
  distances = np.arange(0 if sign > 0 else 1, 1000)
  buckets = _bucket(sign * distances)
  half = 16 if sign < 0 else 0
  assert np.all(np.diff(buckets) >= 0)
  assert buckets.min() >= half and buckets.max() == half + 15
  # Log-spaced: every bucket of the half is used once distances reach max_distance ...
  assert set(buckets[distances < 128]) == set(range(half + (sign < 0), half + 16))
  # ... and from max_distance on they all share the last one.
  np.testing.assert_array_equal(buckets[distances >= 128], half + 15)
  assert buckets[distances == 64][0] < half + 15


def test_relative_position_buckets_bidirectional_halves_are_disjoint():
  before = _bucket(np.arange(0, 300))
  after = _bucket(-np.arange(1, 300))
  assert set(before) <= set(range(16)) and set(after) <= set(range(16, 32))


def test_relative_position_buckets_unidirectional_ignores_future_keys():
  np.testing.assert_array_equal(_bucket(-np.arange(1, 50), bidirectional=False), 0)
  buckets = _bucket(np.arange(0, 300), bidirectional=False)
  assert np.all(np.diff(buckets) >= 0) and buckets.max() == 31
  np.testing.assert_array_equal(buckets[:16], np.arange(16))


@pytest.mark.parametrize("scan_layers", [True, False])
def test_bfloat16_compute_is_close_to_float32(scan_layers):
  f32 = Decoder(_config(scan_layers=scan_layers), VOCAB)
  bf16 = Decoder(_config(scan_layers=scan_layers, dtype="bfloat16"), VOCAB)
  params = _params(f32)  # float32 parameters drive both
  tokens = _tokens()
  reference = _forward(f32, params, tokens, _prefix())
  low = _forward(bf16, params, tokens, _prefix())
  assert low.dtype == np.float32  # logits stay float32
  assert np.all(np.isfinite(low))
  error = np.abs(low - reference).max()
  assert error < 0.05 * np.abs(reference).max(), error
  assert error > 0  # bf16 was really used
  # Predictions agree where float32 is not nearly tied.
  top2 = np.sort(reference, axis=-1)[..., -2:]
  clear = (top2[..., 1] - top2[..., 0]) > 0.2
  np.testing.assert_array_equal(low.argmax(-1)[clear], reference.argmax(-1)[clear])


def test_dropout_is_a_function_of_the_rng():
  module = Decoder(_config(dropout_rate=0.5), VOCAB)
  params = _params(module)
  apply = jax.jit(
    lambda p, r: module.apply(
      {"params": p}, _tokens(), _prefix(), enable_dropout=True, rngs={"dropout": r}
    )
  )
  first, again, other = (np.asarray(apply(params, jax.random.key(s))) for s in (0, 0, 1))
  np.testing.assert_array_equal(first, again)
  assert np.abs(first - other).max() > 1e-3
  deterministic = _forward(module, params, _tokens(), _prefix())
  assert np.abs(first - deterministic).max() > 1e-3
