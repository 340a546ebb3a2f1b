"""The adversarial trainer on the tiny codec: sharded == unsharded, NaN guard, learning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax.models.soundstream import CodecLossConfig, SoundStreamGAN
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.training import optimizers
from musiclm_jax.training.gan_trainer import DISCRIMINATOR, GENERATOR, GanTrainer
from tests.size_configs import size_config

SR = 24_000
CROP = 480 * 8
BATCH = 8


def _adam(lr: float = 3e-3) -> optax.GradientTransformation:
  return optimizers.make_optimizer(
    optimizers.OptimizerConfig(
      learning_rate=lr, schedule="constant", warmup_steps=0, b1=0.5, b2=0.9, weight_decay=0.0
    )
  )


def _model(adversarial_start_step: int = 0) -> SoundStreamGAN:
  loss = CodecLossConfig(adversarial_start_step=adversarial_start_step)
  return SoundStreamGAN(size_config("soundstream", "tiny"), loss, crop_samples=CROP)


def _trainer(mesh: MeshConfig, optimizer: optax.GradientTransformation) -> GanTrainer:
  optimizers_ = {GENERATOR: optimizer, DISCRIMINATOR: optimizer}
  return GanTrainer(_model(), optimizers_, Partitioner(mesh), batch_size=BATCH)


def _music_batch(seed: int = 0) -> dict[str, np.ndarray]:
  """Two-note chords with decays: structured audio a tiny codec can learn quickly."""
  rng = np.random.default_rng(seed)
  t = np.arange(CROP) / SR
  freqs = rng.uniform(110.0, 880.0, size=(BATCH, 2, 1))
  audio = 0.3 * np.sin(2 * np.pi * freqs * t).sum(axis=1) * np.exp(-3.0 * t)
  return {"audio": audio.astype(np.float32)}


SINGLE = MeshConfig(num_devices=1, ici_data=1)


@pytest.fixture(scope="module")
def single():
  return _trainer(SINGLE, _adam())


def _flat(tree) -> dict[str, np.ndarray]:
  return {
    jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def _assert_close_to_scale(a: np.ndarray, b: np.ndarray, tolerance: float) -> None:
  """|a - b| within `tolerance` of the leaf's largest magnitude (bias gradients are sums with
  heavy cancellation, so element-wise relative error is meaningless for them)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert np.max(np.abs(a - b)) <= tolerance * max(np.max(np.abs(a)), 1e-12)


@pytest.mark.slow
def test_sharded_step_equals_unsharded(num_devices):
  """One step on a 2×2×2 mesh equals one on a single device. Plain SGD, so parameters differ
  by lr × gradient rounding (Adam's first step is lr × sign(g) and would turn rounding noise in
  near-zero gradients into lr-sized differences). A sharding mistake (per-shard batch
  statistics, a missing all-reduce) shows up as differences of order one."""
  if num_devices < 8:
    pytest.skip("needs 8 devices")
  results = []
  for mesh in (SINGLE, MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2)):
    trainer = _trainer(mesh, optax.sgd(1e-2))
    state = trainer.init_state(seed=1)
    state, metrics = trainer.train_step(state, trainer.partitioner.shard_batch(_music_batch()))
    results.append(jax.device_get((state.params, state.model_state, metrics)))
  (params_1, state_1, metrics_1), (params_8, state_8, metrics_8) = results
  jax.tree.map(lambda a, b: _assert_close_to_scale(a, b, 5e-3), params_1, params_8)
  # EMA statistics are global: every frame of the global batch is counted once per level. A few
  # frames near a Voronoi boundary may land in a neighbouring code under another reduction order.
  sizes_1 = jax.tree.leaves({k: v for k, v in _flat(state_1).items() if "cluster_size" in k})[0]
  sizes_8 = jax.tree.leaves({k: v for k, v in _flat(state_8).items() if "cluster_size" in k})[0]
  np.testing.assert_allclose(sizes_1.sum(-1), sizes_8.sum(-1), rtol=1e-5)
  assert np.mean(np.isclose(sizes_1, sizes_8, atol=1e-3)) >= 0.85
  for key in ("generator_loss", "discriminator_loss", "generator/mel_loss"):
    np.testing.assert_allclose(metrics_1[key], metrics_8[key], rtol=1e-5)


def test_nonfinite_audio_skips_both_updates(single):
  state = single.init_state(seed=0)
  before = jax.device_get((state.params, state.model_state, state.opt_state))
  batch = _music_batch()
  batch["audio"][0, 5] = np.nan
  state, metrics = single.train_step(state, batch)
  assert float(metrics["nonfinite"]) == 1.0 and int(state.step) == 1
  after = jax.device_get((state.params, state.model_state, state.opt_state))
  jax.tree.map(np.testing.assert_array_equal, before, after)


@pytest.mark.slow
def test_generator_learns_and_discriminator_trains(single):
  state = single.init_state(seed=0)
  batch = _music_batch()
  history = []
  for _ in range(40):
    state, metrics = single.train_step(state, batch)
    history.append(jax.device_get(metrics))
  first, last = history[0], history[-10:]
  mean = lambda key: np.mean([m[key] for m in last])  # noqa: E731  (GAN losses oscillate)
  assert mean("generator/mel_loss") < 0.4 * first["generator/mel_loss"]
  assert mean("discriminator/hinge_loss") < first["discriminator/hinge_loss"]
  assert mean("discriminator/real_logit") > mean("discriminator/fake_logit") + 0.5
  evaluated = jax.device_get(single.eval_step(state, batch))
  assert evaluated["mel_distance_all_levels"] < 0.7 * evaluated["mel_distance_silence"]


def test_adversarial_terms_wait_for_their_start_step():
  model = _model(adversarial_start_step=5)
  variables = jax.jit(model.get_initial_variables)(jax.random.key(0))
  gen_params = variables[GENERATOR]["params"]
  gen_state = {"quantizer": variables[GENERATOR]["quantizer"]}
  disc_params = variables[DISCRIMINATOR]["params"]
  batch = {"audio": jnp.asarray(_music_batch()["audio"][:2])}
  generator_loss, discriminator_loss = (
    jax.jit(model.generator_loss),
    jax.jit(model.discriminator_loss),
  )
  losses = {}
  for step in (4, 5):
    gen_loss, (metrics, _, fake) = generator_loss(
      gen_params, gen_state, disc_params, batch, jax.random.key(1), jnp.asarray(step)
    )
    disc_loss, _ = discriminator_loss(disc_params, batch, fake, jnp.asarray(step))
    losses[step] = (float(gen_loss), float(disc_loss), metrics)
  (gen_before, disc_before, before), (gen_after, disc_after, metrics) = losses[4], losses[5]
  assert disc_before == 0.0 and disc_after > 0.0
  # Before the start the discriminator is skipped (lax.cond), not weighted by zero.
  assert before["adversarial_loss"] == 0.0 and before["feature_matching_loss"] == 0.0
  adversarial = metrics["adversarial_loss"] + 3.0 * metrics["feature_matching_loss"]
  np.testing.assert_allclose(gen_after - gen_before, adversarial, rtol=1e-4)
