"""Mel spectrogram numbers and the PNG picture."""

import numpy as np
import pytest

from musiclm_jax.data import spectrogram

SR = 24_000


def _tone(hz: float, seconds: float = 1.0, amplitude: float = 1.0) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("hz", [220.0, 1000.0, 5000.0])
def test_tone_lands_in_its_mel_band_at_its_level(hz):
  log_mel = spectrogram.log_mel_spectrogram(_tone(hz), SR, n_mels=128)
  assert log_mel.shape == (SR // 240 + 1, 128)  # 100 frames per second
  profile = log_mel[10:-10].mean(axis=0)
  edges = spectrogram.htk_mel_to_hz(
    np.linspace(spectrogram.htk_hz_to_mel(20.0), spectrogram.htk_hz_to_mel(SR / 2), 130)
  )
  assert edges[profile.argmax()] <= hz <= edges[profile.argmax() + 2]
  assert -6.0 < profile.max() < 3.0  # full-scale sine reads about 0 dBFS
  quieter = spectrogram.log_mel_spectrogram(_tone(hz, amplitude=0.1), SR)[10:-10].mean(0).max()
  assert profile.max() - quieter == pytest.approx(20.0, abs=0.5)


def test_silence_sits_on_the_floor():
  log_mel = spectrogram.log_mel_spectrogram(np.zeros(SR, np.float32), SR, floor_db=-100.0)
  assert np.all(log_mel == -100.0)


def test_filterbank_rejects_bad_band():
  with pytest.raises(ValueError, match="fmax"):
    spectrogram.htk_mel_filterbank(SR, 1024, 64, fmin=0.0, fmax=SR)


def test_png_is_written(tmp_path):
  path = tmp_path / "deep" / "tone.png"
  spectrogram.save_spectrogram_png(_tone(440.0, 2.0, 0.5), SR, str(path), title="a tone")
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
  assert not list(path.parent.glob("*.tmp*"))


def test_htk_and_slaney_scales_are_named_apart_and_each_follows_its_formula():
  from musiclm_jax.layers import spectral

  # Known points: HTK 2595 log10(1 + f/700); Slaney f / (200/3) below 1 kHz, 27 mels per
  # log(6.4) above.
  np.testing.assert_allclose(spectrogram.htk_hz_to_mel(700.0), 2595.0 * np.log10(2.0))
  np.testing.assert_allclose(spectral.slaney_hz_to_mel(700.0), 10.5)
  np.testing.assert_allclose(spectral.slaney_hz_to_mel(6400.0), 42.0)
  assert abs(spectrogram.htk_hz_to_mel(6400.0) - 2595.0 * np.log10(1 + 6400 / 700)) < 1e-9
  sample_rate, n_fft, n_mels = 16_000, 4096, 40
  fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
  expected = {
    "htk": 700.0
    * (10.0 ** (np.linspace(0.0, 2595 * np.log10(1 + 8000 / 700), n_mels + 2) / 2595) - 1),
    "slaney": spectral.slaney_mel_to_hz(
      np.linspace(0.0, 15 + 27 * np.log(8.0) / np.log(6.4), n_mels + 2)
    ),
  }
  banks = {
    "htk": spectrogram.htk_mel_filterbank(sample_rate, n_fft, n_mels),
    "slaney": spectral.slaney_mel_filterbank(sample_rate, n_fft, n_mels),
  }
  for name, bank in banks.items():  # each filter peaks within a bin of its scale's centre
    peaks = fft_hz[np.argmax(bank, axis=0)]
    np.testing.assert_allclose(peaks, expected[name][1:-1], atol=sample_rate / n_fft)
  assert banks["htk"].max() == pytest.approx(1.0, abs=1e-3)  # peak-1 HTK filters
  assert banks["slaney"].max() < 0.1  # unit-area Slaney filters
  # Where the scales differ (low band: Slaney is linear, HTK is not) the filters sit elsewhere.
  assert np.abs(expected["htk"][1:-1] - expected["slaney"][1:-1]).max() > 100.0
  assert not np.array_equal(np.argmax(banks["htk"], 0), np.argmax(banks["slaney"], 0))
