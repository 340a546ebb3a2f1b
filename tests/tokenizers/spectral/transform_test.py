"""The spectral codec's STFT on the codec's frame grid, its exact inverse, and Griffin-Lim."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.tokenizers.spectral import transform

N_FFT, HOP = 1920, 480


def _tone(seconds: float = 0.5, freq: float = 440.0) -> np.ndarray:
  t = np.arange(int(seconds * 24_000)) / 24_000
  return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None]


def test_frames_are_samples_over_hop_and_the_inverse_is_exact():
  audio = np.random.default_rng(0).normal(size=(2, 24 * HOP)).astype(np.float32)
  spectra = transform.stft(audio, N_FFT, HOP)
  assert spectra.shape == (2, 24, N_FFT // 2 + 1)
  np.testing.assert_allclose(transform.istft(spectra, N_FFT, HOP), audio, atol=2e-6)


@pytest.mark.parametrize("n_fft", [HOP * 3, HOP * 8])
def test_other_overlaps_invert_too(n_fft):
  audio = np.random.default_rng(1).normal(size=(1, 10 * HOP)).astype(np.float32)
  np.testing.assert_allclose(
    transform.istft(transform.stft(audio, n_fft, HOP), n_fft, HOP), audio, atol=2e-6
  )


def test_frame_t_is_centred_on_sample_t_times_hop():
  click = np.zeros((1, 12 * HOP), np.float32)
  click[0, 5 * HOP] = 1.0
  energy = np.abs(np.asarray(transform.stft(click, N_FFT, HOP)[0])).sum(-1)
  assert int(energy.argmax()) == 5


def test_griffin_lim_finds_a_signal_with_the_given_magnitudes():
  """Spectral convergence ||(|STFT(y)| - M)|| / ||M|| of a chord from its magnitudes alone."""
  chord = _tone(freq=261.6) + _tone(freq=329.6) + _tone(freq=392.0)
  magnitudes = jnp.abs(transform.stft(chord, N_FFT, HOP))
  convergence = {}
  for iters in (0, 32):
    audio = transform.griffin_lim(magnitudes, N_FFT, HOP, iters, 0.99)
    assert audio.shape == chord.shape
    rebuilt = jnp.abs(transform.stft(audio, N_FFT, HOP))
    convergence[iters] = float(jnp.linalg.norm(rebuilt - magnitudes) / jnp.linalg.norm(magnitudes))
  assert convergence[32] < 0.15 < convergence[0], convergence
