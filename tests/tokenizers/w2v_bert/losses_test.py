"""w2v-BERT losses: negatives, InfoNCE, diversity, MLM cross-entropy, per-example means."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.tokenizers.w2v_bert import losses

FRAMES, DIM, K = 24, 16, 6


def _negatives(masked, seed=0, k=K):
  keys = jax.random.split(jax.random.key(seed), masked.shape[0])
  fn = jax.jit(losses.sample_negatives, static_argnums=2)
  return [np.asarray(a) for a in fn(keys, jnp.asarray(masked), k)]


def _masked():
  masked = np.zeros((3, FRAMES), bool)
  masked[0, [1, 2, 3, 10, 11, 20]] = True
  masked[1, 5] = True  # a single masked frame: no distractor exists
  masked[2, 4:16] = True
  return masked


def test_negatives_are_other_masked_frames_of_the_same_example():
  masked = _masked()
  indices, valid = _negatives(masked, k=200)
  assert indices.shape == valid.shape == (3, FRAMES, 200)
  np.testing.assert_array_equal(valid[0], np.broadcast_to(masked[0][:, None], (FRAMES, 200)))
  assert not valid[1].any()
  for b in (0, 2):
    for t in np.flatnonzero(masked[b]):
      drawn = indices[b, t]
      assert masked[b, drawn].all() and not np.any(drawn == t)
      # 200 draws over the other masked frames: all of them are hit.
      assert set(drawn) == set(np.flatnonzero(masked[b])) - {t}


def _contrastive(context, targets, ids, masked, temperature=0.1):
  indices, valid = _negatives(masked)
  loss, correct = jax.jit(losses.contrastive_loss, static_argnums=5)(
    context, targets, ids, indices, valid, temperature
  )
  return np.asarray(loss), np.asarray(correct)


def test_contrastive_loss_is_low_for_matching_context_and_high_otherwise():
  rng = np.random.RandomState(0)
  targets = rng.randn(3, FRAMES, DIM).astype(np.float32)
  ids = np.tile(np.arange(FRAMES), (3, 1))
  masked = np.ones((3, FRAMES), bool)
  loss, correct = _contrastive(3.0 * targets, targets, ids, masked)  # cosine ignores scale
  assert loss.mean() < 0.05 and correct.all()
  random_context = rng.randn(3, FRAMES, DIM).astype(np.float32)
  loss, correct = _contrastive(random_context, targets, ids, masked)
  assert loss.mean() > 1.0 and correct.mean() < 0.6
  shifted = np.roll(targets, 1, axis=1)  # context matches a distractor, never the positive
  loss, correct = _contrastive(shifted, targets, ids, masked)
  assert loss.mean() > 2.0 and not correct.all()


def test_distractors_with_the_positive_code_are_left_out():
  rng = np.random.RandomState(1)
  targets = np.tile(rng.randn(1, 1, DIM), (3, FRAMES, 1)).astype(np.float32)
  ids = np.zeros((3, FRAMES), np.int32)  # every frame has the same code
  loss, correct = _contrastive(
    rng.randn(3, FRAMES, DIM).astype(np.float32), targets, ids, _masked()
  )
  np.testing.assert_allclose(loss, 0.0, atol=1e-6)
  assert correct.all()


def test_diversity_loss_and_perplexity():
  size = 8
  uniform = jnp.full((2, 5, size), 1.0 / size)
  collapsed = jax.nn.one_hot(jnp.zeros((2, 5), jnp.int32), size)
  valid = jnp.ones((2, 5), bool)
  np.testing.assert_allclose(losses.codebook_perplexity(uniform, valid), size, rtol=1e-5)
  np.testing.assert_allclose(losses.diversity_loss(uniform, valid), 0.0, atol=1e-5)
  np.testing.assert_allclose(losses.diversity_loss(collapsed, valid), (size - 1) / size, rtol=1e-5)
  # Two codes used equally on the valid frames; padded frames (another code) do not count.
  ids = jnp.asarray([[0, 1, 0, 1, 5]])
  ppl = losses.codebook_perplexity(jax.nn.one_hot(ids, size), jnp.asarray([[1, 1, 1, 1, 0]]))
  np.testing.assert_allclose(ppl, [2.0], rtol=1e-5)


def test_cross_entropy_and_per_example_mean():
  logits = jnp.asarray([[[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]]])
  targets = jnp.asarray([[0, 2]])
  loss, correct = losses.cross_entropy(logits, targets)
  expected = -jax.nn.log_softmax(logits)[0, [0, 1], [0, 2]]
  np.testing.assert_allclose(loss[0], expected, rtol=1e-6)
  np.testing.assert_array_equal(correct, [[True, False]])
  mean = losses.per_example_mean(
    jnp.asarray([[1.0, 3.0, 100.0], [5.0, 5.0, 5.0]]), jnp.asarray([[1, 1, 0], [0, 0, 0]])
  )
  np.testing.assert_allclose(mean, [2.0, 0.0])
