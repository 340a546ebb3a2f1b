"""Learned single-codebook Gumbel-softmax quantizer (wav2vec 2.0 / w2v-BERT targets).

Each frame's features are projected to logits over the codebook. In training a code is picked
by hard Gumbel-softmax: the forward pass uses the one-hot of argmax((logits + g) / τ), the
backward pass the gradient of the soft sample (straight-through). Without noise (evaluation,
tokenization) the code is argmax(logits). The temperature τ decays during training.

Two ids come back: `ids`, the noise-free argmax (the frame's code: MLM targets, tokens), and
`sampled_ids`, the code whose vector was used (equal to `ids` without noise). Early in training
the logits are small against the Gumbel noise, so sampled codes are nearly random; MLM targets
taken from them would be noise the MLM module cannot learn.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax import axes
from musiclm_jax.layers.dense import Projection


def gumbel_temperature(
  step: jax.Array | int | None, start: float, end: float, decay_steps: int
) -> jax.Array:
  """τ(step) = start · (end / start)^(step / decay_steps), held at `end` afterwards.

  Args:
    step: training step, or None for the final temperature (evaluation).
  Returns:
    float32 scalar.
  """
  if step is None:
    return jnp.asarray(end, jnp.float32)
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(decay_steps, 1), 0.0, 1.0)
  return jnp.asarray(start, jnp.float32) * jnp.power(end / start, progress)


class QuantizerOutput(NamedTuple):
  """What the quantizer returns.

  Attributes:
    quantized: [batch, frames, codebook_dim] code vectors (straight-through in training).
    ids: [batch, frames] int32 noise-free code ids, argmax of the logits.
    sampled_ids: [batch, frames] int32 ids of the vectors in `quantized`.
    probs: [batch, frames, codebook_size] softmax(logits), no noise: usage statistics for the
      diversity loss and the codebook perplexity.
  """

  quantized: jax.Array
  ids: jax.Array
  sampled_ids: jax.Array
  probs: jax.Array


class GumbelQuantizer(nn.Module):
  """Features → one of `codebook_size` learned code vectors.

  Attributes:
    codebook_size: codes.
    codebook_dim: width of a code vector.
  """

  codebook_size: int
  codebook_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
    self, x: jax.Array, temperature: jax.Array | float = 1.0, *, deterministic: bool = True
  ) -> QuantizerOutput:
    """Quantizes frames.

    Args:
      x: [batch, frames, embed] features.
      temperature: Gumbel-softmax τ (training only).
      deterministic: argmax of the logits, no noise; otherwise hard Gumbel-softmax with noise
        from the 'gumbel' rng stream.
    Returns:
      QuantizerOutput.
    """
    logits = Projection(
      self.codebook_size,
      (axes.EMBED, axes.VOCAB),
      dtype=jnp.float32,
      param_dtype=self.param_dtype,
      name="logits",
    )(x)
    logits = nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH, axes.ACT_VOCAB))
    codebook = self.param(
      "codebook",
      nn.with_logical_partitioning(nn.initializers.uniform(scale=1.0), (axes.VOCAB, None)),
      (self.codebook_size, self.codebook_dim),
      self.param_dtype,
    )
    probs = jax.nn.softmax(logits, axis=-1)
    ids = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if deterministic:
      sampled_ids = ids
      one_hot = jax.nn.one_hot(ids, self.codebook_size, dtype=jnp.float32)
    else:
      noise = jax.random.gumbel(self.make_rng("gumbel"), logits.shape, jnp.float32)
      soft = jax.nn.softmax((logits + noise) / temperature, axis=-1)
      sampled_ids = jnp.argmax(soft, axis=-1).astype(jnp.int32)
      hard = jax.nn.one_hot(sampled_ids, self.codebook_size, dtype=jnp.float32)
      one_hot = hard + soft - jax.lax.stop_gradient(soft)
    quantized = jnp.einsum(
      "bfv,vd->bfd", one_hot.astype(self.dtype), jnp.asarray(codebook, self.dtype)
    )
    return QuantizerOutput(quantized, ids, sampled_ids, probs)
