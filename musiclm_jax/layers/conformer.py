"""Conformer encoder blocks (Gulati et al., 2020) with T5 relative position bias.

A block is: x + ½ FFN(x) → x + MHSA(x) → x + Conv(x) → x + ½ FFN(x) → LayerNorm, each branch
pre-normalised. The convolution module is pointwise → GLU → depthwise conv → LayerNorm → swish →
pointwise; LayerNorm replaces the paper's BatchNorm so that the model has no mutable state and
results do not depend on how the batch is split.

Padding (frames beyond the real audio) never influences real frames: attention masks padded keys
and the depthwise conv sees zeros in padded frames. Self-attention reuses `layers.attention`'s
bias-free multi-head attention; one relative position bias is shared by all blocks of a stack.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax import axes
from musiclm_jax.layers.attention import SelfAttention
from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.layers.dense import Projection
from musiclm_jax.layers.normalization import LayerNorm
from musiclm_jax.layers.relative_position import RelativePositionBias

_ACTIVATION_AXES = (axes.BATCH, axes.LENGTH, axes.ACT_EMBED)


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
  """Hyperparameters of a stack of conformer blocks.

  Attributes:
    num_layers: blocks.
    num_heads: attention heads.
    head_dim: features per head.
    d_model: residual width.
    d_ff: hidden width of each feed-forward module.
    conv_kernel_size: taps of the depthwise convolution (centred, 'same' padding).
    dropout_rate: dropout on every residual branch, the FFN hidden layer and attention probs.
    relative_attention_num_buckets: T5 relative position buckets (bidirectional).
    relative_attention_max_distance: offset beyond which buckets saturate.
    dtype: compute dtype; softmax and normalisation statistics stay float32.
    param_dtype: parameter dtype.
    attention_impl: 'xla' or 'dot_product_attention' (see `layers.config.TransformerConfig`).
  """

  num_layers: int
  num_heads: int
  head_dim: int
  d_model: int
  d_ff: int
  conv_kernel_size: int = 5
  dropout_rate: float = 0.1
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention_impl: str = "xla"

  def __post_init__(self):
    for name in ("num_layers", "num_heads", "head_dim", "d_model", "d_ff", "conv_kernel_size"):
      if getattr(self, name) <= 0:
        raise ValueError(f"ConformerConfig.{name} must be positive, got {getattr(self, name)}.")

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def attention_config(self) -> TransformerConfig:
    """The settings `layers.attention.SelfAttention` reads."""
    return TransformerConfig(
      num_layers=self.num_layers,
      num_heads=self.num_heads,
      head_dim=self.head_dim,
      d_model=self.d_model,
      d_ff=self.d_ff,
      dropout_rate=self.dropout_rate,
      relative_attention_num_buckets=self.relative_attention_num_buckets,
      relative_attention_max_distance=self.relative_attention_max_distance,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      attention_impl=self.attention_impl,
    )

  def num_params(self) -> int:
    """Parameters of `Conformer` with this config."""
    d = self.d_model
    ffn = 2 * (2 * d * self.d_ff + 2 * d)  # two modules: two kernels + pre-norm each
    attention = 4 * d * self.num_heads * self.head_dim + 2 * d
    conv = 2 * d * d + self.conv_kernel_size * d + d * d + 4 * d  # + pre-norm and inner norm
    per_layer = ffn + attention + conv + 2 * d  # final norm
    relpos = self.relative_attention_num_buckets * self.num_heads
    return self.num_layers * per_layer + relpos


class FeedForward(nn.Module):
  """LayerNorm → dense(d_ff) → swish → dropout → dense(d_model)."""

  config: ConformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    """[batch, length, embed] -> [batch, length, embed]."""
    cfg = self.config
    dense = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    h = LayerNorm(name="norm", **dense)(x)
    h = Projection(cfg.d_ff, (axes.EMBED, axes.MLP), name="wi", **dense)(h)
    h = nn.with_logical_constraint(nn.swish(h), (axes.BATCH, axes.LENGTH, axes.ACT_MLP))
    h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
    h = Projection(cfg.d_model, (axes.MLP, axes.EMBED), name="wo", **dense)(h)
    return nn.with_logical_constraint(h, _ACTIVATION_AXES)


def depthwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Per-channel 1-D convolution with centred zero ('same') padding, as a sum of shifts.

  Shifted slices keep the channel axis untouched, so channels sharded over a mesh axis need no
  communication.

  Args:
    x: [batch, length, channels].
    kernel: [taps, channels].
  Returns:
    [batch, length, channels].
  """
  taps, length = kernel.shape[0], x.shape[1]
  left = (taps - 1) // 2
  padded = jnp.pad(x, ((0, 0), (left, taps - 1 - left), (0, 0)))
  out = padded[:, :length] * kernel[0]
  for j in range(1, taps):
    out = out + padded[:, j : j + length] * kernel[j]
  return out


class ConvModule(nn.Module):
  """LayerNorm → pointwise(2d) → GLU → depthwise conv → LayerNorm → swish → pointwise(d)."""

  config: ConformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array, deterministic: bool) -> jax.Array:
    """[batch, length, embed], valid [batch, length] bool -> [batch, length, embed]."""
    cfg = self.config
    dense = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    channel_axes = (axes.BATCH, axes.LENGTH, axes.ACT_MLP)
    h = LayerNorm(name="norm", **dense)(x)
    h = Projection((2, cfg.d_model), (axes.EMBED, None, axes.MLP), name="pointwise_in", **dense)(h)
    h = h[..., 0, :] * nn.sigmoid(h[..., 1, :])
    # Zeros in padded frames: the conv must not carry padding content into real frames.
    h = nn.with_logical_constraint(h * valid[..., None].astype(h.dtype), channel_axes)
    kernel = self.param(
      "depthwise_kernel",
      nn.with_logical_partitioning(
        nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=1),
        (None, axes.MLP),
      ),
      (cfg.conv_kernel_size, cfg.d_model),
      cfg.weight_dtype,
    )
    h = depthwise_conv(h, jnp.asarray(kernel, cfg.compute_dtype))
    h = LayerNorm(name="conv_norm", param_axis=axes.MLP, **dense)(h)
    h = nn.with_logical_constraint(nn.swish(h), channel_axes)
    h = Projection(cfg.d_model, (axes.MLP, axes.EMBED), name="pointwise_out", **dense)(h)
    h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
    return nn.with_logical_constraint(h, _ACTIVATION_AXES)


class ConformerBlock(nn.Module):
  """½ FFN → self-attention → conv module → ½ FFN → LayerNorm, all residual."""

  config: ConformerConfig

  @nn.compact
  def __call__(
    self, x: jax.Array, bias: jax.Array, valid: jax.Array, deterministic: bool
  ) -> jax.Array:
    """One block.

    Args:
      x: [batch, length, embed].
      bias: [1, heads, length, length] relative position bias.
      valid: [batch, length] bool, False on padded frames (never attended to).
      deterministic: no dropout.
    Returns:
      [batch, length, embed].
    """
    cfg = self.config
    dense = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    dropout = nn.Dropout(cfg.dropout_rate)
    h = FeedForward(cfg, name="ffn_in")(x, deterministic)
    x = x + 0.5 * dropout(h, deterministic=deterministic)
    h = LayerNorm(name="attention_norm", **dense)(x)
    mask = valid[:, None, None, :]
    h = SelfAttention(cfg.attention_config(), deterministic, name="self_attention")(h, bias, mask)
    x = x + dropout(h, deterministic=deterministic)
    x = x + ConvModule(cfg, name="conv")(x, valid, deterministic)
    h = FeedForward(cfg, name="ffn_out")(x, deterministic)
    x = x + 0.5 * dropout(h, deterministic=deterministic)
    x = LayerNorm(name="final_norm", **dense)(x)
    return nn.with_logical_constraint(x, _ACTIVATION_AXES)


class Conformer(nn.Module):
  """A stack of conformer blocks sharing one relative position bias."""

  config: ConformerConfig

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    valid: jax.Array | None = None,
    *,
    deterministic: bool = True,
    num_layers: int | None = None,
  ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Runs the first `num_layers` blocks (default: all).

    Args:
      x: [batch, length, embed].
      valid: [batch, length] bool, False on padded frames (default: all valid).
      deterministic: no dropout.
      num_layers: stop after this many blocks (e.g. the k-means layer); 1 <= n <= config.
    Returns:
      (output of the last block run [batch, length, embed], the outputs of every block run).
    """
    cfg = self.config
    num_layers = cfg.num_layers if num_layers is None else num_layers
    if not 1 <= num_layers <= cfg.num_layers:
      raise ValueError(f"num_layers={num_layers} must be in [1, {cfg.num_layers}].")
    length = x.shape[1]
    if valid is None:
      valid = jnp.ones(x.shape[:2], bool)
    valid = valid.astype(bool)
    positions = jnp.arange(length)
    bias = RelativePositionBias(
      cfg.relative_attention_num_buckets,
      cfg.relative_attention_max_distance,
      cfg.num_heads,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      name="relpos_bias",
    )(positions, positions)
    x = nn.with_logical_constraint(x.astype(cfg.compute_dtype), _ACTIVATION_AXES)
    hidden = []
    for i in range(num_layers):
      x = ConformerBlock(cfg, name=f"layer_{i}")(x, bias, valid, deterministic)
      hidden.append(x)
    return x, tuple(hidden)
