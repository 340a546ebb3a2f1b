"""Tests of the residual vector quantizer: shapes, prefix decoding, EMA learning, k-means init,
dead-code restarts, straight-through gradients, quantizer dropout, sharding and determinism."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from musiclm_jax.tokenizers.rvq import QUANTIZER, ResidualVectorQuantizer, RVQConfig

DIM = 8
CONFIG = RVQConfig(num_levels=8, codebook_size=16, dim=DIM)
_CENTERS = np.random.default_rng(1234).normal(size=(16, DIM)) * 3.0


def _mixture(seed: int, batch: int = 8, frames: int = 64) -> jax.Array:
  """[batch, frames, DIM] samples of a fixed 16-component Gaussian mixture."""
  rng = np.random.default_rng(seed)
  points = _CENTERS[rng.integers(0, len(_CENTERS), (batch, frames))]
  return jnp.asarray(points + 0.7 * rng.normal(size=(batch, frames, DIM)), jnp.float32)


def _init(config: RVQConfig, x: jax.Array) -> dict:
  """The initial `quantizer` collection (random codebooks; the state depends on shapes only)."""
  return _init_fn(config)(jnp.zeros((1, 1, config.dim)))


@functools.cache
def _init_fn(config: RVQConfig):
  model = ResidualVectorQuantizer(config)
  return jax.jit(lambda x: model.init(jax.random.key(0), x, train=False)[QUANTIZER])


@functools.cache
def _train_step(config: RVQConfig):
  """Jitted (state, x [batch, frames, dim], key) -> (RVQOutput, new state)."""
  model = ResidualVectorQuantizer(config)

  def step(state, x, key):
    out, updated = model.apply(
      {QUANTIZER: state}, x, train=True, rngs={QUANTIZER: key}, mutable=[QUANTIZER]
    )
    return out, updated[QUANTIZER]

  return jax.jit(step)


def _train(config: RVQConfig, state: dict, steps: int, data=_mixture) -> tuple[object, dict]:
  out = None
  for i in range(steps):
    out, state = _train_step(config)(state, data(i), jax.random.key(100 + i))
  return out, state


@functools.cache
def _eval_fn(config: RVQConfig, num_levels: int | None):
  model = ResidualVectorQuantizer(config)
  return jax.jit(
    lambda state, x: model.apply({QUANTIZER: state}, x, train=False, num_levels=num_levels)
  )


@functools.cache
def _method_fn(config: RVQConfig, method):
  model = ResidualVectorQuantizer(config)
  return jax.jit(lambda state, x: model.apply({QUANTIZER: state}, x, method=method))


def _eval(config: RVQConfig, state: dict, x: jax.Array, num_levels: int | None = None):
  return _eval_fn(config, num_levels)(state, x)


def _encode(config: RVQConfig, state: dict, x: jax.Array) -> jax.Array:
  return _method_fn(config, ResidualVectorQuantizer.encode)(state, x)


def _decode(config: RVQConfig, state: dict, codes: jax.Array) -> jax.Array:
  return _method_fn(config, ResidualVectorQuantizer.decode)(state, codes)


def _mse(config: RVQConfig, state: dict, x: jax.Array, num_levels: int | None = None) -> float:
  return float(jnp.mean(jnp.square(_eval(config, state, x, num_levels).quantized - x)))


@pytest.mark.parametrize("shape", [(2, 5, DIM), (6, DIM), (2, 3, 4, DIM)])
def test_shapes_dtypes_and_encode_decode(shape):
  x = jax.random.normal(jax.random.key(1), shape)
  state = _init(CONFIG, x)
  out = _eval(CONFIG, state, x)
  assert out.quantized.shape == shape and out.quantized.dtype == jnp.float32
  assert out.codes.shape == shape[:-1] + (CONFIG.num_levels,) and out.codes.dtype == jnp.int32
  assert int(out.codes.min()) >= 0 and int(out.codes.max()) < CONFIG.codebook_size
  assert out.commitment_loss.shape == () and float(out.commitment_loss) > 0
  codes = _encode(CONFIG, state, x)
  np.testing.assert_array_equal(codes, out.codes)
  np.testing.assert_allclose(_decode(CONFIG, state, codes), out.quantized, atol=1e-5)


def test_eval_mode_changes_no_state():
  x = _mixture(0, batch=2, frames=4)
  state = _init(CONFIG, x)
  model = ResidualVectorQuantizer(CONFIG)
  _, updated = jax.jit(
    lambda s, x: model.apply({QUANTIZER: s}, x, train=False, mutable=[QUANTIZER])
  )(state, x)
  jax.tree.map(np.testing.assert_array_equal, updated[QUANTIZER], state)


def test_any_prefix_of_levels_decodes():
  x = jax.random.normal(jax.random.key(1), (2, 5, DIM))
  state = _init(CONFIG, x)
  codes = _encode(CONFIG, state, x)
  previous_error = np.inf
  for levels in (1, 3, CONFIG.num_levels):
    prefix = _decode(CONFIG, state, codes[..., :levels])
    assert prefix.shape == x.shape
    short = _eval(CONFIG, state, x, num_levels=levels)
    np.testing.assert_array_equal(short.codes, codes[..., :levels])
    np.testing.assert_allclose(prefix, short.quantized, atol=1e-5)
    # Greedy residual coding never gets worse with more levels, even with random codebooks.
    error = float(jnp.mean(jnp.square(prefix - x)))
    assert error <= previous_error
    previous_error = error


def test_bf16_input_keeps_dtype():
  x = jax.random.normal(jax.random.key(2), (2, 4, DIM), jnp.bfloat16)
  out = _eval(CONFIG, _init(CONFIG, x), x)
  assert out.quantized.dtype == jnp.bfloat16


def test_bad_arguments_raise():
  x = _mixture(0, batch=2, frames=4)
  state = _init(CONFIG, x)
  model = ResidualVectorQuantizer(CONFIG)
  with pytest.raises(ValueError, match="num_levels"):
    _eval(CONFIG, state, x, num_levels=CONFIG.num_levels + 1)
  with pytest.raises(ValueError, match="Expected input"):
    _eval(CONFIG, state, x[..., :4])
  with pytest.raises(ValueError, match="mutable"):
    model.apply({QUANTIZER: state}, x, train=True, rngs={QUANTIZER: jax.random.key(0)})
  with pytest.raises(ValueError, match="min_levels"):
    RVQConfig(num_levels=2, min_levels=3)


def test_reconstruction_error_falls_as_levels_are_added():
  state = _init(CONFIG, _mixture(0))
  _, state = _train(CONFIG, state, steps=30)
  x = _mixture(10_000)
  errors = [_mse(CONFIG, state, x, levels) for levels in (1, 2, 4, 8)]
  assert all(a > b for a, b in zip(errors, errors[1:])), errors
  assert errors[-1] * 3.0 < errors[0], errors
  assert errors[0] < float(jnp.mean(jnp.square(x))), errors


def test_kmeans_initialisation_fits_the_first_batch():
  x = _mixture(0)
  results = {}
  for kmeans_init in (True, False):
    # Restarts off: only k-means may move the codebook towards the data in one step.
    config = dataclasses.replace(
      CONFIG, kmeans_init=kmeans_init, dead_code_threshold=0.0, quantizer_dropout=False
    )
    state = _init(config, x)
    before = _mse(config, state, x, num_levels=1)
    _, state = _train_step(config)(state, x, jax.random.key(3))
    assert bool(state["initialized"])
    results[kmeans_init] = (before, _mse(config, state, x, num_levels=1))
  before, after = results[True]
  assert after < 0.35 * before, results
  assert after < 0.5 * results[False][1], results


def _far_away_state(config: RVQConfig, x: jax.Array) -> dict:
  """A deliberately bad codebook: every code far from the (unit-scale) data."""
  state = dict(_init(config, x))
  state["codebooks"] = state["codebooks"] * 0.1 + 20.0
  state["embed_sum"] = state["codebooks"] * state["cluster_size"][..., None]
  return state


def test_dead_code_restarts_keep_codebook_usage_high():
  def gaussian(seed):
    return jax.random.normal(jax.random.key(seed), (8, 64, DIM))

  usage = {}
  for threshold in (2.0, 0.0):
    config = RVQConfig(
      num_levels=2,
      codebook_size=64,
      dim=DIM,
      kmeans_init=False,
      quantizer_dropout=False,
      dead_code_threshold=threshold,
    )
    _, state = _train(config, _far_away_state(config, gaussian(0)), steps=20, data=gaussian)
    metrics = _eval(config, state, gaussian(10_000)).metrics
    usage[threshold] = (float(metrics["used_code_fraction"]), float(metrics["perplexity"]))
  print(f"RVQ usage after 20 steps from a far-away init (used fraction, perplexity): {usage}")
  used, perplexity = usage[2.0]
  assert used >= 0.9 and perplexity >= 0.6 * 64, usage
  assert used >= 5 * usage[0.0][0] and perplexity >= 10 * usage[0.0][1], usage


@pytest.mark.parametrize("train", [False, True])
def test_straight_through_gradient_is_identity(train):
  model = ResidualVectorQuantizer(CONFIG)
  x = _mixture(0, batch=2, frames=8)
  weights = jax.random.normal(jax.random.key(4), x.shape)
  state = _init(CONFIG, x)

  def objective(inputs):
    out, _ = model.apply(
      {QUANTIZER: state},
      inputs,
      train=train,
      rngs={QUANTIZER: jax.random.key(5)},
      mutable=[QUANTIZER],
    )
    return jnp.sum(out.quantized * weights)

  np.testing.assert_allclose(jax.jit(jax.grad(objective))(x), weights, rtol=1e-6)


def test_quantizer_dropout_masks_levels_per_example():
  config = dataclasses.replace(CONFIG, num_levels=4, dead_code_threshold=0.0)
  batch, frames = 16, 4
  _, state = _train_step(config)(_init(config, _mixture(0)), _mixture(0), jax.random.key(0))
  x = _mixture(1, batch=batch, frames=frames)
  out, new_state = _train_step(config)(state, x, jax.random.key(6))

  used = out.codes >= 0
  levels = used.sum(-1)  # [batch, frames]
  # Each example uses one prefix of levels, the same on all its frames.
  assert bool(jnp.all(levels == levels[:, :1]))
  np.testing.assert_array_equal(used, np.arange(4) < np.asarray(levels)[..., None])
  assert int(levels.min()) >= 1 and len(np.unique(levels)) > 1
  # The forward value is the sum of the used levels only (codebooks of before the update).
  np.testing.assert_allclose(out.quantized, _decode(config, state, out.codes), atol=1e-5)
  # EMA statistics count only the frames that used each level.
  frames_per_level = np.asarray(used.sum((0, 1)), np.float32)
  decay = config.ema_decay
  expected = decay * state["cluster_size"].sum(-1) + (1 - decay) * frames_per_level
  np.testing.assert_allclose(new_state["cluster_size"].sum(-1), expected, rtol=1e-5)


def test_sharded_update_matches_unsharded(num_devices):
  if num_devices < 8:
    pytest.skip("needs 8 devices (tests/conftest.py forces 8 fake CPU devices)")
  config = dataclasses.replace(CONFIG, num_levels=4)
  mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
  replicated = NamedSharding(mesh, P())
  batch_sharded = NamedSharding(mesh, P("data"))
  step = _train_step(config)
  sharded_step = jax.jit(step.__wrapped__, in_shardings=(replicated, batch_sharded, replicated))
  state = _init(config, _mixture(0))
  sharded_state = jax.device_put(state, replicated)
  for i in range(2):  # k-means initialisation, then a plain EMA step
    x = _mixture(i, batch=16, frames=8)
    key = jax.random.key(20 + i)
    out, state = step(state, x, key)
    sharded_out, sharded_state = sharded_step(sharded_state, jax.device_put(x, batch_sharded), key)
    assert sharded_out.quantized.sharding.spec[0] == "data"
    np.testing.assert_array_equal(sharded_out.codes, out.codes)
    for expected, got in zip(
      jax.tree.leaves((out, state)), jax.tree.leaves((sharded_out, sharded_state))
    ):
      np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_deterministic_for_a_fixed_rng():
  state = _init(CONFIG, _mixture(0))
  x = _mixture(1)
  step = _train_step(CONFIG)
  first = step(state, x, jax.random.key(7))
  again = step(state, x, jax.random.key(7))
  jax.tree.map(np.testing.assert_array_equal, first, again)
  other, _ = step(state, x, jax.random.key(8))
  assert not np.array_equal(other.codes, first[0].codes)
