"""Tests of the token losses against direct numpy formulas."""

import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.models import losses

VOCAB = 11


def _logits_and_targets(seed: int = 0, shape=(3, 5)):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0.0, 3.0, shape + (VOCAB,)).astype(np.float32)
  targets = rng.integers(0, VOCAB, shape)
  return logits, targets


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  logits = logits.astype(np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_cross_entropy_is_minus_log_softmax_of_the_target():
  logits, targets = _logits_and_targets()
  loss, z_term = losses.cross_entropy_with_logits(jnp.asarray(logits), jnp.asarray(targets))
  expected = -np.take_along_axis(_log_softmax(logits), targets[..., None], -1)[..., 0]
  assert loss.shape == targets.shape and loss.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(z_term), 0.0)


def test_cross_entropy_accepts_bfloat16_logits():
  logits, targets = _logits_and_targets()
  low = jnp.asarray(logits, jnp.bfloat16)
  loss, _ = losses.cross_entropy_with_logits(low, jnp.asarray(targets))
  assert loss.dtype == jnp.float32
  expected = -np.take_along_axis(
    _log_softmax(np.asarray(low.astype(jnp.float32))), targets[..., None], -1
  )[..., 0]
  np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-5)


@pytest.mark.parametrize("z_loss", [1e-4, 0.5])
def test_z_loss_adds_z_loss_times_squared_log_normaliser(z_loss):
  logits, targets = _logits_and_targets(1)
  plain, _ = losses.cross_entropy_with_logits(jnp.asarray(logits), jnp.asarray(targets))
  total, z_term = losses.cross_entropy_with_logits(
    jnp.asarray(logits), jnp.asarray(targets), z_loss=z_loss
  )
  log_z = np.log(np.exp(logits.astype(np.float64)).sum(-1))
  np.testing.assert_allclose(np.asarray(z_term), z_loss * log_z**2, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(total), np.asarray(plain) + z_loss * log_z**2, rtol=1e-5)


def test_z_loss_is_zero_for_normalised_logits():
  logits, targets = _logits_and_targets(2)
  normalised = _log_softmax(logits).astype(np.float32)  # logsumexp = 0
  _, z_term = losses.cross_entropy_with_logits(
    jnp.asarray(normalised), jnp.asarray(targets), z_loss=1.0
  )
  np.testing.assert_allclose(np.asarray(z_term), 0.0, atol=1e-6)


def test_label_smoothing_of_a_perfect_prediction_is_about_zero():
  """Logits equal to the log of the smoothed target distribution score (near) zero."""
  smoothing = 0.1
  targets = np.array([[0, 3, 10], [5, 5, 1]])
  smoothed = np.full(targets.shape + (VOCAB,), smoothing / (VOCAB - 1))
  np.put_along_axis(smoothed, targets[..., None], 1.0 - smoothing, -1)
  loss, _ = losses.cross_entropy_with_logits(
    jnp.asarray(np.log(smoothed), jnp.float32), jnp.asarray(targets), label_smoothing=smoothing
  )
  np.testing.assert_allclose(np.asarray(loss), 0.0, atol=1e-5)
  # A confident one-hot prediction is no longer perfect under smoothing.
  one_hot = np.where(np.arange(VOCAB) == targets[..., None], 20.0, 0.0).astype(np.float32)
  confident, _ = losses.cross_entropy_with_logits(
    jnp.asarray(one_hot), jnp.asarray(targets), label_smoothing=smoothing
  )
  assert np.all(np.asarray(confident) > 0.5)


def test_label_smoothing_is_cross_entropy_with_soft_targets_minus_their_entropy():
  smoothing = 0.2
  logits, targets = _logits_and_targets(3)
  soft = np.full(targets.shape + (VOCAB,), smoothing / (VOCAB - 1))
  np.put_along_axis(soft, targets[..., None], 1.0 - smoothing, -1)
  entropy = -(soft * np.log(soft)).sum(-1)
  expected = -(soft * _log_softmax(logits)).sum(-1) - entropy
  loss, _ = losses.cross_entropy_with_logits(
    jnp.asarray(logits), jnp.asarray(targets), label_smoothing=smoothing
  )
  np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-5)


def test_weighted_sum_counts_only_weighted_positions():
  values = jnp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
  weights = jnp.asarray([[1, 0, 1], [0, 0, 2]])
  total = losses.weighted_sum(values, weights)
  assert total.dtype == jnp.float32
  assert float(total) == 1.0 + 3.0 + 12.0
