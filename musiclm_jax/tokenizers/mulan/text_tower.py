"""MuLan's text tower: a BERT-family encoder, masked mean pooling, a projection to the joint space.

The encoder is post-LN BERT (Devlin et al., 2019): word + position + token-type embeddings and a
LayerNorm, then N layers of (biased multi-head self-attention under a padding mask → residual →
LayerNorm; GELU feed-forward → residual → LayerNorm). Parameter names follow the Hugging Face
BertModel layout closely (`embeddings`, `layer_{i}/attention/query`, ...) so that
`bert_import.py` maps a pretrained checkpoint onto them one tensor at a time.

The tower embeds a caption as the mask-weighted mean of the last hidden states (the
sentence-transformers embedding, `TextTower.pooled`), projected to `embed_dim` and L2-normalised.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax import axes
from musiclm_jax.layers.attention import xla_attention
from musiclm_jax.layers.normalization import LayerNorm

# HF BERT's `hidden_act` names: "gelu" is the exact erf GELU; the others the tanh approximation.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "gelu": functools.partial(jax.nn.gelu, approximate=False),
  "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
  "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
  "relu": jax.nn.relu,
}

_HIDDEN_AXES = (axes.BATCH, axes.LENGTH, axes.ACT_EMBED)
_HEAD_AXES = (axes.BATCH, axes.LENGTH, axes.ACT_HEADS, axes.ACT_KV)


@dataclasses.dataclass(frozen=True)
class TextTowerConfig:
  """BERT hyper-parameters plus MuLan's projection.

  Attributes:
    vocab_size, hidden_size, num_layers, num_heads, intermediate_size: the BERT shape.
    max_position_embeddings: rows of the learned position table (longest input).
    type_vocab_size: rows of the token-type table (single captions use type 0).
    layer_norm_eps: LayerNorm epsilon (BERT: 1e-12).
    hidden_act: feed-forward activation, a key of `ACTIVATIONS` ("gelu" is exact erf GELU).
    dropout_rate: dropout on embeddings, attention probabilities and residual branches.
    embed_dim: width of the MuLan joint embedding space.
    max_length: tokens per caption after truncation / padding.
    dtype: compute dtype; param_dtype: parameter dtype (names such as "float32", "bfloat16").
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  dropout_rate: float = 0.1
  embed_dim: int = 128
  max_length: int = 64
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(
        f"TextTowerConfig: hidden_size={self.hidden_size} is not divisible by "
        f"num_heads={self.num_heads}."
      )
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(
        f"TextTowerConfig: hidden_act={self.hidden_act!r} is not supported; "
        f"choose one of {sorted(ACTIVATIONS)}."
      )
    if not 0 < self.max_length <= self.max_position_embeddings:
      raise ValueError(
        f"TextTowerConfig: max_length={self.max_length} must be in "
        f"[1, max_position_embeddings={self.max_position_embeddings}]."
      )

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)


def _normal(stddev: float = 0.02) -> nn.initializers.Initializer:
  # BERT initialises every weight matrix and embedding table as N(0, 0.02).
  return nn.initializers.normal(stddev)


class BiasedDense(nn.Module):
  """x·W + b with an N-d kernel [*contracted, *features] named by logical axes.

  Attributes:
    features: output feature shape.
    kernel_axes: logical axes of the kernel [*contracted, *features].
    num_contract: how many trailing input axes are contracted.
  """

  features: int | Sequence[int]
  kernel_axes: Sequence[str | None]
  num_contract: int = 1
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., *contracted] -> [..., *features]."""
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    shape = tuple(x.shape[-self.num_contract :]) + features
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(_normal(), tuple(self.kernel_axes)),
      shape,
      self.param_dtype,
    )
    bias_axes = tuple(self.kernel_axes[self.num_contract :])
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros, bias_axes),
      features,
      self.param_dtype,
    )
    x_axes = tuple(range(x.ndim - self.num_contract, x.ndim))
    y = jax.lax.dot_general(
      jnp.asarray(x, self.dtype),
      jnp.asarray(kernel, self.dtype),
      ((x_axes, tuple(range(self.num_contract))), ((), ())),
    )
    return y + jnp.asarray(bias, self.dtype)


class BertEmbeddings(nn.Module):
  """Word + position + token-type embeddings → LayerNorm → dropout."""

  config: TextTowerConfig

  @nn.compact
  def __call__(
    self, token_ids: jax.Array, token_type_ids: jax.Array, *, deterministic: bool
  ) -> jax.Array:
    """[batch, length] ids, [batch, length] type ids -> [batch, length, hidden]."""
    cfg = self.config

    def table(name: str, rows: int, row_axis: str | None) -> jax.Array:
      init = nn.with_logical_partitioning(_normal(), (row_axis, axes.EMBED))
      return self.param(name, init, (rows, cfg.hidden_size), cfg.weight_dtype)

    words = table("word_embeddings", cfg.vocab_size, axes.VOCAB)
    positions = table("position_embeddings", cfg.max_position_embeddings, None)
    types = table("token_type_embeddings", cfg.type_vocab_size, None)
    length = token_ids.shape[1]
    x = jnp.take(words, token_ids, axis=0) + jnp.take(types, token_type_ids, axis=0)
    x = x + positions[None, :length]
    x = nn.with_logical_constraint(x.astype(jnp.float32), _HIDDEN_AXES)
    x = LayerNorm(
      cfg.layer_norm_eps, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name="layer_norm"
    )(x)
    return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class BertSelfAttention(nn.Module):
  """Multi-head self-attention with q/k/v/output biases (HF BERT), over non-padding keys."""

  config: TextTowerConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool) -> jax.Array:
    """[batch, length, hidden], [batch, 1, 1, length] bool -> [batch, length, hidden]."""
    cfg = self.config
    heads = functools.partial(
      BiasedDense,
      (cfg.num_heads, cfg.head_dim),
      (axes.EMBED, axes.HEADS, axes.KV),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
    )
    scale = jnp.asarray(1.0 / math.sqrt(cfg.head_dim), cfg.compute_dtype)
    query = nn.with_logical_constraint(heads(name="query")(x) * scale, _HEAD_AXES)
    key = nn.with_logical_constraint(heads(name="key")(x), _HEAD_AXES)
    value = nn.with_logical_constraint(heads(name="value")(x), _HEAD_AXES)
    dropout_rng = None
    if not deterministic and cfg.dropout_rate > 0.0:
      dropout_rng = self.make_rng("dropout")
    no_bias = jnp.zeros((1, 1, 1, 1), jnp.float32)
    out = xla_attention(
      query, key, value, no_bias, mask, dropout_rate=cfg.dropout_rate, dropout_rng=dropout_rng
    )
    out = nn.with_logical_constraint(out, _HEAD_AXES)
    out = BiasedDense(
      cfg.hidden_size,
      (axes.HEADS, axes.KV, axes.EMBED),
      num_contract=2,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      name="output",
    )(out)
    return nn.with_logical_constraint(out, _HIDDEN_AXES)


class BertLayer(nn.Module):
  """Post-LN transformer layer: attention → add & norm → GELU feed-forward → add & norm."""

  config: TextTowerConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool) -> jax.Array:
    """[batch, length, hidden], [batch, 1, 1, length] bool -> [batch, length, hidden]."""
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate)
    norm = functools.partial(
      LayerNorm, cfg.layer_norm_eps, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype
    )
    attended = BertSelfAttention(cfg, name="attention")(x, mask, deterministic=deterministic)
    x = norm(name="attention_layer_norm")(x + dropout(attended, deterministic=deterministic))
    h = BiasedDense(
      cfg.intermediate_size,
      (axes.EMBED, axes.MLP),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      name="intermediate",
    )(x)
    h = nn.with_logical_constraint(
      ACTIVATIONS[cfg.hidden_act](h), (axes.BATCH, axes.LENGTH, axes.ACT_MLP)
    )
    h = BiasedDense(
      cfg.hidden_size,
      (axes.MLP, axes.EMBED),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      name="output",
    )(h)
    x = norm(name="output_layer_norm")(x + dropout(h, deterministic=deterministic))
    return nn.with_logical_constraint(x, _HIDDEN_AXES)


def _check_inputs(token_ids: jax.Array, attention_mask: jax.Array, max_positions: int) -> None:
  if token_ids.ndim != 2:
    raise ValueError(f"token_ids must be [batch, length], got shape {token_ids.shape}.")
  if attention_mask.shape != token_ids.shape:
    raise ValueError(
      f"attention_mask shape {attention_mask.shape} differs from token_ids {token_ids.shape}."
    )
  if token_ids.shape[1] > max_positions:
    raise ValueError(
      f"{token_ids.shape[1]} tokens exceed max_position_embeddings={max_positions}; "
      "truncate captions to the config's max_length."
    )


class BertEncoder(nn.Module):
  """BERT: embeddings and `num_layers` post-LN layers; returns the last hidden states."""

  config: TextTowerConfig

  @nn.compact
  def __call__(
    self,
    token_ids: jax.Array,
    attention_mask: jax.Array,
    *,
    token_type_ids: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array:
    """Encodes token ids.

    Args:
      token_ids: [batch, length] int32.
      attention_mask: [batch, length], nonzero at real tokens, zero at padding.
      token_type_ids: [batch, length] int32 segment ids (default: all 0, one caption).
      deterministic: False applies dropout (needs a 'dropout' rng).
    Returns:
      [batch, length, hidden] last hidden states (values at padding positions are meaningless).
    """
    cfg = self.config
    _check_inputs(token_ids, attention_mask, cfg.max_position_embeddings)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(token_ids)
    x = BertEmbeddings(cfg, name="embeddings")(
      token_ids, token_type_ids, deterministic=deterministic
    )
    mask = (attention_mask != 0)[:, None, None, :]
    for i in range(cfg.num_layers):
      x = BertLayer(cfg, name=f"layer_{i}")(x, mask, deterministic=deterministic)
    return x


def masked_mean(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
  """Mean of [batch, length, hidden] over positions where [batch, length] mask is nonzero.

  Returns [batch, hidden] in float32; an all-padding row gives zeros, not NaN.
  """
  weights = (attention_mask != 0).astype(jnp.float32)[..., None]
  total = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)
  return total / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)


class TextTower(nn.Module):
  """BertEncoder → masked mean pooling → Dense(embed_dim) → L2 normalisation."""

  config: TextTowerConfig

  def setup(self):
    cfg = self.config
    self.encoder = BertEncoder(cfg)
    self.projection = BiasedDense(
      cfg.embed_dim, (axes.EMBED, None), dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype
    )

  def pooled(
    self, token_ids: jax.Array, attention_mask: jax.Array, *, deterministic: bool = True
  ) -> jax.Array:
    """[batch, length] ids and mask -> [batch, hidden] masked mean of the last hidden states.

    This is the sentence-transformers embedding (before its L2 normalisation).
    """
    hidden = self.encoder(token_ids, attention_mask, deterministic=deterministic)
    return masked_mean(hidden, attention_mask)

  def __call__(
    self, token_ids: jax.Array, attention_mask: jax.Array, *, deterministic: bool = True
  ) -> jax.Array:
    """[batch, length] ids and mask -> [batch, embed_dim] unit vectors (float32)."""
    pooled = self.pooled(token_ids, attention_mask, deterministic=deterministic)
    projected = self.projection(pooled).astype(jnp.float32)
    squared = jnp.sum(jnp.square(projected), axis=-1, keepdims=True)
    return projected * jax.lax.rsqrt(jnp.maximum(squared, 1e-12))
