"""Symmetric InfoNCE (clip_loss) and cycle consistency (mcc): limits, symmetry, masking, grads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.models.contrastive import clip_loss, mcc


def _unit(rng: np.random.RandomState, batch: int = 6, dim: int = 16) -> np.ndarray:
  x = rng.randn(batch, dim).astype(np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference(audio, text, scale):
  """Per-example symmetric InfoNCE in float64 NumPy."""
  logits = scale * audio.astype(np.float64) @ text.astype(np.float64).T

  def ce(x):
    m = x.max(-1, keepdims=True)
    return np.log(np.exp(x - m).sum(-1)) + m[:, 0] - np.diagonal(x)

  return 0.5 * (ce(logits) + ce(logits.T))


@jax.jit
def _loss(audio, text, scale, valid):
  return clip_loss(audio, text, scale, valid)


def _all(batch):
  return np.ones((batch,), bool)


def test_identical_pairs_with_a_large_scale_give_zero_loss_and_full_accuracy():
  emb = np.eye(6, 16, dtype=np.float32)  # orthogonal unit vectors
  out = _loss(emb, emb, 100.0, _all(6))
  np.testing.assert_allclose(out.loss, 0.0, atol=1e-6)
  np.testing.assert_array_equal(out.audio_to_text_correct, 1.0)
  np.testing.assert_array_equal(out.text_to_audio_correct, 1.0)


def test_permuted_pairs_give_a_high_loss_and_no_correct_retrievals():
  emb = np.eye(6, 16, dtype=np.float32)
  out = _loss(emb, np.roll(emb, 1, axis=0), 100.0, _all(6))
  assert np.all(np.asarray(out.loss) > 50.0)  # ≈ scale · 1: the wrong text wins by cos 1
  np.testing.assert_array_equal(out.audio_to_text_correct, 0.0)
  np.testing.assert_array_equal(out.text_to_audio_correct, 0.0)


def test_matches_a_numpy_reference_and_is_symmetric():
  rng = np.random.RandomState(0)
  audio, text = _unit(rng), _unit(rng)
  out = _loss(audio, text, 7.0, _all(6))
  np.testing.assert_allclose(out.loss, _reference(audio, text, 7.0), rtol=1e-5)
  swapped = _loss(text, audio, 7.0, _all(6))
  np.testing.assert_allclose(swapped.loss, out.loss, rtol=1e-6)
  np.testing.assert_allclose(swapped.audio_to_text_loss, out.text_to_audio_loss, rtol=1e-6)
  np.testing.assert_allclose(swapped.text_to_audio_correct, out.audio_to_text_correct)


def test_invalid_examples_score_nothing_and_are_no_negatives():
  rng = np.random.RandomState(1)
  audio, text = _unit(rng), _unit(rng)
  valid = np.array([1, 1, 0, 1, 0, 1], bool)
  out = _loss(audio, text, 5.0, valid)
  kept = _loss(audio[valid], text[valid], 5.0, _all(4))
  np.testing.assert_allclose(np.asarray(out.loss)[valid], kept.loss, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(out.loss)[~valid], 0.0)
  np.testing.assert_array_equal(np.asarray(out.audio_to_text_correct)[~valid], 0.0)


def test_gradient_reaches_the_scale_and_both_embeddings():
  rng = np.random.RandomState(2)
  audio, text = _unit(rng), _unit(rng)

  def total(a, t, s):
    return jnp.sum(clip_loss(a, t, s).loss)

  grads = jax.jit(jax.grad(total, argnums=(0, 1, 2)))(audio, text, jnp.float32(3.0))
  for g in grads:
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0.0


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_mcc_is_the_cosine_of_paired_rows(scale):
  rng = np.random.RandomState(3)
  text, audio = _unit(rng, 4), _unit(rng, 4)
  expected = np.sum(text * audio, axis=-1)
  np.testing.assert_allclose(mcc(text * scale, audio * 2.0), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mcc(text, text), 1.0, rtol=1e-6)
  np.testing.assert_allclose(mcc(text, -text), -1.0, rtol=1e-6)
