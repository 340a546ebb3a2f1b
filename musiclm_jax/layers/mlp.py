"""T5.1.1 gated-GELU feed-forward block."""

from __future__ import annotations

import flax.linen as nn
import jax

from musiclm_jax import axes
from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.layers.dense import Projection


class GatedMlp(nn.Module):
  """wo(gelu(wi_0 x) * wi_1 x), with dropout on the hidden activations."""

  config: TransformerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, length, embed] -> [batch, length, embed]."""
    cfg = self.config

    def dense(features, kernel_axes, name):
      return Projection(
        features, kernel_axes, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name=name
      )

    gate = dense(cfg.d_ff, (axes.EMBED, axes.MLP), "wi_0")(x)
    linear = dense(cfg.d_ff, (axes.EMBED, axes.MLP), "wi_1")(x)
    hidden = nn.gelu(gate, approximate=True) * linear
    hidden = nn.with_logical_constraint(hidden, (axes.BATCH, axes.LENGTH, axes.ACT_MLP))
    hidden = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(
      hidden, deterministic=self.deterministic
    )
    out = dense(cfg.d_model, (axes.MLP, axes.EMBED), "wo")(hidden)
    return nn.with_logical_constraint(out, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))
