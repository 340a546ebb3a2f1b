"""w2v-BERT objectives as plain functions with explicit masks.

- Contrastive (InfoNCE): at each masked frame the context vector must pick its own quantized
  vector among K distractors, the quantized vectors of other masked frames of the same example;
  logits are cosine similarities / κ. Distractors with the positive's code id are identical to
  it and are left out.
- Diversity: (V - perplexity) / V of the example's mean code distribution, which pushes the
  quantizer to use its whole codebook.
- MLM: cross-entropy of the MLM head's logits against the quantizer's ids at masked frames.

Per-frame losses come back unreduced; `per_example_mean` averages them over an example's masked
frames.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_NEG_INF = jnp.finfo(jnp.float32).min


def _negatives_one(key: jax.Array, masked: jax.Array, num_negatives: int):
  """[frames] bool -> (indices [frames, K] int32, valid [frames, K] bool), one example."""
  frames = masked.shape[0]
  count = jnp.sum(masked.astype(jnp.int32))
  order = jnp.argsort(~masked, stable=True)  # masked frame indices first, ascending
  rank = jnp.cumsum(masked.astype(jnp.int32)) - 1  # a masked frame's place in `order`
  draws = jax.random.randint(key, (frames, num_negatives), 0, jnp.maximum(count - 1, 1))
  draws = draws + (draws >= rank[:, None]).astype(draws.dtype)  # skip the frame itself
  indices = order[jnp.minimum(draws, frames - 1)].astype(jnp.int32)
  valid = masked[:, None] & (count > 1) & (draws < count)
  return indices, jnp.broadcast_to(valid, indices.shape)


def sample_negatives(
  keys: jax.Array, masked: jax.Array, num_negatives: int
) -> tuple[jax.Array, jax.Array]:
  """Draws distractors for every masked frame, uniformly from the example's other masked frames.

  Args:
    keys: [batch] PRNG keys, one per example.
    masked: [batch, frames] bool.
    num_negatives: K (drawn with replacement).
  Returns:
    (indices [batch, frames, K] int32 frame indices, valid [batch, frames, K] bool: False on
    unmasked frames and in examples with fewer than two masked frames).
  """
  one = functools.partial(_negatives_one, num_negatives=num_negatives)
  return jax.vmap(one)(keys, masked.astype(bool))


def _unit(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), 1e-12))


def contrastive_loss(
  context: jax.Array,
  targets: jax.Array,
  target_ids: jax.Array,
  negative_indices: jax.Array,
  negative_valid: jax.Array,
  temperature: float,
) -> tuple[jax.Array, jax.Array]:
  """InfoNCE of each frame's context against its target and K distractor targets.

  Args:
    context: [batch, frames, dim] context vectors.
    targets: [batch, frames, dim] quantized vectors (positives).
    target_ids: [batch, frames] code ids of the targets.
    negative_indices, negative_valid: [batch, frames, K] from `sample_negatives`.
    temperature: κ, logits are cosine / κ.
  Returns:
    (loss [batch, frames] float32, correct [batch, frames] bool: the positive beats every
    valid distractor). Meaningful on masked frames only; weight them with the mask.
  """
  similarity = jnp.einsum(
    "bfd,bgd->bfg", _unit(context), _unit(targets), preferred_element_type=jnp.float32
  )
  similarity = similarity / temperature  # [batch, frame, target frame]
  positive = jnp.diagonal(similarity, axis1=1, axis2=2)
  negative = jnp.take_along_axis(similarity, negative_indices, axis=-1)
  negative_ids = jax.vmap(lambda ids, index: ids[index])(target_ids, negative_indices)
  valid = negative_valid & (negative_ids != target_ids[..., None])
  negative = jnp.where(valid, negative, _NEG_INF)
  logits = jnp.concatenate([positive[..., None], negative], axis=-1)
  loss = jax.nn.logsumexp(logits, axis=-1) - positive
  correct = positive > jnp.max(negative, axis=-1)
  return loss, correct


def codebook_perplexity(probs: jax.Array, valid: jax.Array) -> jax.Array:
  """exp(entropy) of each example's mean code distribution over its valid frames.

  Args:
    probs: [batch, frames, codebook_size] per-frame code probabilities.
    valid: [batch, frames] bool or 0/1.
  Returns:
    [batch] float32 in [1, codebook_size].
  """
  weights = valid.astype(jnp.float32)[..., None]
  mean = jnp.sum(probs * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  entropy = -jnp.sum(mean * jnp.log(jnp.maximum(mean, 1e-12)), axis=-1)
  return jnp.exp(entropy)


def diversity_loss(probs: jax.Array, valid: jax.Array) -> jax.Array:
  """(V - perplexity) / V per example: 0 when all codes are used equally, → 1 at collapse.

  Args:
    probs: [batch, frames, V]; valid: [batch, frames].
  Returns:
    [batch] float32.
  """
  size = probs.shape[-1]
  return (size - codebook_perplexity(probs, valid)) / size


def cross_entropy(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-frame softmax cross-entropy and argmax correctness.

  Args:
    logits: [batch, frames, V]; targets: [batch, frames] int.
  Returns:
    (loss [batch, frames] float32, correct [batch, frames] bool).
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  loss = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return loss, jnp.argmax(logits, axis=-1) == targets


def per_example_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """Weighted mean over frames: [batch, frames] values and weights -> [batch] (0 if no weight)."""
  weights = weights.astype(jnp.float32)
  return jnp.sum(values * weights, axis=-1) / jnp.maximum(jnp.sum(weights, axis=-1), 1.0)
