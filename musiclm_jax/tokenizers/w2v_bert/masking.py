"""Span masking of w2v-BERT frames, computed with jax.random inside jit.

Every real frame starts a masked span with probability `mask_prob`; spans cover `span_length`
frames (cut at the end of the real audio) and may overlap, so a frame far from the edges is
masked with probability 1 - (1 - mask_prob)^span_length (≈ 49% at the paper's 0.065 × 10).
`min_spans` extra spans start at random real frames, so every example with audio has a masked
frame. Padded frames are never masked.

Randomness is per example: each example's key is folded from its audio content
(`example_keys`), so an example gets the same mask whatever batch, microbatch or shard it is
in. That keeps evaluation repeatable and makes microbatched losses add up exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def example_keys(
  key: jax.Array, audio: jax.Array, audio_mask: jax.Array | None = None
) -> jax.Array:
  """One PRNG key per example, from `key` and a hash of the example's real samples.

  Args:
    key: PRNG key.
    audio: [batch, samples] float.
    audio_mask: [batch, samples], 1 on real samples; padded samples do not enter the hash.
  Returns:
    [batch] keys.
  """
  audio = jnp.asarray(audio, jnp.float32)
  if audio_mask is not None:
    audio = jnp.where(jnp.asarray(audio_mask) > 0, audio, 0.0)
  bits = jax.lax.bitcast_convert_type(audio, jnp.uint32)
  # An odd multiplier per position, so that permuted samples hash differently. Wrapping uint32
  # sums are exact in any order, so sharded and unsharded batches agree.
  weights = jnp.arange(audio.shape[-1], dtype=jnp.uint32) * jnp.uint32(2654435761) | jnp.uint32(1)
  digest = jnp.sum(bits * weights, axis=-1, dtype=jnp.uint32)
  return jax.vmap(lambda d: jax.random.fold_in(key, d))(digest)


def _span_mask_one(
  key: jax.Array, valid: jax.Array, mask_prob: float, span_length: int, min_spans: int
) -> jax.Array:
  """[frames] bool valid -> [frames] bool masked, for one example."""
  frames = valid.shape[0]
  start_key, forced_key = jax.random.split(key)
  starts = jax.random.bernoulli(start_key, mask_prob, (frames,)) & valid
  # The `min_spans` real frames with the highest random scores also start a span.
  scores = jnp.where(valid, jax.random.uniform(forced_key, (frames,)), -1.0)
  top_scores, top = jax.lax.top_k(scores, min(min_spans, frames))
  starts = starts.at[top].max(top_scores >= 0.0)
  counts = jnp.cumsum(starts.astype(jnp.int32))
  before = jnp.concatenate([jnp.zeros((span_length,), jnp.int32), counts])[:frames]
  return (counts - before > 0) & valid


def span_mask(
  keys: jax.Array,
  valid: jax.Array,
  *,
  mask_prob: float,
  span_length: int,
  min_spans: int = 1,
) -> jax.Array:
  """Random masked spans over the real frames of each example.

  Args:
    keys: [batch] PRNG keys, one per example (see `example_keys`).
    valid: [batch, frames] bool, False on padded frames.
    mask_prob: probability that a real frame starts a span.
    span_length: frames per span.
    min_spans: spans forced in every example with at least one real frame.
  Returns:
    bool [batch, frames], True on masked frames (always a subset of `valid`).
  """
  one = functools.partial(
    _span_mask_one, mask_prob=mask_prob, span_length=span_length, min_spans=min_spans
  )
  return jax.vmap(one)(keys, valid.astype(bool))
