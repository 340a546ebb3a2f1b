"""Normalisation layers: RMSNorm (T5 layer norm: scale only, no mean subtraction, no bias) and
LayerNorm (mean and variance, scale and bias: conformer, BERT)."""

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


class LayerNorm(nn.Module):
  """Layer normalisation over the last axis (statistics in float32), scale and bias.

  Attributes:
    param_axis: logical axis name of the normalised features.
  """

  epsilon: float = 1e-5
  param_axis: str = axes.EMBED
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., features] -> [..., features] in `dtype`."""
    features = x.shape[-1]
    scale = self.param(
      "scale",
      nn.with_logical_partitioning(nn.initializers.ones, (self.param_axis,)),
      (features,),
      self.param_dtype,
    )
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros, (self.param_axis,)),
      (features,),
      self.param_dtype,
    )
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
    return (y * jnp.asarray(scale, jnp.float32) + jnp.asarray(bias, jnp.float32)).astype(self.dtype)
