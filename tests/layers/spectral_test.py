"""Spectral front end: Slaney mel scale and filterbank, framing, STFT, magnitudes, log-mel."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.layers import spectral


def test_slaney_mel_scale_reference_points():
  # Linear below 1 kHz (3 mels per 200 Hz); 6.4 kHz sits 27 mels above 1 kHz.
  np.testing.assert_allclose(
    spectral.slaney_hz_to_mel([0.0, 200.0, 1000.0, 6400.0]), [0, 3, 15, 42]
  )
  hz = np.array([0.0, 123.0, 999.0, 1000.0, 4321.0, 12000.0])
  np.testing.assert_allclose(
    spectral.slaney_mel_to_hz(spectral.slaney_hz_to_mel(hz)), hz, rtol=1e-12
  )


def test_mel_filterbank_matches_hand_computed_case():
  # sr 2000, n_fft 8: bins at 0, 250, 500, 750, 1000 Hz. Edges on the (linear) Slaney scale at
  # 0, 15/3, 2*15/3, 15 mels = 0, 333.3, 666.7, 1000 Hz; Slaney norm 2 / 666.7 Hz = 0.003.
  filters = spectral.slaney_mel_filterbank(2000, 8, 2)
  expected = 0.003 * np.array([[0, 0], [0.75, 0], [0.5, 0.5], [0, 0.75], [0, 0]])
  assert filters.shape == (5, 2) and filters.dtype == np.float32
  np.testing.assert_allclose(filters, expected, rtol=1e-6, atol=1e-9)


def test_mel_filters_are_triangles_of_unit_area():
  sample_rate, n_fft, n_mels = 16000, 4096, 40
  filters = spectral.slaney_mel_filterbank(sample_rate, n_fft, n_mels)
  edges = spectral.slaney_mel_to_hz(np.linspace(0.0, spectral.slaney_hz_to_mel(8000.0), n_mels + 2))
  bin_hz = sample_rate / n_fft
  for m in range(n_mels):
    column = filters[:, m]
    support = np.flatnonzero(column)
    assert np.all(np.diff(support) == 1), "support is one contiguous run"
    peak = np.argmax(column)
    assert np.all(np.diff(column[support[0] : peak + 1]) >= 0)
    assert np.all(np.diff(column[peak : support[-1] + 1]) <= 0)
    assert column.max() <= 2.0 / (edges[m + 2] - edges[m]) * (1 + 1e-6)
    # Slaney normalisation: the triangle integrates to 1 over Hz.
    np.testing.assert_allclose(column.sum() * bin_hz, 1.0, rtol=0.02)


@pytest.mark.parametrize("frame_length, hop", [(16, 4), (10, 3)])
def test_frame_reshape_and_gather_paths(frame_length, hop):
  signal = jnp.arange(2 * 50, dtype=jnp.float32).reshape(2, 50)
  frames = spectral.frame(signal, frame_length, hop)
  num_frames = 1 + (50 - frame_length) // hop
  expected = np.stack(
    [np.asarray(signal)[:, t * hop : t * hop + frame_length] for t in range(num_frames)], 1
  )
  np.testing.assert_array_equal(frames, expected)


def _numpy_stft(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  padded = np.pad(audio, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  starts = range(0, padded.shape[1] - n_fft + 1, hop)
  return np.stack([np.fft.rfft(padded[:, s : s + n_fft] * window) for s in starts], 1)


@pytest.mark.parametrize("center", [True, False])
def test_stft_of_a_sine_peaks_at_its_bin(center):
  sample_rate, n_fft, hop, bin_index, amplitude = 8000, 256, 64, 20, 0.5
  t = np.arange(4000) / sample_rate
  audio = amplitude * np.sin(2 * np.pi * bin_index * sample_rate / n_fft * t)[None]
  spectrum = spectral.stft(jnp.asarray(audio), n_fft, hop, center=center)
  frames = 1 + 4000 // hop if center else 1 + (4000 - n_fft) // hop
  assert spectrum.shape == (1, frames, n_fft // 2 + 1)
  # Edge frames of the centred STFT see the reflected signal; judge the interior.
  mags = np.asarray(spectral.magnitude(spectrum))[:, 2:-2]
  assert np.all(np.argmax(mags, -1) == bin_index)
  # A Hann-windowed sine of amplitude A on a bin centre reads A * n_fft / 4 there.
  inner = mags[0, 2:-2, bin_index]
  np.testing.assert_allclose(inner, amplitude * n_fft / 4, rtol=1e-3)


def test_stft_matches_numpy_reference():
  audio = np.random.default_rng(0).normal(size=(2, 1000)).astype(np.float32)
  ours = np.asarray(spectral.stft(jnp.asarray(audio), 128, 32))
  np.testing.assert_allclose(ours, _numpy_stft(audio.astype(np.float64), 128, 32), atol=2e-4)


def test_magnitude_gradient_is_finite_at_zero():
  grad = jax.grad(lambda x: spectral.magnitude(spectral.stft(x, 64, 16)).sum())(jnp.zeros((1, 256)))
  assert np.all(np.isfinite(grad))


def test_log_mel_shape_floor_and_tone_band():
  sample_rate, n_fft = 16000, 512
  t = np.arange(8000) / sample_rate
  audio = jnp.asarray(np.stack([np.zeros_like(t), np.sin(2 * np.pi * 1000 * t)]), jnp.float32)
  log_mel = spectral.log_mel_spectrogram(audio, sample_rate, n_fft, 128, n_mels=40, floor=1e-5)
  assert log_mel.shape == (2, 1 + 8000 // 128, 40)
  np.testing.assert_allclose(log_mel[0], np.log(1e-5), rtol=1e-6)
  # The 1 kHz tone lands in the filter whose centre is nearest 1 kHz.
  centres = spectral.slaney_mel_to_hz(np.linspace(0, spectral.slaney_hz_to_mel(8000.0), 42))[1:-1]
  assert int(np.argmax(np.asarray(log_mel[1]).mean(0))) == int(np.argmin(np.abs(centres - 1000)))


def test_bad_filterbank_arguments_raise():
  with pytest.raises(ValueError, match="fmin < fmax"):
    spectral.slaney_mel_filterbank(16000, 512, 40, fmin=100.0, fmax=9000.0)
  with pytest.raises(ValueError, match="shorter than one frame"):
    spectral.frame(jnp.zeros((1, 10)), 16, 4)
