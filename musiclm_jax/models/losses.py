"""Token-level losses: plain functions with explicit weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy_with_logits(
  logits: jax.Array,
  targets: jax.Array,
  *,
  z_loss: float = 0.0,
  label_smoothing: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """Softmax cross-entropy per token, with optional z-loss and label smoothing.

  z-loss (PaLM) adds z_loss * log(Z)^2, keeping the softmax normaliser near 1 so bf16 logits stay
  well conditioned. Label smoothing spreads `label_smoothing` of the target mass uniformly; the
  constant entropy of the smoothed target is subtracted so a perfect model still scores 0.

  Args:
    logits: [..., vocab] float.
    targets: [...] int ids.
  Returns:
    (total loss [...], z-loss part [...]) in float32.
  """
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  log_z = jax.nn.logsumexp(logits, axis=-1)
  log_probs = logits - log_z[..., None]
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1) if vocab > 1 else 0.0
  soft_targets = jax.nn.one_hot(targets, vocab) * (confidence - low) + low
  loss = -jnp.sum(soft_targets * log_probs, axis=-1)
  if label_smoothing > 0.0:
    normalizing_constant = -(
      confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20)
    )
    loss = loss - normalizing_constant
  z_term = z_loss * jnp.square(log_z)
  return loss + z_term, z_term


def weighted_sum(values: jax.Array, weights: jax.Array) -> jax.Array:
  """sum(values * weights) in float32."""
  return jnp.sum(values.astype(jnp.float32) * weights.astype(jnp.float32))
