"""RMSNorm (T5 layer norm: scale only, no mean subtraction, no bias)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax import axes


class RMSNorm(nn.Module):
  """Root-mean-square normalisation over the last axis, computed in float32."""

  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., embed] -> [..., embed] in `dtype`."""
    features = x.shape[-1]
    scale = self.param(
      "scale",
      nn.with_logical_partitioning(nn.initializers.ones, (axes.EMBED,)),
      (features,),
      self.param_dtype,
    )
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return (x * jnp.asarray(scale, jnp.float32)).astype(self.dtype)
