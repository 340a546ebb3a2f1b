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
  edges = spectrogram.mel_to_hz(
    np.linspace(spectrogram.hz_to_mel(20.0), spectrogram.hz_to_mel(SR / 2), 130)
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
    spectrogram.mel_filterbank(SR, 1024, 64, fmin=0.0, fmax=SR)


def test_png_is_written(tmp_path):
  path = tmp_path / "deep" / "tone.png"
  spectrogram.save_spectrogram_png(_tone(440.0, 2.0, 0.5), SR, str(path), title="a tone")
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
  assert not list(path.parent.glob("*.tmp*"))
