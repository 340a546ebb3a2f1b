"""SoundStream losses and discriminators: zero at identity, monotone in distortion, hinge signs,
feature matching, and the output shapes of every discriminator scale."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.tokenizers.soundstream import SoundStreamDiscriminator, losses
from tests.size_configs import size_config
from tests.tokenizers.soundstream.fast_compile import compile_fast

SR = 24000
TINY = size_config("soundstream", "tiny")


def _music(samples: int = 4800) -> jax.Array:
  """[2, samples]: a chord and a chirp at moderate level."""
  t = np.arange(samples) / SR
  chord = sum(np.sin(2 * np.pi * f * t) for f in (262.0, 330.0, 392.0)) / 3
  chirp = np.sin(2 * np.pi * (100 + 3000 * t) * t)
  return jnp.asarray(0.4 * np.stack([chord, chirp]), jnp.float32)


def _noisy(audio: jax.Array, level: float) -> jax.Array:
  noise = np.random.default_rng(0).normal(size=audio.shape)
  return audio + jnp.asarray(level * noise, jnp.float32)


@functools.cache
def _metrics():
  """Compiled (prediction, target) -> (mel loss, stft loss, mel distance [batch])."""

  def metrics(prediction, target):
    return (
      losses.multiscale_mel_loss(prediction, target, SR),
      losses.multi_resolution_stft_loss(prediction, target),
      losses.mel_distance(prediction, target, SR),
    )

  return compile_fast(metrics, _music(), _music())


def test_reconstruction_losses_vanish_for_identical_audio():
  audio = _music()
  mel, stft, distance = _metrics()(audio, audio)
  assert float(mel) == pytest.approx(0.0, abs=1e-6)
  assert float(stft) == pytest.approx(0.0, abs=1e-6)
  np.testing.assert_allclose(distance, 0.0, atol=1e-6)


def test_reconstruction_losses_grow_with_distortion():
  audio = _music()
  results = [_metrics()(_noisy(audio, level), audio) for level in (0.003, 0.03, 0.3)]
  for metric in range(3):
    values = [np.mean(r[metric]) for r in results]
    assert values[0] > 0 and values[0] < values[1] < values[2], (metric, values)
  silence = _metrics()(jnp.zeros_like(audio), audio)
  assert float(silence[0]) > float(results[0][0])


def test_losses_reject_mismatched_shapes():
  with pytest.raises(ValueError, match="one shape"):
    losses.multiscale_mel_loss(jnp.zeros((1, 4800)), jnp.zeros((1, 4000)), SR)


def test_hinge_losses_values_and_signs():
  confident = [jnp.full((2, 5), 2.0), jnp.full((2, 3, 4), 1.5)]
  wrong = [jnp.full((2, 5), -1.0), jnp.full((2, 3, 4), -1.0)]
  neg = [-x for x in confident]
  assert float(losses.discriminator_hinge_loss(confident, neg)) == 0.0
  # relu(1 - (-1)) + relu(1 + 1) = 4 per scale.
  assert float(losses.discriminator_hinge_loss(wrong, [-x for x in wrong])) == pytest.approx(4.0)
  assert float(losses.generator_hinge_loss(confident)) == 0.0
  assert float(losses.generator_hinge_loss(wrong)) == pytest.approx(2.0)
  # The generator gains by raising the discriminator's logits on its output; the discriminator
  # by raising them on real audio and lowering them on fakes.
  zeros = [jnp.zeros((2, 5))]
  assert float(jax.grad(lambda f: losses.generator_hinge_loss(f))(zeros)[0].sum()) < 0
  real_grad, fake_grad = jax.grad(losses.discriminator_hinge_loss, argnums=(0, 1))(zeros, zeros)
  assert float(real_grad[0].sum()) < 0 < float(fake_grad[0].sum())


def test_feature_matching_is_zero_for_equal_maps_and_scale_free():
  rng = np.random.default_rng(0)
  real = [[jnp.asarray(rng.normal(size=(2, 8, 4)), jnp.float32) for _ in range(3)]]
  fake = [[x + 0.1 * jnp.asarray(rng.normal(size=x.shape), jnp.float32) for x in real[0]]]
  assert float(losses.feature_matching_loss(real, real)) == 0.0
  loss = float(losses.feature_matching_loss(real, fake))
  assert loss > 0
  scaled = float(
    losses.feature_matching_loss([[100 * x for x in real[0]]], [[100 * x for x in fake[0]]])
  )
  assert scaled == pytest.approx(loss, rel=1e-5)
  # Hand-computed: |real - fake| = 1 everywhere, mean |real| = 2 → 0.5.
  assert float(losses.feature_matching_loss([[jnp.full((4,), 2.0)]], [[jnp.ones(4)]])) == 0.5
  assert float(jax.grad(lambda r: losses.feature_matching_loss(r, fake))(real)[0][0].sum()) == 0


@functools.cache
def _discriminator_outputs(samples: int = 4800):
  model = SoundStreamDiscriminator(TINY)
  audio = _music(samples)
  variables = compile_fast(lambda x: model.init(jax.random.key(0), x), audio)(audio)
  return compile_fast(model.apply, variables, audio)(variables, audio)


def _expected_shapes(samples: int, batch: int = 2) -> list[tuple[int, ...]]:
  stft_cfg, wave_cfg = TINY.stft_discriminator, TINY.wave_discriminator
  shapes = []
  for n_fft in stft_cfg.fft_sizes:
    bins = n_fft // 2 + 1
    for _ in stft_cfg.time_dilations:
      bins = -(-bins // 2)
    shapes.append((batch, 1 + samples // (n_fft // 4), bins))
  length = samples
  for scale in range(wave_cfg.num_scales):
    length = length if scale == 0 else length // 2
    shapes.append((batch, length // 4**wave_cfg.num_downsamples))
  return shapes


def test_discriminator_logits_and_features_for_every_scale():
  out = _discriminator_outputs()
  assert [x.shape for x in out.logits] == _expected_shapes(4800)
  stft_cfg, wave_cfg = TINY.stft_discriminator, TINY.wave_discriminator
  num_stft = len(stft_cfg.fft_sizes)
  assert len(out.features) == num_stft + wave_cfg.num_scales
  for i, maps in enumerate(out.features):
    hidden = len(stft_cfg.time_dilations) + 2 if i < num_stft else wave_cfg.num_downsamples + 2
    assert len(maps) == hidden
    assert all(m.shape[0] == 2 and m.ndim == (4 if i < num_stft else 3) for m in maps)
    assert maps[-1].shape[:-1] == out.logits[i].shape
  assert all(np.all(np.isfinite(x)) for x in out.logits)
