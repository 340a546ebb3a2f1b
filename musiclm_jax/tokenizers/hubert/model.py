"""HuBERT / MERT encoders as pure functions of imported params.

Params (what `hf_import` writes; linear kernels [in, out], conv kernels [width, in, out]):
  feature_extractor: conv_{i} {kernel[, bias]}[, norm_{i} {scale, bias}]
  feature_projection: [layer_norm {scale, bias},] dense {kernel, bias}
  positional: kernel [width, hidden / groups, hidden] (weight norm folded), bias
  encoder_norm: {scale, bias}
  layer_{l}: query, key, value, output, intermediate, output_dense {kernel, bias};
             attention_norm, final_norm {scale, bias}

`hidden_states` returns what transformers' `output_hidden_states=True` returns: the encoder's
input, then each layer's output (before the final layer norm of the pre-LN variant).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from musiclm_jax.tokenizers.hubert.config import HubertEncoderConfig

_DIMENSIONS = ("NWC", "WIO", "NWC")
_FEATURE_NORM_EPS = 1e-5  # torch's GroupNorm / LayerNorm default in the feature extractor


def _norm(p: dict, x: jax.Array, eps: float, axis: int = -1) -> jax.Array:
  mean = x.mean(axis, keepdims=True)
  var = jnp.square(x - mean).mean(axis, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _dense(p: dict, x: jax.Array) -> jax.Array:
  return x @ p["kernel"] + p["bias"]


def _conv(p: dict, x: jax.Array, stride: int = 1, padding=((0, 0),), groups: int = 1):
  y = jax.lax.conv_general_dilated(
    x, p["kernel"], (stride,), padding, dimension_numbers=_DIMENSIONS, feature_group_count=groups
  )
  return y + p["bias"] if "bias" in p else y


def features(config: HubertEncoderConfig, params: dict, audio: jax.Array) -> jax.Array:
  """[batch, samples] -> [batch, frames, hidden_size]: convolutions, then the projection."""
  x = audio[..., None]
  p = params["feature_extractor"]
  for i, stride in enumerate(config.conv_stride):
    x = _conv(p[f"conv_{i}"], x, stride)
    if config.feat_extract_norm == "layer":
      x = _norm(p[f"norm_{i}"], x, _FEATURE_NORM_EPS)
    elif i == 0:  # GroupNorm with a group per channel: each channel normalised over time
      x = _norm(p["norm_0"], x, _FEATURE_NORM_EPS, axis=1)
    x = jax.nn.gelu(x, approximate=False)
  projection = params["feature_projection"]
  if config.feat_proj_layer_norm:
    x = _norm(projection["layer_norm"], x, config.layer_norm_eps)
  return _dense(projection["dense"], x)


def _positions(config: HubertEncoderConfig, p: dict, x: jax.Array) -> jax.Array:
  width = config.num_conv_pos_embeddings
  y = _conv(p, x, padding=((width // 2, width // 2),), groups=config.num_conv_pos_embedding_groups)
  if width % 2 == 0:  # "same" padding of an even kernel leaves one frame too many
    y = y[:, :-1]
  return jax.nn.gelu(y, approximate=False)


def _attention(config: HubertEncoderConfig, p: dict, x: jax.Array) -> jax.Array:
  heads = config.num_heads
  split = lambda t: t.reshape(t.shape[:2] + (heads, -1))  # noqa: E731
  q, k, v = (split(_dense(p[name], x)) for name in ("query", "key", "value"))
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5
  out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
  return _dense(p["output"], out.reshape(x.shape))


def _feed_forward(config: HubertEncoderConfig, p: dict, x: jax.Array) -> jax.Array:
  hidden = jax.nn.gelu(_dense(p["intermediate"], x), approximate=config.hidden_act == "gelu_new")
  return _dense(p["output_dense"], hidden)


def _layer(config: HubertEncoderConfig, p: dict, x: jax.Array) -> jax.Array:
  eps = config.layer_norm_eps
  if config.do_stable_layer_norm:
    x = x + _attention(config, p, _norm(p["attention_norm"], x, eps))
    return x + _feed_forward(config, p, _norm(p["final_norm"], x, eps))
  x = _norm(p["attention_norm"], x + _attention(config, p, x), eps)
  return _norm(p["final_norm"], x + _feed_forward(config, p, x), eps)


def hidden_states(
  config: HubertEncoderConfig, params: dict, audio: jax.Array, num_layers: int | None = None
) -> list[jax.Array]:
  """The encoder's input and the outputs of its first `num_layers` layers (default all), each
  [batch, frames, hidden_size], as transformers' `output_hidden_states`."""
  x = features(config, params, audio)
  x = x + _positions(config, params["positional"], x)
  if not config.do_stable_layer_norm:
    x = _norm(params["encoder_norm"], x, config.layer_norm_eps)
  states = [x]
  for i in range(config.num_layers if num_layers is None else num_layers):
    states.append(_layer(config, params[f"layer_{i}"], states[-1]))
  return states


def last_hidden_state(config: HubertEncoderConfig, params: dict, audio: jax.Array) -> jax.Array:
  """The model's output: the last layer's, after the final layer norm of the pre-LN variant."""
  x = hidden_states(config, params, audio)[-1]
  return (
    _norm(params["encoder_norm"], x, config.layer_norm_eps) if config.do_stable_layer_norm else x
  )
