"""T5 relative position bias: one learned scalar per (bucket, head), shared by all layers."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax import axes


def relative_position_bucket(
  relative_position: jax.Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
  """Maps key-minus-query offsets to bucket ids (T5's log-spaced buckets).

  Half of the buckets (per direction) are exact small offsets, the rest grow logarithmically up
  to `max_distance`, beyond which all offsets share the last bucket.

  Args:
    relative_position: int array of key_position - query_position.
  Returns:
    int32 array of the same shape with values in [0, num_buckets).
  """
  buckets = jnp.zeros_like(relative_position)
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    buckets += (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  log_ratio = jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact) / math.log(
    max_distance / max_exact
  )
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return (buckets + jnp.where(is_small, n, large)).astype(jnp.int32)


class RelativePositionBias(nn.Module):
  """Attention logit bias from relative positions.

  Buckets are bidirectional because the prefix of a prefix LM attends both ways.
  """

  num_buckets: int
  max_distance: int
  num_heads: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
    """[q] and [k] int positions -> bias [1, heads, q, k]."""
    table = self.param(
      "rel_embedding",
      nn.with_logical_partitioning(
        nn.initializers.normal(stddev=1.0 / math.sqrt(self.num_buckets)),
        (axes.RELPOS_BUCKETS, axes.HEADS),
      ),
      (self.num_buckets, self.num_heads),
      self.param_dtype,
    )
    relative = key_positions[None, :] - query_positions[:, None]
    buckets = relative_position_bucket(
      relative, bidirectional=True, num_buckets=self.num_buckets, max_distance=self.max_distance
    )
    bias = jnp.asarray(table, self.dtype)[buckets]  # [q, k, heads]
    return jnp.transpose(bias, (2, 0, 1))[None]
