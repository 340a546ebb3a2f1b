"""The stage LMs' baselines on their eval batches: the per-position majority (unigram) and
repeating the previous frame."""

from __future__ import annotations

import numpy as np
import pytest

from musiclm_jax import stages
from musiclm_jax.jobs.stage_lm import repeat_accuracy, unigram_accuracy


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


def test_repeat_accuracy_compares_each_level_with_its_previous_frame():
  layout = stages.StageLayout("coarse", stages.TokenSpec.tiny(), 1.0)  # 2 coarse levels, 8 frames
  (segment,) = layout.targets_segments
  assert segment.num_levels == 2
  start, n = layout.inputs_length, segment.length
  targets = np.zeros((2, start + n), np.int32)
  # Level 0 (even positions) holds one code throughout; level 1 changes every frame.
  targets[:, start::2] = 7
  targets[:, start + 1 :: 2] = np.arange(n // 2)
  weights = np.zeros_like(targets)
  weights[:, start:] = 1
  # Every position after the first frame: level 0 repeats (all right), level 1 never does.
  assert repeat_accuracy([_batch(targets, weights)], layout) == pytest.approx(0.5)
  # An unweighted frame is neither scored nor used as the previous frame.
  weights[:, start : start + 2] = 0
  assert repeat_accuracy([_batch(targets, weights)], layout) == pytest.approx(0.5)
  weights[:, start + 2 :] = 0
  assert repeat_accuracy([_batch(targets, weights)], layout) == 0.0


def test_repeat_accuracy_of_the_semantic_stage_steps_one_token():
  layout = stages.StageLayout("semantic", stages.TokenSpec.tiny(), 4.0)
  (segment,) = layout.targets_segments
  start = layout.inputs_length
  targets = np.zeros((1, start + segment.length), np.int32)
  targets[0, start:] = np.repeat(np.arange(segment.length // 2), 2)  # each token twice
  weights = np.zeros_like(targets)
  weights[:, start:] = 1
  assert repeat_accuracy([_batch(targets, weights)], layout) == pytest.approx(
    (segment.length // 2) / (segment.length - 1)
  )


def test_swapped_conditioning_moves_only_the_mulan_tokens_one_example_on():
  import jax.numpy as jnp

  from musiclm_jax.jobs.stage_lm import swapped_conditioning
  from tests.models.prefix_lm_features import prefix_lm_features

  layout = stages.StageLayout("coarse", stages.TokenSpec.tiny(), 1.0)
  rng = np.random.default_rng(0)
  inputs = rng.integers(2, layout.vocab_size, (3, layout.inputs_length))
  targets = rng.integers(2, layout.vocab_size, (3, layout.targets_length))
  batch = {k: np.asarray(v) for k, v in prefix_lm_features(layout, inputs, targets).items()}
  swapped = swapped_conditioning(batch, layout)
  span = layout.inputs_segments[0].length  # the MuLan tokens
  np.testing.assert_array_equal(
    swapped["decoder_target_tokens"][:, :span], inputs[[2, 0, 1], :span]
  )
  np.testing.assert_array_equal(
    swapped["decoder_target_tokens"][:, span:], batch["decoder_target_tokens"][:, span:]
  )
  # The decoder still reads its targets shifted right by BOS, and the batch is left as it was.
  shifted = jnp.pad(swapped["decoder_target_tokens"], ((0, 0), (1, 0)))[:, :-1]
  np.testing.assert_array_equal(swapped["decoder_input_tokens"], shifted)
  np.testing.assert_array_equal(batch["decoder_target_tokens"][:, :span], inputs[:, :span])
  for key in ("decoder_loss_weights", "decoder_causal_attention"):
    np.testing.assert_array_equal(swapped[key], batch[key])
  fine = stages.StageLayout("fine", stages.TokenSpec.tiny(), 1.0)
  assert swapped_conditioning(batch, fine) is None  # no MuLan prefix to swap
