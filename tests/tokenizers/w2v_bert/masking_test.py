"""Span masking: masked fraction, span lengths, padding, at least one masked frame, per-example keys."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.tokenizers.w2v_bert import masking


@functools.partial(jax.jit, static_argnames=("mask_prob", "span_length", "min_spans"))
def _mask(keys, valid, mask_prob, span_length, min_spans=1):
  return masking.span_mask(
    keys, valid, mask_prob=mask_prob, span_length=span_length, min_spans=min_spans
  )


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


def _runs(row):
  """(start, length) of each run of True in a 1-D bool array."""
  padded = np.concatenate([[False], row, [False]]).astype(int)
  edges = np.flatnonzero(np.diff(padded))
  return list(zip(edges[::2], edges[1::2] - edges[::2]))


def test_masked_fraction_and_span_lengths():
  p, span, frames = 0.065, 10, 400
  valid = np.ones((64, frames), bool)
  masked = np.asarray(_mask(_keys(64), valid, mask_prob=p, span_length=span))
  interior = masked[:, span:].mean()  # away from the start, every frame can be covered
  expected = 1.0 - (1.0 - p) ** span
  assert abs(interior - expected) < 0.03, (interior, expected)
  for row in masked:
    for start, length in _runs(row):
      assert length >= span or start + length == frames, (start, length)


def test_padding_is_never_masked_and_every_example_has_a_masked_frame():
  frames = 50
  lengths = np.array([50, 30, 7, 1, 0])
  valid = np.arange(frames)[None, :] < lengths[:, None]
  for p in (0.0, 0.5):
    masked = np.asarray(_mask(_keys(5, seed=3), valid, mask_prob=p, span_length=4))
    assert not np.any(masked & ~valid)
    np.testing.assert_array_equal(masked.any(-1), lengths > 0)
  # With mask_prob 0 exactly one forced span is left: 4 frames, fewer at the end of the audio.
  masked = np.asarray(_mask(_keys(5, seed=3), valid, mask_prob=0.0, span_length=4))
  for row, length in zip(masked, lengths):
    runs = _runs(row)
    if length:
      assert len(runs) == 1
      start, run = runs[0]
      assert run == min(4, length - start)


def test_min_spans_forces_that_many_spans():
  valid = np.ones((16, 60), bool)
  masked = np.asarray(_mask(_keys(16), valid, mask_prob=0.0, span_length=1, min_spans=3))
  np.testing.assert_array_equal(masked.sum(-1), 3)


def test_example_keys_depend_on_the_example_not_the_batch():
  rng = np.random.RandomState(0)
  audio = jnp.asarray(rng.randn(4, 3000), jnp.float32)
  key = jax.random.key(7)
  keys = jax.jit(masking.example_keys)(key, audio)
  data = np.asarray(jax.random.key_data(keys))
  alone = np.asarray(jax.random.key_data(jax.jit(masking.example_keys)(key, audio[2:3])))
  np.testing.assert_array_equal(alone[0], data[2])
  assert len({tuple(d) for d in data}) == 4
  swapped = audio.at[0, :2].set(audio[0, 1::-1])  # same samples, another order
  other = np.asarray(jax.random.key_data(jax.jit(masking.example_keys)(key, swapped)))
  assert not np.array_equal(other[0], data[0])
  np.testing.assert_array_equal(other[1:], data[1:])
  # Padded samples do not count.
  mask = np.ones((4, 3000), np.float32)
  mask[:, 2000:] = 0.0
  padded = jax.jit(masking.example_keys)(key, audio, mask)
  repadded = jax.jit(masking.example_keys)(key, audio.at[:, 2000:].set(9.0), mask)
  np.testing.assert_array_equal(jax.random.key_data(padded), jax.random.key_data(repadded))
