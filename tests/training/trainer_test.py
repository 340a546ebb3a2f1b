"""Tests of the sharded train step: mesh-independence, accumulation, the NaN guard, learning.

A tiny semantic-stage LM trains on batches of the synthetic token task, through the same
`stage_tasks` pipeline the train job uses.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from musiclm_jax import stages
from musiclm_jax.data import stage_tasks, synthetic_tokens
from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.models.stage_lm import StageLM
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.training.optimizers import OptimizerConfig, make_optimizer
from musiclm_jax.training.trainer import Trainer

TOKENS = stages.TokenSpec.tiny()
LAYOUT = stages.StageLayout("semantic", TOKENS, 4.0)  # 4 + 16 tokens, vocabulary 128
BATCH_SIZE = 16
MESHES = {
  "2x2x2": MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2),
  "single": MeshConfig(num_devices=1, ici_data=1),
}
OPTIMIZER = OptimizerConfig(
  name="adamw", learning_rate=1e-2, schedule="constant", warmup_steps=0, weight_decay=0.0
)


@pytest.fixture(autouse=True)
def _eight_devices(num_devices):
  if num_devices < 8:
    pytest.skip("needs 8 devices (tests/conftest.py fakes them on CPU)")


def _config(dropout_rate: float) -> TransformerConfig:
  return TransformerConfig(
    num_layers=2,
    num_heads=2,
    head_dim=8,
    d_model=32,
    d_ff=64,
    dropout_rate=dropout_rate,
    relative_attention_num_buckets=16,
    relative_attention_max_distance=64,
  )


class ScaledLossLM(StageLM):
  """A stage LM whose loss is multiplied by a per-batch factor (inf or nan makes it non-finite).

  The factor is a batch feature [batch, 1]; its mean over the batch is used.
  """

  def zeros_batch(self, batch_size):
    return {**super().zeros_batch(batch_size), "loss_scale": jnp.ones((batch_size, 1))}

  def loss_fn(self, params, batch, dropout_rng, loss_normalizer=None, step=None):
    batch = dict(batch)
    scale = jnp.mean(batch.pop("loss_scale"))
    loss, metrics = super().loss_fn(params, batch, dropout_rng, loss_normalizer, step)
    return loss * scale, {**metrics, "loss_sum": metrics["loss_sum"] * scale}


@functools.cache
def _batches(count: int) -> tuple[dict[str, np.ndarray], ...]:
  source = synthetic_tokens.synthetic_token_source(TOKENS, num_clips=64, clip_seconds=8.0, seed=0)
  task = stage_tasks.make_stage_task("trainer_test_semantic", source, LAYOUT)
  dataset = stage_tasks.get_stage_dataset(
    task, LAYOUT, split="train", batch_size=BATCH_SIZE, seed=0
  )
  return tuple(dataset.take(count).as_numpy_iterator())


@functools.cache
def _trainer(
  mesh: str, dropout_rate: float = 0.0, num_microbatches: int = 1, model_cls=StageLM
) -> Trainer:
  model = model_cls(_config(dropout_rate), LAYOUT, z_loss=1e-4)
  return Trainer(
    model,
    make_optimizer(OPTIMIZER),
    Partitioner(MESHES[mesh]),
    batch_size=BATCH_SIZE,
    num_microbatches=num_microbatches,
  )


@functools.cache
def _initial_state(trainer: Trainer):
  """`trainer.init_state(0)`, kept on the host (train steps donate their input state)."""
  return jax.device_get(trainer.init_state(0))


def _train(trainer: Trainer, batches, state=None):
  """Runs one step per batch from `state` (default: the initial state).

  Returns:
    (host state, list of host metrics).
  """
  state = _initial_state(trainer) if state is None else state
  # Placed as the step's outputs are, so every step reuses one compilation.
  state = jax.device_put(state, trainer.state_shardings)
  history = []
  for batch in batches:
    state, metrics = trainer.train_step(state, trainer.partitioner.shard_batch(batch))
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def _max_difference(a, b) -> float:
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a, b)))


def _assert_trees_close(actual, expected, atol):
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, atol=atol, rtol=0), actual, expected)


@pytest.mark.slow
def test_sharded_train_steps_equal_unsharded_ones_with_dropout():
  """data=2 × fsdp=2 × tensor=2 gives the single-device result; dropout masks included."""
  batches = _batches(3)
  sharded_state, sharded = _train(_trainer("2x2x2", dropout_rate=0.1), batches)
  single_state, single = _train(_trainer("single", dropout_rate=0.1), batches)
  assert int(sharded_state.step) == int(single_state.step) == 3
  _assert_trees_close(sharded_state.params, single_state.params, atol=1e-5)
  _assert_trees_close(sharded_state.opt_state, single_state.opt_state, atol=1e-5)
  for a, b in zip(sharded, single):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-5)
  # Dropout was active: the same steps without it end elsewhere.
  no_dropout_state, _ = _train(_trainer("2x2x2"), batches)
  assert _max_difference(no_dropout_state.params, sharded_state.params) > 1e-4


def test_gradient_accumulation_equals_one_big_batch():
  batches = _batches(2)
  accumulated_state, accumulated = _train(_trainer("2x2x2", num_microbatches=2), batches)
  whole_state, whole = _train(_trainer("2x2x2"), batches)
  _assert_trees_close(accumulated_state.params, whole_state.params, atol=1e-5)
  for a, b in zip(accumulated, whole):
    for key in ("loss", "accuracy", "num_tokens", "grad_norm"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
  assert whole[1]["loss"] < whole[0]["loss"]  # a real step was taken


def test_microbatches_must_divide_batch_and_data_parallel_degree():
  model = StageLM(_config(0.0), LAYOUT)
  partitioner = Partitioner(MESHES["2x2x2"])
  with pytest.raises(ValueError, match="not divisible by num_microbatches 3"):
    Trainer(model, make_optimizer(OPTIMIZER), partitioner, batch_size=16, num_microbatches=3)
  with pytest.raises(ValueError, match="not divisible by the data-parallel degree 4"):
    Trainer(model, make_optimizer(OPTIMIZER), partitioner, batch_size=16, num_microbatches=8)


@pytest.mark.parametrize("bad_scale", [np.inf, np.nan])
def test_non_finite_step_keeps_params_and_optimizer_state(bad_scale):
  trainer = _trainer("2x2x2", model_cls=ScaledLossLM)
  bad, good = (
    {**b, "loss_scale": np.full((BATCH_SIZE, 1), s, np.float32)}
    for b, s in zip(_batches(2), (bad_scale, 1.0))
  )
  before = _initial_state(trainer)
  after_bad, (metrics,) = _train(trainer, [bad])
  assert float(metrics["nonfinite"]) == 1.0
  assert not np.isfinite(float(metrics["loss"]))
  assert int(after_bad.step) == 1  # the data moves on
  jax.tree.map(np.testing.assert_array_equal, after_bad.params, before.params)
  jax.tree.map(np.testing.assert_array_equal, after_bad.opt_state, before.opt_state)
  # The next good step is exactly the step the skipped one would have been (no dropout).
  after_good, (metrics,) = _train(trainer, [good], after_bad)
  assert float(metrics["nonfinite"]) == 0.0
  direct, _ = _train(trainer, [good])
  jax.tree.map(np.testing.assert_array_equal, after_good.params, direct.params)
  assert _max_difference(direct.params, before.params) > 1e-3


def test_loss_falls_on_the_synthetic_task():
  _, history = _train(_trainer("2x2x2"), _batches(60))
  losses = np.array([float(m["loss"]) for m in history])
  assert np.all(np.isfinite(losses))
  assert losses[-5:].mean() < 0.5 * losses[0], losses
  assert history[-1]["accuracy"] > 0.5


def test_state_is_created_sharded():
  trainer = _trainer("2x2x2")
  state = trainer.init_state(0)
  kernel = state.params["layers"]["mlp"]["wi_0"]["kernel"]  # [layers, embed, mlp]
  assert kernel.sharding.spec == P(None, "fsdp", "tensor")
  assert not kernel.sharding.is_fully_replicated
  assert {s.data.shape for s in kernel.addressable_shards} == {(2, 16, 32)}
  query = state.params["layers"]["self_attention"]["query"]["kernel"]  # [layers, embed, heads, kv]
  assert query.sharding.spec == P(None, "fsdp", "tensor", None)
  # Adam moments live where their parameters do.
  mu = optax.tree_utils.tree_get(state.opt_state, "mu")["layers"]["mlp"]["wi_0"]["kernel"]
  assert mu.sharding.spec == kernel.sharding.spec
  leaves = jax.tree.leaves(state)
  shardings = jax.tree.leaves(trainer.state_shardings)
  assert len(leaves) == len(shardings)
  for leaf, sharding in zip(leaves, shardings):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.shape, sharding)


def test_eval_step_is_the_deterministic_loss():
  trainer = _trainer("2x2x2", dropout_rate=0.1)
  params = _initial_state(trainer).params
  host_batch = _batches(1)[0]
  metrics = jax.device_get(trainer.eval_step(params, trainer.partitioner.shard_batch(host_batch)))
  _, expected = jax.jit(lambda p, b: trainer.model.loss_fn(p, b, None))(params, host_batch)
  assert float(metrics["weight_sum"]) == BATCH_SIZE * LAYOUT.targets_length
  for key in ("loss_sum", "z_loss_sum", "correct_sum", "weight_sum"):
    np.testing.assert_allclose(metrics[key], expected[key], rtol=1e-5, err_msg=key)
  # With dropout the training loss of the same batch is another number.
  _, (train_metrics,) = _train(trainer, [host_batch])
  eval_loss = float(metrics["loss_sum"] / metrics["weight_sum"])
  assert abs(float(train_metrics["loss"]) - eval_loss) > 1e-4
