"""SEANet encoder and decoder of SoundStream (Zeghidour et al., 2021, §3.1-3.2).

Encoder: Conv(k=7, C) → per stride S: [residual units (dilations 1, 3, 9) → act →
Conv(k=2S, stride S)] → act → Conv(k=3, D). The decoder mirrors it with transposed convs:
Conv(k=7) → per stride: [act → ConvTranspose(k=2S, stride S) → residual units] → act →
Conv(k=7, 1). The activation is ELU (SEANet) or Snake (`SoundStreamConfig.activation`).

Every conv pads so that an input of T samples (T a multiple of the stride) gives exactly T / S
outputs, and every transposed conv gives exactly T * S: in causal mode convs pad on the left only
and transposed convs crop on the right only; in centred mode both split evenly. Weight
normalisation (used by SEANet and EnCodec) is left out so that parameters stay plain arrays;
`flax.linen.WeightNorm` can wrap the convs if training needs it.

The codec is small (≈10M parameters in the paper config), so its parameters are replicated; only
the batch of activations is sharded, through the logical constraints below.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax import axes
from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig

_ACTIVATION_AXES = (axes.BATCH, axes.LENGTH, axes.ACT_EMBED)


def _split_padding(total: int, causal: bool) -> tuple[int, int]:
  """(left, right) split of `total` padding: all left when causal, else centred."""
  return (total, 0) if causal else (total // 2, total - total // 2)


class CodecConv(nn.Module):
  """1-D conv with causal or centred zero padding: T inputs → T // stride outputs.

  Attributes:
    features: output channels.
    kernel_size: taps.
    stride: downsampling factor.
    dilation: spacing of the taps.
    groups: feature groups (grouped conv).
    causal: pad on the left only.
    zero_init: start with a zero kernel (the last conv of a residual branch, so the unit starts
      as the identity).
  """

  features: int
  kernel_size: int
  stride: int = 1
  dilation: int = 1
  groups: int = 1
  causal: bool = False
  zero_init: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, time, in] -> [batch, time // stride, features]."""
    total = (self.kernel_size - 1) * self.dilation + 1 - self.stride
    left, right = _split_padding(max(total, 0), self.causal)
    x = jnp.pad(x, ((0, 0), (left, right), (0, 0)))
    return nn.Conv(
      self.features,
      (self.kernel_size,),
      strides=(self.stride,),
      padding="VALID",
      kernel_dilation=(self.dilation,),
      feature_group_count=self.groups,
      kernel_init=nn.initializers.zeros if self.zero_init else nn.linear.default_kernel_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="conv",
    )(x)


class CodecConvTranspose(nn.Module):
  """1-D transposed conv with kernel 2 × stride, cropped to exactly T × stride outputs.

  The full transposed conv yields (T + 1) × stride samples; causal mode drops the last `stride`
  (so output block t depends on inputs t - 1 and t only), centred mode drops half on each side.

  Attributes:
    features: output channels.
    stride: upsampling factor.
    causal: crop on the right only.
  """

  features: int
  stride: int
  causal: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, time, in] -> [batch, time * stride, features]."""
    y = nn.ConvTranspose(
      self.features,
      (2 * self.stride,),
      strides=(self.stride,),
      padding="VALID",
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="conv",
    )(x)
    crop_left = 0 if self.causal else self.stride // 2
    return y[:, crop_left : crop_left + x.shape[1] * self.stride]


class Snake(nn.Module):
  """Snake activation x + sin²(αx) / α with a learned frequency α per channel (Ziyin et al.,
  2020; BigVGAN and DAC use it in their decoders).

  Its periodic term gives the convs harmonic oscillators to shape: on rendered music an ELU
  decoder first learns note onsets and a spectrum shared by all clips, and pitched partials only
  much later.
  """

  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., channels] -> [..., channels]."""
    alpha = self.param("alpha", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    alpha = jnp.asarray(alpha, self.dtype)
    # The floor keeps 1/α finite if a channel's α is driven to zero.
    return x + jnp.square(jnp.sin(alpha * x)) / (alpha + 1e-9)


def _activation(cfg: SoundStreamConfig, name: str) -> nn.Module | Callable[[jax.Array], jax.Array]:
  """The configured nonlinearity; Snake's α parameters live under `name`."""
  if cfg.activation == "snake":
    return Snake(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name=name)
  return nn.elu


class ResidualUnit(nn.Module):
  """x + Conv(k=1)(act(Conv(k, dilation)(act(x)))), width unchanged (act: ELU or Snake)."""

  config: SoundStreamConfig
  dilation: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, time, channels] -> [batch, time, channels]."""
    cfg = self.config
    conv = dict(causal=cfg.causal, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    width = x.shape[-1]
    dilated = CodecConv(width, cfg.kernel_size, dilation=self.dilation, name="dilated", **conv)
    hidden = dilated(_activation(cfg, "act_in")(x))
    # Snake's sin² term is never negative, so through a stack of residual units it compounds
    # (latent RMS 15.7 at init on unit-scale audio); residual branches that start at zero keep
    # the stack at the scale of its input.
    pointwise = CodecConv(width, 1, zero_init=cfg.activation == "snake", name="pointwise", **conv)
    y = pointwise(_activation(cfg, "act_mid")(hidden))
    return nn.with_logical_constraint(x + y, _ACTIVATION_AXES)


class SeanetEncoder(nn.Module):
  """Waveform → frame embeddings, downsampling by `config.hop_length`."""

  config: SoundStreamConfig

  @nn.compact
  def __call__(self, audio: jax.Array) -> jax.Array:
    """Encodes audio whose length is a multiple of the hop.

    Args:
      audio: [batch, samples] float, samples a multiple of config.hop_length.
    Returns:
      [batch, samples // hop_length, embedding_dim] in the compute dtype.
    """
    cfg = self.config
    conv = dict(causal=cfg.causal, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    x = jnp.asarray(audio, cfg.compute_dtype)[..., None]
    x = CodecConv(cfg.channels, cfg.kernel_size, name="conv_in", **conv)(x)
    for b, (mult, stride) in enumerate(zip(cfg.channel_mults, cfg.strides)):
      for dilation in cfg.dilations:
        x = ResidualUnit(cfg, dilation, name=f"block{b}_res_d{dilation}")(x)
      down = CodecConv(
        cfg.channels * mult, 2 * stride, stride=stride, name=f"block{b}_down", **conv
      )
      x = down(_activation(cfg, f"block{b}_act")(x))
      x = nn.with_logical_constraint(x, _ACTIVATION_AXES)
    x = _activation(cfg, "act_out")(x)
    x = CodecConv(cfg.embedding_dim, 3, name="conv_out", **conv)(x)
    return nn.with_logical_constraint(x, _ACTIVATION_AXES)


class SeanetDecoder(nn.Module):
  """Frame embeddings → waveform, upsampling by `config.hop_length` (mirror of the encoder)."""

  config: SoundStreamConfig

  @nn.compact
  def __call__(self, embeddings: jax.Array) -> jax.Array:
    """Decodes frame embeddings.

    Args:
      embeddings: [batch, frames, embedding_dim].
    Returns:
      [batch, frames * hop_length] float32 audio (linear, or tanh if config.tanh_output).
    """
    cfg = self.config
    conv = dict(causal=cfg.causal, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    widths = [cfg.channels * m for m in cfg.channel_mults]
    out_widths = [cfg.channels] + widths[:-1]
    x = jnp.asarray(embeddings, cfg.compute_dtype)
    x = CodecConv(widths[-1], cfg.kernel_size, name="conv_in", **conv)(x)
    blocks = list(enumerate(zip(out_widths, cfg.strides)))
    for b, (width, stride) in reversed(blocks):
      x = _activation(cfg, f"block{b}_act")(x)
      x = CodecConvTranspose(width, stride, name=f"block{b}_up", **conv)(x)
      x = nn.with_logical_constraint(x, _ACTIVATION_AXES)
      for dilation in cfg.dilations:
        x = ResidualUnit(cfg, dilation, name=f"block{b}_res_d{dilation}")(x)
    x = CodecConv(1, cfg.kernel_size, name="conv_out", **conv)(_activation(cfg, "act_out")(x))
    audio = x[..., 0].astype(jnp.float32)
    return jnp.tanh(audio) if cfg.tanh_output else audio
