"""The w2v-BERT network (Chung et al., 2021) in Flax.

    audio ─► front end ─► features ─┬─► Gumbel quantizer ─► targets (vectors, ids)
                                    └─► mask (learned embedding on masked frames)
                                        ─► contrastive module (conformer) ─► context
                                        ─► MLM module (conformer) ─► MLM head (logits over ids)

The quantizer sees the unmasked features. The module knows nothing of losses: it returns what
the losses need (`W2VBertOutput`); the mask is an input, drawn by the model wrapper.
`embeddings` is the deterministic, unmasked path that returns an MLM layer's outputs for k-means.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax import axes
from musiclm_jax.layers.conformer import Conformer
from musiclm_jax.layers.dense import Projection
from musiclm_jax.tokenizers.w2v_bert.config import W2VBertConfig
from musiclm_jax.tokenizers.w2v_bert.frontend import FeatureFrontEnd
from musiclm_jax.tokenizers.w2v_bert.quantizer import GumbelQuantizer


class W2VBertOutput(NamedTuple):
  """Everything the w2v-BERT losses read.

  Attributes:
    context: [batch, frames, codebook_dim] projected contrastive-module outputs.
    quantized: [batch, frames, codebook_dim] quantizer vectors of the unmasked features.
    ids: [batch, frames] int32 noise-free quantizer ids (the MLM targets).
    sampled_ids: [batch, frames] int32 ids of the `quantized` vectors (Gumbel-sampled in
      training, else equal to `ids`).
    code_probs: [batch, frames, codebook_size] quantizer softmax (usage statistics).
    mlm_logits: [batch, frames, codebook_size] float32.
    valid: [batch, frames] bool, False on padded frames.
  """

  context: jax.Array
  quantized: jax.Array
  ids: jax.Array
  sampled_ids: jax.Array
  code_probs: jax.Array
  mlm_logits: jax.Array
  valid: jax.Array


class W2VBert(nn.Module):
  """Front end, quantizer, contrastive and MLM conformer modules, MLM head."""

  config: W2VBertConfig

  def setup(self):
    cfg = self.config
    dense = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    self.frontend = FeatureFrontEnd(cfg)
    self.quantizer = GumbelQuantizer(cfg.codebook_size, cfg.codebook_dim, **dense)
    self.mask_embedding = self.param(
      "mask_embedding",
      nn.with_logical_partitioning(nn.initializers.uniform(scale=1.0), (axes.EMBED,)),
      (cfg.d_model,),
      cfg.weight_dtype,
    )
    self.contrastive = Conformer(cfg.conformer_config(cfg.num_contrastive_layers))
    self.context_projection = Projection(cfg.codebook_dim, (axes.EMBED, None), **dense)
    self.mlm = Conformer(cfg.conformer_config(cfg.num_mlm_layers))
    self.mlm_head = Projection(
      cfg.codebook_size, (axes.EMBED, axes.VOCAB), dtype=jnp.float32, param_dtype=cfg.weight_dtype
    )

  def __call__(
    self,
    audio: jax.Array,
    audio_mask: jax.Array | None,
    masked: jax.Array,
    *,
    temperature: jax.Array | float = 1.0,
    deterministic: bool = True,
  ) -> W2VBertOutput:
    """The pre-training forward pass.

    Args:
      audio: [batch, samples] float at config.sample_rate.
      audio_mask: [batch, samples], 1 on real samples (None: all real).
      masked: [batch, frames] bool, frames to replace by the mask embedding
        (frames = samples // 960; see `masking.span_mask`).
      temperature: Gumbel-softmax temperature.
      deterministic: no dropout and no Gumbel noise; otherwise rng streams 'dropout' and
        'gumbel' are needed.
    Returns:
      W2VBertOutput.
    """
    features, valid = self.frontend(audio, audio_mask, deterministic=deterministic)
    targets = self.quantizer(features, temperature, deterministic=deterministic)
    mask_embedding = jnp.asarray(self.mask_embedding, features.dtype)
    x = jnp.where(masked[..., None], mask_embedding, features)
    context, _ = self.contrastive(x, valid, deterministic=deterministic)
    hidden, _ = self.mlm(context, valid, deterministic=deterministic)
    logits = self.mlm_head(hidden)
    logits = nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH, axes.ACT_VOCAB))
    return W2VBertOutput(
      context=self.context_projection(context),
      quantized=targets.quantized,
      ids=targets.ids,
      sampled_ids=targets.sampled_ids,
      code_probs=targets.probs,
      mlm_logits=logits,
      valid=valid,
    )

  def embeddings(
    self, audio: jax.Array, audio_mask: jax.Array | None = None, layer: int | None = None
  ) -> jax.Array:
    """Outputs of MLM layer `layer` on unmasked audio, deterministic (the k-means features).

    Args:
      audio: [batch, samples]; audio_mask: [batch, samples] or None.
      layer: 1-based MLM layer (default config.kmeans_layer); later layers are not run.
    Returns:
      [batch, samples // 960, d_model].
    """
    layer = self.config.kmeans_layer if layer is None else layer
    features, valid = self.frontend(audio, audio_mask, deterministic=True)
    context, _ = self.contrastive(features, valid, deterministic=True)
    hidden, _ = self.mlm(context, valid, deterministic=True, num_layers=layer)
    return hidden
