"""EnCodec's encoder, quantizer and decoder as pure functions of imported variables.

Audio is [batch, samples, channels] inside (jax's NWC convolution layout); the codec API's
[batch, samples] is reshaped at the edges. Variables (what `hf_import` writes):

  params:
    encoder: conv_in, block_{b} {residual_{j} {conv_0, conv_1[, shortcut]}, downsample},
             lstm {layer_{l} {w_ih, w_hh, bias}}, conv_out
    decoder: conv_in, lstm, block_{b} {upsample, residual_{j}}, conv_out
    each conv: kernel [width, in, out] (weight norm folded in at import), bias [out]
  quantizer: codebooks [levels, codebook_size, hidden_size]

Padding follows transformers' `EncodecConv1d` exactly (the left/right split, the extra right
padding that makes the last window whole, reflect padding of inputs shorter than the pad), so the
codes equal transformers' and the frame count is ceil(samples / hop).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from musiclm_jax.tokenizers import rvq
from musiclm_jax.tokenizers.encodec.config import PAD_MODES, EncodecCodecConfig

_DIMENSIONS = ("NWC", "WIO", "NWC")


def _pad(config: EncodecCodecConfig, x: jax.Array, left: int, right: int) -> jax.Array:
  """Pads the time axis; a reflection longer than the input reflects a zero-extended input."""
  mode = PAD_MODES[config.pad_mode]
  length = x.shape[1]
  extra = max(left, right) - length + 1 if mode == "reflect" and length <= max(left, right) else 0
  if extra:
    x = jnp.pad(x, ((0, 0), (0, extra), (0, 0)))
  x = jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode=mode)
  return x[:, : x.shape[1] - extra]


def conv(
  config: EncodecCodecConfig, p: dict, x: jax.Array, stride: int = 1, dilation: int = 1
) -> jax.Array:
  """`EncodecConv1d`: pads so that every input sample is covered, then a valid convolution."""
  width = (p["kernel"].shape[0] - 1) * dilation + 1
  padding_total = width - stride
  length = x.shape[1]
  frames = -(-(length - width + padding_total) // stride)  # ceil
  extra = frames * stride + width - padding_total - length
  if config.use_causal_conv:
    left, right = padding_total, extra
  else:
    left, right = padding_total - padding_total // 2, padding_total // 2 + extra
  x = _pad(config, x, left, right)
  y = jax.lax.conv_general_dilated(
    x, p["kernel"], (stride,), "VALID", rhs_dilation=(dilation,), dimension_numbers=_DIMENSIONS
  )
  return y + p["bias"]


def conv_transpose(config: EncodecCodecConfig, p: dict, x: jax.Array, stride: int) -> jax.Array:
  """`EncodecConvTranspose1d`: a transposed convolution, its overhang trimmed to length·stride."""
  width = p["kernel"].shape[0]
  y = jax.lax.conv_general_dilated(
    x,
    p["kernel"][::-1],
    (1,),
    [(width - 1, width - 1)],
    lhs_dilation=(stride,),
    dimension_numbers=_DIMENSIONS,
  )
  padding_total = width - stride
  if config.use_causal_conv:
    right = math.ceil(padding_total * config.trim_right_ratio)
  else:
    right = padding_total // 2
  left = padding_total - right
  return y[:, left : y.shape[1] - right] + p["bias"]


def lstm(p: dict, x: jax.Array) -> jax.Array:
  """`EncodecLSTM`: stacked LSTMs over time (torch's gate order i, f, g, o) plus the input."""
  h = x
  for name in sorted(p, key=lambda n: int(n.split("_")[1])):
    layer = p[name]
    inputs = jnp.einsum("btc,cg->tbg", h, layer["w_ih"]) + layer["bias"]  # [time, batch, 4H]
    hidden = layer["w_hh"].shape[0]

    def step(carry, gates_x, w_hh=layer["w_hh"]):
      h_prev, c_prev = carry
      i, f, g, o = jnp.split(gates_x + h_prev @ w_hh, 4, axis=-1)
      c = jax.nn.sigmoid(f) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(g)
      h_new = jax.nn.sigmoid(o) * jnp.tanh(c)
      return (h_new, c), h_new

    zeros = jnp.zeros((x.shape[0], hidden), x.dtype)
    _, outputs = jax.lax.scan(step, (zeros, zeros), inputs)
    h = outputs.transpose(1, 0, 2)
  return h + x


def residual_block(config: EncodecCodecConfig, p: dict, x: jax.Array, j: int) -> jax.Array:
  """`EncodecResnetBlock` j: ELU, dilated conv, ELU, 1×1 conv, plus the (1×1-convolved) input."""
  y = conv(config, p["conv_0"], jax.nn.elu(x), dilation=config.dilation_growth_rate**j)
  y = conv(config, p["conv_1"], jax.nn.elu(y))
  shortcut = conv(config, p["shortcut"], x) if config.use_conv_shortcut else x
  return shortcut + y


def encoder(config: EncodecCodecConfig, params: dict, audio: jax.Array) -> jax.Array:
  """[batch, samples] -> [batch, ceil(samples / hop), hidden_size] latents."""
  x = conv(config, params["conv_in"], audio[..., None])
  for b, ratio in enumerate(reversed(config.upsampling_ratios)):
    block = params[f"block_{b}"]
    for j in range(config.num_residual_layers):
      x = residual_block(config, block[f"residual_{j}"], x, j)
    x = conv(config, block["downsample"], jax.nn.elu(x), stride=ratio)
  x = lstm(params["lstm"], x)
  return conv(config, params["conv_out"], jax.nn.elu(x))


def decoder(config: EncodecCodecConfig, params: dict, latents: jax.Array) -> jax.Array:
  """[batch, frames, hidden_size] -> [batch, frames · hop] audio."""
  x = conv(config, params["conv_in"], latents)
  x = lstm(params["lstm"], x)
  for b, ratio in enumerate(config.upsampling_ratios):
    block = params[f"block_{b}"]
    x = conv_transpose(config, block["upsample"], jax.nn.elu(x), stride=ratio)
    for j in range(config.num_residual_layers):
      x = residual_block(config, block[f"residual_{j}"], x, j)
  return conv(config, params["conv_out"], jax.nn.elu(x))[..., 0]


def encode(config: EncodecCodecConfig, variables: dict, audio: jax.Array, levels: int):
  """[batch, samples] -> [batch, frames, levels] int32 codes (transformers' `encode`)."""
  latents = encoder(config, variables["params"]["encoder"], audio)
  return rvq.greedy_codes(variables[rvq.QUANTIZER]["codebooks"], latents, levels)


def decode(config: EncodecCodecConfig, variables: dict, codes: jax.Array) -> jax.Array:
  """[batch, frames, levels] codes (-1: level absent) -> [batch, frames · hop] audio."""
  latents = rvq.sum_code_vectors(variables[rvq.QUANTIZER]["codebooks"], codes)
  return decoder(config, variables["params"]["decoder"], latents)
