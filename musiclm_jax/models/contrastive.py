"""Symmetric InfoNCE over a batch of paired embeddings (CLIP / MuLan), and cycle consistency.

Example i pairs audio a_i with text t_i. Logits are s · a_i·t_j for every pair in the batch
(unit vectors, s = 1 / temperature); the loss of example i is the mean of the cross-entropies of
row i (audio → text: which text belongs to a_i) and of column i (text → audio). The other
examples of the batch are the negatives, so the batch these functions see *is* the set of
negatives: called under `jit` on a batch sharded across devices, the [B, B] logits span the
global batch and GSPMD gathers the embeddings of every device. Invalid examples (padding slots)
are neither scored nor used as negatives.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax import axes

_NEG_INF = -1e9


class ContrastiveOutput(NamedTuple):
  """Per-example results of `clip_loss`, all float32 [batch], zero on invalid examples.

  Attributes:
    loss: (audio_to_text_loss + text_to_audio_loss) / 2.
    audio_to_text_loss: cross-entropy of picking example i's text for its audio.
    text_to_audio_loss: cross-entropy of picking example i's audio for its text.
    audio_to_text_correct: 1 where example i's text has the highest logit in row i.
    text_to_audio_correct: 1 where example i's audio has the highest logit in column i.
  """

  loss: jax.Array
  audio_to_text_loss: jax.Array
  text_to_audio_loss: jax.Array
  audio_to_text_correct: jax.Array
  text_to_audio_correct: jax.Array


def _batch_constraint(x: jax.Array) -> jax.Array:
  """Rows split over the batch axes, columns replicated: [batch, ...] -> same."""
  return nn.with_logical_constraint(x, (axes.BATCH,) + (None,) * (x.ndim - 1))


def similarity_logits(
  audio_emb: jax.Array, text_emb: jax.Array, scale: jax.Array | float
) -> jax.Array:
  """Scaled similarities of every audio with every text.

  Args:
    audio_emb, text_emb: [batch, dim] unit vectors.
    scale: scalar logit scale (1 / temperature).
  Returns:
    float32 [batch (audio), batch (text)].
  """
  audio_emb = _batch_constraint(audio_emb.astype(jnp.float32))
  text_emb = text_emb.astype(jnp.float32)
  logits = jnp.einsum("id,jd->ij", audio_emb, text_emb, precision=jax.lax.Precision.HIGHEST)
  return _batch_constraint(logits * scale)


def _cross_entropy(logits: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Cross-entropy and correctness of the diagonal target of each row over valid columns.

  Args:
    logits: float32 [batch, batch].
    valid: bool [batch].
  Returns:
    (loss [batch], correct [batch]) float32.
  """
  logits = jnp.where(valid[None, :], logits, _NEG_INF)
  target = jnp.diagonal(logits)
  loss = jax.nn.logsumexp(logits, axis=-1) - target
  correct = (jnp.argmax(logits, axis=-1) == jnp.arange(logits.shape[0])).astype(jnp.float32)
  return loss, correct


def clip_loss(
  audio_emb: jax.Array,
  text_emb: jax.Array,
  scale: jax.Array | float,
  valid: jax.Array | None = None,
) -> ContrastiveOutput:
  """Symmetric InfoNCE of paired embeddings against every other pair in the batch.

  Args:
    audio_emb: [batch, dim] unit vectors.
    text_emb: [batch, dim] unit vectors (text_emb[i] describes audio_emb[i]).
    scale: scalar logit scale, 1 / temperature.
    valid: bool [batch] (default all): invalid examples get zero loss and are not negatives.
  Returns:
    ContrastiveOutput of [batch] float32 values (sum them, divide by the valid count).
  """
  batch = audio_emb.shape[0]
  valid = jnp.ones((batch,), bool) if valid is None else valid.astype(bool)
  logits = similarity_logits(audio_emb, text_emb, scale)
  a2t, a2t_correct = _cross_entropy(logits, valid)
  t2a, t2a_correct = _cross_entropy(logits.T, valid)
  weight = valid.astype(jnp.float32)
  return ContrastiveOutput(
    loss=0.5 * (a2t + t2a) * weight,
    audio_to_text_loss=a2t * weight,
    text_to_audio_loss=t2a * weight,
    audio_to_text_correct=a2t_correct * weight,
    text_to_audio_correct=t2a_correct * weight,
  )


def mcc(text_emb: jax.Array, audio_emb: jax.Array) -> jax.Array:
  """MuLan cycle consistency: cosine similarity of each text with its audio.

  Args:
    text_emb, audio_emb: [batch, dim] (normalised here; need not be unit vectors).
  Returns:
    float32 [batch] in [-1, 1].
  """
  text_emb = text_emb.astype(jnp.float32)
  audio_emb = audio_emb.astype(jnp.float32)
  dot = jnp.sum(text_emb * audio_emb, axis=-1)
  norms = jnp.linalg.norm(text_emb, axis=-1) * jnp.linalg.norm(audio_emb, axis=-1)
  return dot / jnp.maximum(norms, 1e-12)
