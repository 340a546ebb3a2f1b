"""The stage LMs' unigram baseline: the per-position majority accuracy of the eval batches."""

from __future__ import annotations

import numpy as np
import pytest

from musiclm_jax.jobs.stage_lm import unigram_accuracy


def _batch(targets, weights):
  return {
    "decoder_target_tokens": np.array(targets, np.int32),
    "decoder_loss_weights": np.array(weights, np.int32),
  }


def test_unigram_accuracy_is_the_per_position_majority():
  batches = [
    _batch([[5, 1, 0], [5, 2, 0]], [[1, 1, 0], [1, 1, 0]]),
    _batch([[7, 2, 9]], [[1, 1, 0]]),
  ]
  # position 0: 5,5,7 -> 2 right; position 1: 1,2,2 -> 2 right; position 2 unweighted.
  assert unigram_accuracy(batches) == pytest.approx(4 / 6)


def test_unigram_accuracy_of_constant_and_of_uniform_targets():
  assert unigram_accuracy([_batch([[3, 3]] * 4, [[1, 1]] * 4)]) == 1.0
  ids = np.arange(100).reshape(100, 1)
  assert unigram_accuracy([_batch(ids, np.ones_like(ids))]) == pytest.approx(0.01)
