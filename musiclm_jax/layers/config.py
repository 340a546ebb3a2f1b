"""The architecture of a decoder-only transformer, as one frozen dataclass (t5x style)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims")
ATTENTION_IMPLS = ("xla", "dot_product_attention")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """T5.1.1-style decoder hyperparameters. Bound once per size in gin/models/*/{tiny,base,paper}.gin.

  Attributes:
    num_layers: decoder blocks.
    num_heads: attention heads.
    head_dim: features per head.
    d_model: residual stream width.
    d_ff: hidden width of the gated-GELU MLP.
    dropout_rate: dropout on residual branches and attention probabilities.
    relative_attention_num_buckets: T5 relative position buckets.
    relative_attention_max_distance: distance beyond which buckets saturate.
    dtype: compute dtype ('float32' or 'bfloat16'); softmax and logits stay float32.
    param_dtype: parameter dtype (fp32 params with bf16 compute is the usual TPU/GPU choice).
    scan_layers: stack layers with nn.scan (fast compiles, layer axis in params).
    remat_policy: rematerialisation of each block: 'none', 'full', 'dots',
      'dots_with_no_batch_dims' (save matmul outputs, recompute the rest).
    attention_impl: 'xla' (einsum softmax) or 'dot_product_attention' (jax.nn's fused kernel,
      cuDNN flash attention on GPU; it has no dropout on attention probabilities).
    decode_chunk_length: a decode step reads the KV cache this many positions at a time, up
      to the filled length only (`layers.attention.filled_cache_attention`).
  """

  num_layers: int
  num_heads: int
  head_dim: int
  d_model: int
  d_ff: int
  dropout_rate: float = 0.1
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat_policy: str = "none"
  attention_impl: str = "xla"
  decode_chunk_length: int = 256

  def __post_init__(self):
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy {self.remat_policy!r} is not one of {REMAT_POLICIES}.")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention_impl {self.attention_impl!r} is not one of {ATTENTION_IMPLS}.")
    for name in ("num_layers", "num_heads", "head_dim", "d_model", "d_ff", "decode_chunk_length"):
      if getattr(self, name) <= 0:
        raise ValueError(f"TransformerConfig.{name} must be positive, got {getattr(self, name)}.")

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def num_params(self, vocab_size: int) -> int:
    """Parameter count of `layers.decoder.Decoder` with this config (untied output layer)."""
    attention = 4 * self.d_model * self.num_heads * self.head_dim
    mlp = 3 * self.d_model * self.d_ff
    norms = 2 * self.d_model
    per_layer = attention + mlp + norms
    relpos = self.relative_attention_num_buckets * self.num_heads
    return self.num_layers * per_layer + 2 * vocab_size * self.d_model + self.d_model + relpos
