"""Tests of the stage LM wrapper: cached sampling against uncached references, scoring, loss.

References are plain Python loops over `full_sequence_logits` (one uncached forward pass per
decoded token) that process logits with the sampler's public functions, so `predict_batch`'s
prefill, KV cache and per-position id ranges are all checked against the training code path.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax import stages
from musiclm_jax.checkpoints import (
  CHECKPOINT_SUBDIR,
  CheckpointConfig,
  Checkpointer,
  CheckpointMismatchError,
)
from musiclm_jax.decoding import sampling
from musiclm_jax.jobs import stage_lm as stage_lm_job
from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.models.stage_lm import SamplingConfig, StageLM, load_stage_lm
from tests.models.prefix_lm_features import prefix_lm_features

TOKENS = stages.TokenSpec.tiny()
# semantic: 4 inputs + 16 targets; coarse: 8 inputs + 16 targets alternating two id ranges.
LAYOUTS = {
  "semantic": stages.StageLayout("semantic", TOKENS, 4.0),
  "coarse": stages.StageLayout("coarse", TOKENS, 1.0),
}
CONFIG = TransformerConfig(
  num_layers=2,
  num_heads=2,
  head_dim=8,
  d_model=32,
  d_ff=64,
  dropout_rate=0.0,
  relative_attention_num_buckets=16,
  relative_attention_max_distance=64,
)
BATCH = 3
GREEDY = SamplingConfig(temperature=0.0)
SAMPLE = SamplingConfig(temperature=1.0)


@functools.cache
def _model(stage: str, z_loss: float = 0.0, label_smoothing: float = 0.0) -> StageLM:
  return StageLM(CONFIG, LAYOUTS[stage], z_loss=z_loss, label_smoothing=label_smoothing)


@functools.cache
def _params(stage: str) -> dict:
  model = _model(stage)
  return nn.unbox(jax.jit(model.get_initial_variables)(jax.random.key(0))["params"])


def _random_ids(ranges: np.ndarray, rng: np.random.Generator, batch: int = BATCH) -> np.ndarray:
  """int32 [batch, len(ranges)] ids, each inside its position's [lo, hi)."""
  lo, hi = ranges[:, 0], ranges[:, 1]
  return (lo + rng.integers(0, hi - lo, (batch, len(ranges)))).astype(np.int32)


def _inputs(stage: str, seed: int = 0) -> jax.Array:
  layout = LAYOUTS[stage]
  return jnp.asarray(_random_ids(layout.inputs_id_ranges(), np.random.default_rng(seed)))


def _targets(stage: str, seed: int = 1) -> jax.Array:
  layout = LAYOUTS[stage]
  return jnp.asarray(_random_ids(layout.target_id_ranges(), np.random.default_rng(seed)))


@functools.cache
def _predict(stage: str, sampling_config: SamplingConfig, seed: int, forced: bool = False):
  model = _model(stage)
  predict = jax.jit(model.predict_batch, static_argnames="sampling_config")
  kwargs = {}
  if forced:
    kwargs = dict(forced_targets=_targets(stage), forced_mask=_forced_mask(stage))
  return predict(
    _params(stage),
    _inputs(stage),
    jax.random.key(seed),
    sampling_config=sampling_config,
    **kwargs,
  )


def _forced_mask(stage: str) -> jax.Array:
  rng = np.random.default_rng(5)
  return jnp.asarray(rng.random((BATCH, LAYOUTS[stage].targets_length)) < 0.4)


def _reference_sample(stage, temperature, seed, forced_targets=None, forced_mask=None):
  """Uncached sampling: one full forward pass per token, the sampler's logit processing.

  Returns:
    (tokens [batch, targets_length], summed log-probs of the non-forced tokens [batch]).
  """
  model, layout = _model(stage), LAYOUTS[stage]
  logits_fn = jax.jit(model.full_sequence_logits)
  ranges = jnp.asarray(layout.target_id_ranges(), jnp.int32)
  rng = jax.random.key(seed)
  inputs = _inputs(stage)
  tokens = jnp.zeros((BATCH, layout.targets_length), jnp.int32)
  log_probs = jnp.zeros((BATCH,))
  for i in range(layout.targets_length):
    # Row i depends on targets[:, :i] only, so the zeros after them do not matter.
    logits = logits_fn(_params(stage), inputs, tokens)[:, i]
    processed = sampling.process_logits(logits, temperature=temperature, allowed_range=ranges[i])
    if temperature == 0:
      token = jnp.argmax(processed, axis=-1)
      log_prob = jnp.zeros((BATCH,))
    else:
      token = jax.random.categorical(jax.random.fold_in(rng, i), processed, axis=-1)
      log_prob = jax.nn.log_softmax(processed)[jnp.arange(BATCH), token]
    if forced_mask is not None:
      token = jnp.where(forced_mask[:, i], forced_targets[:, i], token)
      log_prob = jnp.where(forced_mask[:, i], 0.0, log_prob)
    tokens = tokens.at[:, i].set(token)
    log_probs = log_probs + log_prob
  return np.asarray(tokens), np.asarray(log_probs)


@pytest.mark.parametrize("stage", LAYOUTS)
def test_greedy_predict_equals_uncached_greedy_loop(stage):
  output = _predict(stage, GREEDY, seed=0)
  expected, _ = _reference_sample(stage, 0.0, seed=0)
  np.testing.assert_array_equal(np.asarray(output.tokens), expected)
  np.testing.assert_array_equal(np.asarray(output.log_probs), 0.0)
  np.testing.assert_array_equal(np.asarray(output.lengths), LAYOUTS[stage].targets_length)


@pytest.mark.parametrize("stage", LAYOUTS)
def test_sampled_predict_equals_uncached_sampling_with_the_same_rng(stage):
  output = _predict(stage, SAMPLE, seed=7)
  expected, expected_log_probs = _reference_sample(stage, 1.0, seed=7)
  np.testing.assert_array_equal(np.asarray(output.tokens), expected)
  np.testing.assert_allclose(np.asarray(output.log_probs), expected_log_probs, rtol=1e-4)
  # Sampling is not greedy: an untrained model's samples differ from its argmax.
  assert np.any(expected != np.asarray(_predict(stage, GREEDY, seed=0).tokens))


@pytest.mark.parametrize("stage", LAYOUTS)
def test_sampled_ids_lie_in_target_ranges_and_decode(stage):
  layout = LAYOUTS[stage]
  tokens = np.asarray(_predict(stage, SAMPLE, seed=7).tokens)
  ranges = layout.target_id_ranges()
  assert np.all((tokens >= ranges[:, 0]) & (tokens < ranges[:, 1]))
  decoded = layout.decode_targets(tokens)
  np.testing.assert_array_equal(layout.encode_targets(decoded), tokens)
  assert sum(v.size for v in decoded.values()) == tokens.size


def test_forced_targets_are_kept_and_condition_the_rest():
  stage = "semantic"
  forced_targets, forced_mask = _targets(stage), _forced_mask(stage)
  output = _predict(stage, GREEDY, seed=0, forced=True)
  tokens = np.asarray(output.tokens)
  mask = np.asarray(forced_mask)
  np.testing.assert_array_equal(tokens[mask], np.asarray(forced_targets)[mask])
  expected, _ = _reference_sample(stage, 0.0, 0, forced_targets, forced_mask)
  np.testing.assert_array_equal(tokens, expected)
  # The forced tokens change what the model predicts elsewhere.
  unforced = np.asarray(_predict(stage, GREEDY, seed=0).tokens)
  assert np.any(tokens[~mask] != unforced[~mask])


@pytest.mark.parametrize("stage", LAYOUTS)
def test_score_is_minus_loss_times_number_of_targets(stage):
  model, layout = _model(stage), LAYOUTS[stage]
  params = _params(stage)
  batch = prefix_lm_features(layout, _inputs(stage), _targets(stage))
  scores = np.asarray(jax.jit(model.score_batch)(params, batch))
  assert scores.shape == (BATCH,) and np.all(scores < 0)
  loss_fn = jax.jit(lambda p, b: model.loss_fn(p, b, None))
  for i in range(BATCH):
    example = jax.tree.map(lambda x, i=i: x[i : i + 1], batch)
    loss, metrics = loss_fn(params, example)
    assert float(metrics["weight_sum"]) == layout.targets_length
    np.testing.assert_allclose(scores[i], -float(loss) * layout.targets_length, rtol=1e-5)
  # The training batch layout and `full_sequence_logits` see the same sequence.
  logits = model.full_sequence_logits(params, _inputs(stage), _targets(stage))
  log_probs = jax.nn.log_softmax(logits)
  expected = jnp.take_along_axis(log_probs, _targets(stage)[..., None], -1)[..., 0].sum(-1)
  np.testing.assert_allclose(scores, np.asarray(expected), rtol=1e-5)


def test_loss_ignores_positions_with_zero_weight():
  stage = "semantic"
  model, layout = _model(stage), LAYOUTS[stage]
  params = _params(stage)
  batch = prefix_lm_features(layout, _inputs(stage), _targets(stage))
  ignored = layout.inputs_length + np.array([2, 5, 11])
  weights = batch["decoder_loss_weights"].at[:, ignored].set(0)
  batch = {**batch, "decoder_loss_weights": weights}
  loss_fn = jax.jit(lambda b: model.loss_fn(params, b, None))

  def with_targets_changed_at(positions):
    # Only the targets: the inputs (which condition later positions) stay as they are.
    targets = batch["decoder_target_tokens"]
    lo, hi = layout.target_id_ranges()[0]
    changed = lo + (targets[:, positions] - lo + 1) % (hi - lo)
    return {**batch, "decoder_target_tokens": targets.at[:, positions].set(changed)}

  loss, metrics = loss_fn(batch)
  assert float(metrics["weight_sum"]) == BATCH * (layout.targets_length - len(ignored))
  ignored_loss, _ = loss_fn(with_targets_changed_at(ignored))
  assert float(ignored_loss) == pytest.approx(float(loss), abs=1e-6)
  counted_loss, _ = loss_fn(with_targets_changed_at(ignored + 1))
  assert abs(float(counted_loss) - float(loss)) > 1e-3
  # And the loss is the weighted mean of the per-token cross-entropy.
  logits = model.module.apply(
    {"params": params}, batch["decoder_input_tokens"], batch["decoder_causal_attention"]
  )
  token_nll = -jnp.take_along_axis(
    jax.nn.log_softmax(logits), batch["decoder_target_tokens"][..., None], -1
  )[..., 0]
  expected = jnp.sum(token_nll * weights) / jnp.sum(weights)
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)


def test_loss_normalizer_divides_the_summed_loss():
  stage = "semantic"
  model, layout = _model(stage), LAYOUTS[stage]
  batch = prefix_lm_features(layout, _inputs(stage), _targets(stage))
  loss, metrics = model.loss_fn(_params(stage), batch, None)
  scaled, _ = model.loss_fn(_params(stage), batch, None, loss_normalizer=7.0)
  np.testing.assert_allclose(float(scaled), float(metrics["loss_sum"]) / 7.0, rtol=1e-6)
  np.testing.assert_allclose(
    float(loss), float(metrics["loss_sum"] / metrics["weight_sum"]), rtol=1e-6
  )


def test_z_loss_is_added_to_the_loss_and_reported():
  stage = "semantic"
  layout = LAYOUTS[stage]
  batch = prefix_lm_features(layout, _inputs(stage), _targets(stage))
  plain, plain_metrics = _model(stage).loss_fn(_params(stage), batch, None)
  with_z, metrics = _model(stage, z_loss=0.1).loss_fn(_params(stage), batch, None)
  assert float(plain_metrics["z_loss_sum"]) == 0.0
  assert float(metrics["z_loss_sum"]) > 0.0
  np.testing.assert_allclose(
    float(with_z) - float(plain), float(metrics["z_loss_sum"] / metrics["weight_sum"]), rtol=1e-4
  )


def test_every_real_input_token_conditions_the_targets_when_inputs_are_padded():
  stage = "coarse"
  model, layout = _model(stage), LAYOUTS[stage]
  params = _params(stage)
  inputs = _inputs(stage)
  # A short clip under the 'pad' policy: the last two semantic frames of the inputs are PAD.
  inputs = inputs.at[:, -2:].set(stages.PAD_ID)
  batch = prefix_lm_features(layout, inputs, _targets(stage))
  last_real = layout.inputs_length - 3
  lo, hi = layout.inputs_id_ranges()[last_real]
  changed_inputs = inputs.at[:, last_real].set(lo + (inputs[:, last_real] - lo + 1) % (hi - lo))
  changed = prefix_lm_features(layout, changed_inputs, _targets(stage))
  score = jax.jit(model.score_batch)
  assert np.abs(np.asarray(score(params, changed)) - np.asarray(score(params, batch))).max() > 1e-4


# load_stage_lm: a stage LM job's checkpoint back as (model, params, step).


def test_load_stage_lm_rebuilds_the_model_from_its_checkpoint(tmp_path):
  model, params = _model("coarse"), _params("coarse")
  state = {"step": jnp.int32(4), "params": params, "opt_state": optax.adam(1e-3).init(params)}
  config = CheckpointConfig(async_save=False, save_on_sigterm=False)
  metadata = stage_lm_job.model_metadata(model)
  with Checkpointer(tmp_path / CHECKPOINT_SUBDIR, config, metadata=metadata) as checkpointer:
    checkpointer.save(4, state, {"data_batches": 4}, force=True)
  loaded, loaded_params, step = load_stage_lm(str(tmp_path))
  assert (loaded.config, loaded.layout, step) == (CONFIG, LAYOUTS["coarse"], 4)
  jax.tree.map(np.testing.assert_array_equal, loaded_params, jax.device_get(params))


def test_load_stage_lm_refuses_another_models_checkpoint(tmp_path):
  directory = tmp_path / CHECKPOINT_SUBDIR
  config = CheckpointConfig(async_save=False, save_on_sigterm=False)
  with Checkpointer(directory, config, metadata={"model": "soundstream"}) as checkpointer:
    checkpointer.save(1, {"params": {"w": jnp.zeros(3)}}, {}, force=True)
  with pytest.raises(CheckpointMismatchError, match=f"{directory} .*not a stage LM"):
    load_stage_lm(str(tmp_path))


def test_codebook_of_id_gives_each_code_its_levels_range():
  layout = LAYOUTS["coarse"]
  table = layout.codebook_of_id()
  assert table.shape == (layout.padded_vocab_size(), 2)
  for position, (lo, hi) in enumerate(layout.target_id_ranges()):
    assert (table[lo:hi] == (lo, hi)).all(), position
  np.testing.assert_array_equal(table[: stages.NUM_RESERVED_IDS], [[0, 1], [1, 2]])
  assert (table[layout.vocab_size :, 1] - table[layout.vocab_size :, 0] == 1).all()


def test_codebook_softmax_normalises_each_target_over_its_own_codebook():
  stage = "coarse"
  layout = LAYOUTS[stage]
  batch = prefix_lm_features(layout, _inputs(stage), _targets(stage))
  params = _params(stage)
  restricted = StageLM(CONFIG, layout, z_loss=0.0, codebook_softmax=True)
  loss, metrics = restricted.loss_fn(params, batch, None)
  logits = np.asarray(_model(stage)._logits(params, batch, None), np.float64)
  targets, weights = np.asarray(batch["decoder_target_tokens"]), batch["decoder_loss_weights"]
  expected = 0.0
  for b, t in zip(*np.nonzero(np.asarray(weights))):
    lo, hi = layout.codebook_of_id()[targets[b, t]]
    row = logits[b, t, lo:hi]
    expected -= row[targets[b, t] - lo] - np.log(np.exp(row - row.max()).sum()) - row.max()
  np.testing.assert_allclose(float(metrics["loss_sum"]), expected, rtol=1e-4)
  full, _ = _model(stage).loss_fn(params, batch, None)
  assert float(loss) < float(full)  # fewer competitors for every target
  scores = restricted.score_batch(params, batch)
  np.testing.assert_allclose(float(-scores.sum()), expected, rtol=1e-4)


def test_codebook_softmax_with_label_smoothing_is_refused():
  with pytest.raises(ValueError, match="use one of them"):
    StageLM(CONFIG, LAYOUTS["coarse"], label_smoothing=0.1, codebook_softmax=True)


def _masked_full_vocabulary_loss(layout, params, batch, z_loss):
  """The codebook softmax the plain way: full-vocabulary logits at every position, every id
  outside the target's codebook at -1e9 (what `codebook_softmax` computed before it projected
  onto the target codebooks only)."""
  logits = StageLM(CONFIG, layout)._logits(params, batch, None)
  targets = batch["decoder_target_tokens"]
  ranges = jnp.asarray(layout.codebook_of_id(), jnp.int32)[targets]
  ids = jnp.arange(logits.shape[-1])
  logits = jnp.where((ids >= ranges[..., :1]) & (ids < ranges[..., 1:]), logits, -1e9)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  weights = batch["decoder_loss_weights"].astype(jnp.float32)
  loss_sum = jnp.sum((log_z - target_logit + z_loss * log_z**2) * weights)
  correct = jnp.sum((jnp.argmax(logits, -1) == targets) * weights)
  return loss_sum / jnp.sum(weights), correct


FINE_LAYOUT = stages.StageLayout("fine", TOKENS, 1.0)


@pytest.mark.parametrize("layout", [LAYOUTS["semantic"], LAYOUTS["coarse"], FINE_LAYOUT])
def test_codebook_logits_equal_the_masked_full_vocabulary_loss_and_gradient(layout):
  """Loss, gradient and accuracy of the per-codebook projection equal the masked reference,
  with some targets padded (weight 0) as at the end of a short clip."""
  model = StageLM(CONFIG, layout, z_loss=1e-4, codebook_softmax=True)
  params = nn.unbox(jax.jit(model.get_initial_variables)(jax.random.key(3))["params"])
  rng = np.random.default_rng(7)
  targets = _random_ids(layout.target_id_ranges(), rng)
  targets[0, -3:] = stages.PAD_ID
  inputs = _random_ids(layout.inputs_id_ranges(), rng)
  batch = prefix_lm_features(layout, jnp.asarray(inputs), jnp.asarray(targets))
  pad = batch["decoder_target_tokens"] == stages.PAD_ID
  batch["decoder_loss_weights"] = jnp.where(pad, 0, batch["decoder_loss_weights"])  # as tasks do
  (loss, metrics), grads = jax.value_and_grad(
    lambda p: model.loss_fn(p, batch, None), has_aux=True
  )(params)
  (expected, correct), expected_grads = jax.value_and_grad(
    lambda p: _masked_full_vocabulary_loss(layout, p, batch, 1e-4), has_aux=True
  )(params)
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
  assert float(metrics["correct_sum"]) == float(correct)
  assert float(metrics["weight_sum"]) == float(np.sum(batch["decoder_loss_weights"]))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), grads, expected_grads
  )
