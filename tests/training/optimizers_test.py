"""Tests of the learning-rate schedules and the optax chains built from OptimizerConfig."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax.training.optimizers import OptimizerConfig, make_optimizer, make_schedule

PEAK = 0.5
WARMUP = 10


def _schedule(**kwargs):
  config = OptimizerConfig(learning_rate=PEAK, warmup_steps=WARMUP, **kwargs)
  schedule = make_schedule(config)
  return lambda step: float(schedule(step))


def test_rsqrt_warms_up_linearly_then_decays_as_inverse_sqrt():
  lr = _schedule(schedule="rsqrt")
  # Step s is the (s + 1)-th update: warmup reaches the peak at step WARMUP - 1.
  for step in range(WARMUP):
    assert lr(step) == pytest.approx(PEAK * (step + 1) / WARMUP)
  assert lr(4 * WARMUP - 1) == pytest.approx(PEAK / 2)
  assert lr(100 * WARMUP - 1) == pytest.approx(PEAK / 10)
  decay = [lr(s) for s in range(WARMUP - 1, 50 * WARMUP)]
  assert np.all(np.diff(decay) < 0)


def test_rsqrt_without_warmup_starts_at_the_peak():
  schedule = make_schedule(OptimizerConfig(learning_rate=PEAK, schedule="rsqrt", warmup_steps=0))
  assert float(schedule(0)) == pytest.approx(PEAK)
  assert float(schedule(3)) == pytest.approx(PEAK / 2)


def test_cosine_endpoints():
  decay_steps, ratio = 100, 0.1
  lr = _schedule(schedule="cosine", decay_steps=decay_steps, end_learning_rate_ratio=ratio)
  assert lr(0) == 0.0
  assert lr(WARMUP // 2) == pytest.approx(PEAK / 2)
  assert lr(WARMUP) == pytest.approx(PEAK)
  midway = WARMUP + (decay_steps - WARMUP) // 2
  assert lr(midway) == pytest.approx(PEAK * ratio + (PEAK - PEAK * ratio) / 2, rel=1e-3)
  assert lr(decay_steps) == pytest.approx(PEAK * ratio)
  assert lr(10 * decay_steps) == pytest.approx(PEAK * ratio)


def test_constant_is_flat_after_warmup():
  lr = _schedule(schedule="constant")
  assert lr(0) == pytest.approx(PEAK / WARMUP)
  for step in (WARMUP - 1, WARMUP, 10 * WARMUP, 10_000):
    assert lr(step) == pytest.approx(PEAK)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(name="sgd"), r"OptimizerConfig.name 'sgd' is not one of \('adamw', 'adafactor'\)"),
    (dict(schedule="linear"), r"OptimizerConfig.schedule 'linear' is not one of"),
  ],
)
def test_bad_names_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    OptimizerConfig(**kwargs)


def _quadratic_problem():
  rng = np.random.default_rng(0)
  # 128 x 256 is large enough for Adafactor to factor its second moments.
  target = {
    "w": jnp.asarray(rng.normal(size=(128, 256)), jnp.float32),
    "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
  }

  def loss(params):
    return sum(jnp.sum(jnp.square(params[k] - target[k])) for k in target)

  return loss, jax.tree.map(jnp.zeros_like, target)


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_optimizers_minimise_a_quadratic(name):
  loss, params = _quadratic_problem()
  optimizer = make_optimizer(
    OptimizerConfig(
      name=name, learning_rate=0.1, schedule="constant", warmup_steps=0, weight_decay=0.0
    )
  )

  @jax.jit
  def run(params):
    def step(carry, _):
      params, state = carry
      grads = jax.grad(loss)(params)
      updates, state = optimizer.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=100)
    return params

  initial = float(loss(params))
  final = float(loss(run(params)))
  assert final < 1e-3 * initial, (initial, final)


@pytest.mark.parametrize("clip, expected_norm", [(1.0, 1.0), (0.0, 100.0)])
def test_gradients_are_clipped_to_the_global_norm(clip, expected_norm):
  """Adam's first moment after one step is (1 - b1) times the gradient it was given."""
  config = OptimizerConfig(name="adamw", clip_grad_norm=clip, b1=0.9)
  optimizer = make_optimizer(config)
  params = {"a": jnp.zeros((4,)), "b": jnp.zeros((2, 3))}
  grads = {"a": jnp.full((4,), 3.0), "b": jnp.full((2, 3), -1.0)}
  grads = jax.tree.map(lambda g: g * 100.0 / optax.global_norm(grads), grads)  # norm 100
  _, state = optimizer.update(grads, optimizer.init(params), params)
  mu = optax.tree_utils.tree_get(state, "mu")
  assert float(optax.global_norm(mu)) == pytest.approx(0.1 * expected_norm, rel=1e-5)
  # Clipping scales every leaf alike: the direction is kept.
  np.testing.assert_allclose(mu["a"] / mu["a"][0], 1.0)


def test_weight_decay_shrinks_parameters_without_gradient():
  config = OptimizerConfig(
    name="adamw", learning_rate=0.1, schedule="constant", warmup_steps=0, weight_decay=0.5
  )
  optimizer = make_optimizer(config)
  params = {"w": jnp.full((3,), 2.0)}
  updates, _ = optimizer.update({"w": jnp.zeros((3,))}, optimizer.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], 2.0 - 0.1 * 0.5 * 2.0)
