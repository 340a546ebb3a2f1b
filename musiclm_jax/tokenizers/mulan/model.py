"""The MuLan network (Huang et al., 2022) in Flax: two towers and a learned logit scale.

    audio window [b, samples] ─► AudioTower ─► [b, embed_dim] unit vectors ─┐
                                                                            ├─► s · a·t
    caption ids, mask [b, L]  ─► TextTower  ─► [b, embed_dim] unit vectors ─┘

s = exp(clip(log_scale, 0, log(max_logit_scale))) is the contrastive logits' scale
(1 / temperature), learned as in CLIP. The module knows nothing of losses; the model wrapper
(`models/mulan.py`) owns the contrastive loss.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax.tokenizers.mulan.audio_tower import AudioTower
from musiclm_jax.tokenizers.mulan.config import MuLanConfig
from musiclm_jax.tokenizers.mulan.text_tower import TextTower


class MuLan(nn.Module):
  """Audio tower, text tower and the logit scale."""

  config: MuLanConfig

  def setup(self):
    cfg = self.config
    self.audio_tower = AudioTower(cfg.audio)
    self.text_tower = TextTower(cfg.text)
    if cfg.learn_temperature:
      self.log_scale = self.param(
        "log_scale",
        nn.with_logical_partitioning(nn.initializers.constant(cfg.initial_log_scale), ()),
        (),
        jnp.float32,
      )

  def logit_scale(self) -> jax.Array:
    """Scalar float32 scale of the contrastive logits, 1 / temperature, in [1, max scale]."""
    cfg = self.config
    if not cfg.learn_temperature:
      return jnp.asarray(1.0 / cfg.initial_temperature, jnp.float32)
    return jnp.exp(jnp.clip(self.log_scale, 0.0, math.log(cfg.max_logit_scale)))

  def embed_audio(self, audio: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """[batch, samples] audio windows -> float32 [batch, embed_dim] unit vectors."""
    return self.audio_tower(audio, deterministic=deterministic)

  def embed_text(
    self, token_ids: jax.Array, attention_mask: jax.Array, *, deterministic: bool = True
  ) -> jax.Array:
    """[batch, length] int32 ids and mask -> float32 [batch, embed_dim] unit vectors."""
    return self.text_tower(token_ids, attention_mask, deterministic=deterministic)

  def __call__(
    self,
    audio: jax.Array,
    token_ids: jax.Array,
    attention_mask: jax.Array,
    *,
    deterministic: bool = True,
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Embeds paired audio and captions.

    Args:
      audio: [batch, samples] float windows at the audio tower's sample rate.
      token_ids: [batch, length] int32 caption ids.
      attention_mask: [batch, length], nonzero at real tokens.
      deterministic: False applies dropout (needs a 'dropout' rng).
    Returns:
      (audio embeddings [batch, embed_dim], text embeddings [batch, embed_dim], scalar logit
      scale), embeddings float32 unit vectors.
    """
    audio_emb = self.embed_audio(audio, deterministic=deterministic)
    text_emb = self.embed_text(token_ids, attention_mask, deterministic=deterministic)
    return audio_emb, text_emb, self.logit_scale()
