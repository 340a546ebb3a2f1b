"""Multi-head self-attention with a key/value cache for prefill + incremental decoding.

Three modes (`AttentionMode`), chosen by the caller (`layers.decoder.Decoder`):
- full (training, scoring): attend over the whole sequence under the given mask;
- prefill: as full, and also write the keys/values of every position into the cache;
- decode: one new token at `decode_position`; write its key/value there and attend to the cache.
The cache is created by initialising in decode mode on a [batch, max_length] input. The cached
modes are inference only: they refuse active dropout.

The cache is laid out [batch, heads, length, head_dim] (heads before length, unlike the
activations): a decode step's two attention products then read it in the layout a batched matmul
takes, where [batch, length, heads, head_dim] made XLA copy a transpose of the whole cache for
each, every step (BENCHMARKS "Decoding and training against the PyTorch peer").
"""

from __future__ import annotations

import enum
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax import axes
from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.layers.dense import Projection

_CACHE_AXES = (axes.BATCH, axes.ACT_HEADS, axes.CACHE_LENGTH, axes.ACT_KV)


def _sum_over_batch_by_slices(x: jax.Array) -> jax.Array:
  total = x[0]
  for i in range(1, x.shape[0]):
    total = total + x[i]
  return total[None]


def _sum_over_batch(x: jax.Array) -> jax.Array:
  """x [batch, ...] summed over the batch, keeping it as an axis of 1.

  On CPU as a chain of slice additions, which XLA fuses into one pass: its reduce over the
  leading axis of an attention-sized array runs about 60× slower (15 ms against 1,010 ms for
  [8, 8, 762, 762] on dev-cpu). Elsewhere a plain sum, which also partitions over a sharded
  batch; `platform_dependent` chooses when lowering, so an AOT compile for TPU on a CPU host
  gets the sum.
  """
  return jax.lax.platform_dependent(
    x,
    cpu=_sum_over_batch_by_slices,
    default=lambda x: jnp.sum(x, axis=0, keepdims=True),
  )


def add_position_bias(logits: jax.Array, bias: jax.Array) -> jax.Array:
  """logits [batch, heads, q, k] + bias [batch or 1, heads or 1, q or 1, k or 1] (float32).

  A bias shared by the batch but full-sized otherwise (the relative-position bias) gets a
  gradient that sums over the batch with `_sum_over_batch`: XLA's reduce for it was the largest
  single op of a CPU training step (BENCHMARKS "Decoding and training against the PyTorch peer").
  """
  if bias.shape[0] == 1 and logits.shape[0] > 1 and bias.shape[1:] == logits.shape[1:]:
    return _add_batch_shared(logits, bias)
  return logits + bias


@jax.custom_vjp
def _add_batch_shared(logits: jax.Array, bias: jax.Array) -> jax.Array:
  return logits + bias


def _add_batch_shared_fwd(logits, bias):
  return logits + bias, None


def _add_batch_shared_bwd(_, g):
  return g, _sum_over_batch(g)


_add_batch_shared.defvjp(_add_batch_shared_fwd, _add_batch_shared_bwd)


def xla_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  bias: jax.Array,
  mask: jax.Array,
  *,
  dropout_rate: float = 0.0,
  dropout_rng: jax.Array | None = None,
) -> jax.Array:
  """Softmax attention in float32 with additive bias and boolean mask.

  Args:
    query: [batch, q, heads, head_dim], already scaled by 1/sqrt(head_dim).
    key, value: [batch, k, heads, head_dim].
    bias: [batch or 1, heads, q, k] added to the logits.
    mask: [batch or 1, 1, q, k] bool, True where attention is allowed.
    dropout_rate, dropout_rng: dropout on the attention probabilities (rng None: no dropout).
  Returns:
    [batch, q, heads, head_dim] in the query's dtype.
  """
  logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
  logits = add_position_bias(logits, bias.astype(jnp.float32))
  # finfo.min rather than -inf: a fully masked row (padding) gets uniform weights, not NaN.
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout_rng is not None and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(value.dtype), value)


def filled_cache_attention(
  query: jax.Array,
  cached_key: jax.Array,
  cached_value: jax.Array,
  bias: jax.Array,
  mask: jax.Array,
  position: jax.Array,
  chunk_length: int,
) -> jax.Array:
  """One decode step's attention over the filled part of the cache only.

  The keys are read `chunk_length` at a time, up to the chunk holding `position`, with an
  online softmax (running max and denominator, as flash attention does), so a step costs the
  filled length rounded up to a chunk rather than the preallocated cache. Where the cache length
  is not a multiple of the chunk, the last chunk's start is pulled back to stay in bounds and
  the positions an earlier chunk already covered are masked.

  Args:
    query: [batch, 1, heads, head_dim], already scaled.
    cached_key, cached_value: [batch, heads, cache_length, head_dim].
    bias: [batch or 1, heads, 1, cache_length]; mask: [batch or 1, 1, 1, cache_length] bool.
    position: int32 scalar, the position just written (keys after it are never read).
    chunk_length: static keys per chunk.
  Returns:
    [batch, 1, heads, head_dim] in the query's dtype.
  """
  batch, heads, cache_length, head_dim = cached_key.shape
  chunk = min(chunk_length, cache_length)

  def attend_chunk(i, carry):
    running_max, denominator, weighted = carry
    first = i * chunk
    start = jnp.minimum(first, cache_length - chunk)
    key = jax.lax.dynamic_slice_in_dim(cached_key, start, chunk, axis=2)
    value = jax.lax.dynamic_slice_in_dim(cached_value, start, chunk, axis=2)
    logits = jnp.einsum("bqhd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
    logits = logits + jax.lax.dynamic_slice_in_dim(bias, start, chunk, axis=3).astype(jnp.float32)
    allowed = jax.lax.dynamic_slice_in_dim(mask, start, chunk, axis=3)
    allowed = allowed & (start + jnp.arange(chunk) >= first)
    logits = jnp.where(allowed, logits, -jnp.inf)
    # Every chunk read holds an allowed key (its first new position is <= `position`), so the
    # running max is finite from the first chunk on and no exp sees -inf - -inf.
    new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1, keepdims=True))
    rescale = jnp.exp(running_max - new_max)
    probs = jnp.exp(logits - new_max)
    denominator = denominator * rescale + jnp.sum(probs, axis=-1, keepdims=True)
    update = jnp.einsum("bhqk,bhkd->bhqd", probs.astype(value.dtype), value)
    weighted = weighted * rescale + update.astype(jnp.float32)
    return new_max, denominator, weighted

  init = (
    jnp.full((batch, heads, 1, 1), -jnp.inf, jnp.float32),
    jnp.zeros((batch, heads, 1, 1), jnp.float32),
    jnp.zeros((batch, heads, 1, head_dim), jnp.float32),
  )
  num_chunks = position // chunk + 1
  _, denominator, weighted = jax.lax.fori_loop(0, num_chunks, attend_chunk, init)
  out = weighted / denominator  # [batch, heads, 1, head_dim]
  return jnp.swapaxes(out, 1, 2).astype(query.dtype)


def fused_attention(
  query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array, mask: jax.Array
) -> jax.Array:
  """`jax.nn.dot_product_attention` (cuDNN flash attention on GPU where shapes allow).

  Same arguments as `xla_attention` (query pre-scaled), but it has no dropout:
  `SelfAttention` never chooses it while attention dropout is active.
  """
  return jax.nn.dot_product_attention(
    query, key, value, bias=bias.astype(query.dtype), mask=mask, scale=1.0
  )


class AttentionMode(enum.StrEnum):
  """How a pass uses the KV cache: exactly one of these, so no impossible combination exists.

  FULL: the whole sequence, no cache (training, scoring).
  PREFILL: the whole prompt, also written into the cache from position 0.
  DECODE: one token per call at the cache position (the cache is created by `init` in this mode).
  """

  FULL = "full"
  PREFILL = "prefill"
  DECODE = "decode"


class SelfAttention(nn.Module):
  """Multi-head self-attention (no biases, T5 style) with an optional KV cache.

  Attributes:
    config: architecture (`attention_impl`, `dropout_rate`, ...).
    deterministic: False applies attention dropout (training).
    mode: an `AttentionMode` (or its value); the cached modes refuse active dropout.
  """

  config: TransformerConfig
  deterministic: bool = True
  mode: AttentionMode = AttentionMode.FULL

  @property
  def _dropout_active(self) -> bool:
    return not self.deterministic and self.config.dropout_rate > 0.0

  def _projection(self, name: str) -> Projection:
    cfg = self.config
    return Projection(
      (cfg.num_heads, cfg.head_dim),
      (axes.EMBED, axes.HEADS, axes.KV),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      name=name,
    )

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    bias: jax.Array,
    mask: jax.Array,
    decode_position: jax.Array | None = None,
  ) -> jax.Array:
    """Attention over `x`.

    Args:
      x: [batch, length, embed]; length 1 in decode mode.
      bias: [1, heads, q, k] relative position bias (k = cache length in decode mode).
      mask: [batch or 1, 1, q, k] bool.
      decode_position: int32 scalar, the position being decoded (decode mode only).
    Returns:
      [batch, length, embed].
    Raises:
      ValueError: dropout in a cached mode, or `decode_position` missing in decode mode or
        given in another.
    """
    cfg, mode = self.config, AttentionMode(self.mode)
    if mode != AttentionMode.FULL and self._dropout_active:
      raise ValueError(f"Attention mode {mode.value!r} is inference only; it takes no dropout.")
    if (decode_position is None) == (mode == AttentionMode.DECODE):
      raise ValueError(
        f"decode_position is required in decode mode and only there (mode {mode.value!r})."
      )
    head_axes = (axes.BATCH, axes.LENGTH, axes.ACT_HEADS, axes.ACT_KV)
    query = self._projection("query")(x) / jnp.asarray(math.sqrt(cfg.head_dim), cfg.compute_dtype)
    key = self._projection("key")(x)
    value = self._projection("value")(x)
    query = nn.with_logical_constraint(query, head_axes)
    key = nn.with_logical_constraint(key, head_axes)
    value = nn.with_logical_constraint(value, head_axes)

    # A decode step attends over the cache, heads-major; init (creating the cache) and prefill
    # attend over the fresh keys.
    stepping = mode == AttentionMode.DECODE and self.has_variable("cache", "cached_key")
    if mode != AttentionMode.FULL:
      key, value = self._update_cache(key, value, decode_position, mode)

    dropout_rng = self.make_rng("dropout") if self._dropout_active else None
    # The fused kernel has no dropout: with dropout active, the XLA path (which applies it).
    fused = cfg.attention_impl == "dot_product_attention" and dropout_rng is None
    if stepping:
      out = filled_cache_attention(
        query, key, value, bias, mask, decode_position, cfg.decode_chunk_length
      )
    elif fused:
      out = fused_attention(query, key, value, bias, mask)
    else:
      out = xla_attention(
        query, key, value, bias, mask, dropout_rate=cfg.dropout_rate, dropout_rng=dropout_rng
      )
    out = nn.with_logical_constraint(out, head_axes)
    projected = Projection(
      cfg.d_model,
      (axes.HEADS, axes.KV, axes.EMBED),
      num_contract=2,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      name="out",
    )(out)
    return nn.with_logical_constraint(projected, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))

  def _update_cache(
    self,
    key: jax.Array,
    value: jax.Array,
    decode_position: jax.Array | None,
    mode: AttentionMode,
  ) -> tuple[jax.Array, jax.Array]:
    """Writes new keys/values into the cache; returns what attention should read.

    At init (cache not yet created) the cache takes the input's shape: that is how its maximum
    length is chosen. Prefill writes positions [0, length) and attends over the fresh keys; decode
    writes one position and attends over the whole cache (returned heads-major).
    """
    initialized = self.has_variable("cache", "cached_key")
    heads_major = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731  [b, t, h, d] -> [b, h, t, d]
    cached_key = self.variable(
      "cache",
      "cached_key",
      nn.with_logical_partitioning(jnp.zeros, _CACHE_AXES),
      heads_major(key).shape,
      key.dtype,
    )
    cached_value = self.variable(
      "cache",
      "cached_value",
      nn.with_logical_partitioning(jnp.zeros, _CACHE_AXES),
      heads_major(value).shape,
      value.dtype,
    )
    if not initialized:
      return key, value
    max_length = cached_key.value.shape[2]
    if mode == AttentionMode.PREFILL:
      if key.shape[1] > max_length:
        raise ValueError(f"Prefill of {key.shape[1]} tokens exceeds the cache length {max_length}.")
      origin = (0, 0, 0, 0)
      cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, heads_major(key), origin)
      cached_value.value = jax.lax.dynamic_update_slice(
        cached_value.value, heads_major(value), origin
      )
      return key, value
    start = (0, 0, decode_position, 0)
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, heads_major(key), start)
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, heads_major(value), start)
    return cached_key.value, cached_value.value
