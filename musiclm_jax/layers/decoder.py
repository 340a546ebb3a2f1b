"""Decoder-only prefix-LM transformer (T5.1.1 decoder block, relative position bias).

The prefix (`decoder_causal_attention` = 1) attends bidirectionally within itself; every other
position attends causally. Layers are stacked with `nn.scan` (optional) and wrapped in
`nn.remat` with a configurable policy.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax import axes
from musiclm_jax.layers.attention import AttentionMode, SelfAttention
from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.layers.dense import Projection
from musiclm_jax.layers.mlp import GatedMlp
from musiclm_jax.layers.normalization import RMSNorm
from musiclm_jax.layers.relative_position import RelativePositionBias

_EMBED_INIT = nn.initializers.normal(stddev=1.0)
_ACTIVATION_AXES = (axes.BATCH, axes.LENGTH, axes.ACT_EMBED)


def prefix_lm_mask(
  causal_attention: jax.Array | None, valid: jax.Array | None, length: int
) -> jax.Array:
  """Attention mask of a prefix LM.

  Args:
    causal_attention: [batch, length] 1 on prefix positions (full attention among them), or
      None for a purely causal LM.
    valid: [batch, length] True where the *key* is a real token (False: padding, never attended
      to), or None. Queries are not masked: a real target right after padding must still see
      its context; padded queries carry no loss weight.
    length: sequence length.
  Returns:
    [batch or 1, 1, length, length] bool, True where query may attend key.
  """
  positions = jnp.arange(length)
  mask = (positions[None, :] <= positions[:, None])[None, None]
  if causal_attention is not None:
    prefix = causal_attention.astype(bool)
    mask = mask | (prefix[:, None, :, None] & prefix[:, None, None, :])
  if valid is not None:
    valid = valid.astype(bool)
    mask = mask & valid[:, None, None, :]
  return mask


class DecoderLayer(nn.Module):
  """Pre-norm block: x + Attention(RMSNorm(x)), then x + GatedMlp(RMSNorm(x))."""

  config: TransformerConfig
  deterministic: bool = True
  mode: AttentionMode = AttentionMode.FULL

  @nn.compact
  def __call__(self, x, bias, mask, decode_position):
    """[batch, length, embed] -> ([batch, length, embed], None); the None is for nn.scan."""
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))
    norm = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    h = RMSNorm(name="pre_attention_norm", **norm)(x)
    h = SelfAttention(cfg, self.deterministic, self.mode, name="self_attention")(
      h, bias, mask, decode_position
    )
    x = x + dropout(h, deterministic=self.deterministic)
    h = RMSNorm(name="pre_mlp_norm", **norm)(x)
    h = GatedMlp(cfg, self.deterministic, name="mlp")(h)
    x = x + dropout(h, deterministic=self.deterministic)
    return nn.with_logical_constraint(x, _ACTIVATION_AXES), None


def unscanned_params(params: dict, config: TransformerConfig) -> dict:
  """Decoder params with the scanned layer stack split into `layers_0 … layers_{L-1}`.

  The layout a `Decoder` with `scan_layers=False` takes; params already in it pass through.
  Decoding runs unscanned (MaxText's advice too): inside a scan, every step slices each layer's
  weights and KV cache out of the stacked arrays and writes the cache back, copies that cost
  more than the layer's own matmuls for one token (BENCHMARKS "Decoding and training against the PyTorch peer").
  """
  if not config.scan_layers or "layers" not in params:
    return params
  out = {k: v for k, v in params.items() if k != "layers"}
  for i in range(config.num_layers):
    out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"])
  return out


def _remat_policy(name: str):
  return {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
  }[name]


class Decoder(nn.Module):
  """Token ids -> logits over `vocab_size`.

  Attributes:
    config: architecture.
    vocab_size: output classes (a multiple of 128 is kindest to TPUs).
  """

  config: TransformerConfig
  vocab_size: int

  @nn.compact
  def __call__(
    self,
    decoder_input_tokens: jax.Array,
    decoder_causal_attention: jax.Array | None = None,
    valid: jax.Array | None = None,
    *,
    enable_dropout: bool = False,
    mode: AttentionMode | str = AttentionMode.FULL,
    hidden_only: bool = False,
  ) -> jax.Array:
    """Runs the decoder.

    Args:
      decoder_input_tokens: [batch, length] int32 (targets shifted right, 0 = BOS/pad).
      decoder_causal_attention: [batch, length] 1 on the prefix (see `prefix_lm_mask`).
      valid: [batch, length] bool, False where the input token is padding (keys masked).
      enable_dropout: training mode (full mode only: the cached modes refuse it).
      mode: an `AttentionMode` or its value. 'decode': one token per call at the cache position
        (length must be 1 after init; initialising in this mode creates the cache). 'prefill':
        run the whole prompt and fill the cache from position 0.
      hidden_only: return the final hidden states [batch, length, d_model] instead of logits,
        for a loss that projects only the rows and columns it needs (full mode only; initialise
        the module without it, so that the output kernel exists).
    Returns:
      logits [batch, length, vocab_size] float32 (or the hidden states, see `hidden_only`).
    """
    cfg, mode = self.config, AttentionMode(mode)
    length = decoder_input_tokens.shape[1]
    # During init the cache is being created at full length: run as a normal full pass.
    stepping = mode == AttentionMode.DECODE and not self.is_initializing()
    position = None
    if mode != AttentionMode.FULL:
      position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
    query_positions, key_positions, mask = self._positions_and_mask(
      decoder_causal_attention, valid, length, stepping, position
    )
    bias = RelativePositionBias(
      cfg.relative_attention_num_buckets,
      cfg.relative_attention_max_distance,
      cfg.num_heads,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      name="relpos_bias",
    )(query_positions, key_positions)

    x = self._embed(decoder_input_tokens)
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=not enable_dropout)
    decode_position = position.value if mode == AttentionMode.DECODE else None
    x = self._layers(x, bias, mask, decode_position, not enable_dropout, mode)
    x = RMSNorm(name="final_norm", dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)(x)
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=not enable_dropout)
    if hidden_only:
      if mode != AttentionMode.FULL:
        raise ValueError("Decoder: hidden_only is for full-sequence (training) passes")
      return x
    # Logits in float32: the softmax over a large vocabulary is where bf16 hurts most.
    logits = Projection(
      self.vocab_size,
      (axes.EMBED, axes.VOCAB),
      dtype=jnp.float32,
      param_dtype=cfg.weight_dtype,
      name="logits_dense",
    )(x)
    logits = nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH, axes.ACT_VOCAB))

    if position is not None and not self.is_initializing():
      if stepping:
        position.value = position.value + length
      elif mode == AttentionMode.PREFILL:
        position.value = jnp.asarray(length, jnp.int32)
    return logits

  def _positions_and_mask(self, causal_attention, valid, length, stepping, position):
    if not stepping:
      positions = jnp.arange(length)
      return positions, positions, prefix_lm_mask(causal_attention, valid, length)
    if length != 1:
      raise ValueError(f"Decode mode takes one token per call, got length {length}.")
    max_length = self._cache_length()
    key_positions = jnp.arange(max_length)
    query_positions = position.value[None]
    mask = (key_positions <= position.value)[None, None, None, :]
    return query_positions, key_positions, mask

  def _cache_length(self) -> int:
    cache = self.variables["cache"]
    # [batch, heads, length, head_dim]; scanned caches carry a leading layer axis.
    if self.config.scan_layers:
      return cache["layers"]["self_attention"]["cached_key"].shape[3]
    return cache["layers_0"]["self_attention"]["cached_key"].shape[2]

  def _embed(self, tokens: jax.Array) -> jax.Array:
    cfg = self.config
    table = self.param(
      "token_embedding",
      nn.with_logical_partitioning(_EMBED_INIT, (axes.VOCAB, axes.EMBED)),
      (self.vocab_size, cfg.d_model),
      cfg.weight_dtype,
    )
    # Gather from a table replicated for the lookup: a gather from a vocab/embed-sharded table
    # makes SPMD rematerialise it anyway, less predictably.
    table = nn.with_logical_constraint(jnp.asarray(table, cfg.compute_dtype), (None, None))
    x = jnp.take(table, tokens.astype(jnp.int32), axis=0)
    return nn.with_logical_constraint(x, _ACTIVATION_AXES)

  def _layers(self, x, bias, mask, decode_position, deterministic, mode):
    cfg = self.config
    layer_cls = DecoderLayer
    if cfg.remat_policy != "none":
      layer_cls = nn.remat(
        layer_cls, policy=_remat_policy(cfg.remat_policy), prevent_cse=not cfg.scan_layers
      )
    kwargs = dict(deterministic=deterministic, mode=mode)
    if cfg.scan_layers:
      stack = nn.scan(
        layer_cls,
        variable_axes={"params": 0, "cache": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
        length=cfg.num_layers,
        metadata_params={nn.PARTITION_NAME: axes.LAYERS},
      )
      x, _ = stack(cfg, name="layers", **kwargs)(x, bias, mask, decode_position)
      return x
    for i in range(cfg.num_layers):
      x, _ = layer_cls(cfg, name=f"layers_{i}", **kwargs)(x, bias, mask, decode_position)
    return x
