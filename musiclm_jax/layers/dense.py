"""A bias-free projection whose kernel is created at its full N-d shape.

Flax's DenseGeneral initialises a flattened 2-d kernel and reshapes it, which breaks logical
partitioning of multi-axis kernels ([embed, heads, kv]) under an active mesh. This layer creates
the kernel directly with its logical axis names and fan-in computed over the contracted axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class Projection(nn.Module):
  """Contracts the last `num_contract` axes of x with the kernel's leading axes.

  Attributes:
    features: output feature shape, e.g. (heads, head_dim).
    kernel_axes: logical axis names of the kernel [*contracted, *features].
    num_contract: how many trailing input axes are contracted.
  """

  features: int | Sequence[int]
  kernel_axes: Sequence[str]
  num_contract: int = 1
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., *contracted] -> [..., *features]."""
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    contracted = x.shape[-self.num_contract :]
    shape = tuple(contracted) + features
    init = nn.initializers.variance_scaling(
      1.0,
      "fan_in",
      "truncated_normal",
      in_axis=tuple(range(self.num_contract)),
      out_axis=tuple(range(self.num_contract, len(shape))),
    )
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(init, tuple(self.kernel_axes)),
      shape,
      self.param_dtype,
    )
    x_axes = tuple(range(x.ndim - self.num_contract, x.ndim))
    return jax.lax.dot_general(
      jnp.asarray(x, self.dtype),
      jnp.asarray(kernel, self.dtype),
      ((x_axes, tuple(range(self.num_contract))), ((), ())),
    )
