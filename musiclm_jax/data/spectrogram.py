"""Mel spectrograms of audio clips, and PNG pictures of them for people to look at.

The numbers are NumPy (this is an inspection tool for the data layer, which never imports model
code); the tokenizers compute their own features in JAX. The mel scale here is HTK's
(`htk_hz_to_mel`, `htk_mel_filterbank`, peak-1 filters); the tokenizers' (`layers/spectral.py`)
is Slaney's (`slaney_*`, unit-area filters), so the two names never mean the same thing.
"""

from __future__ import annotations

import numpy as np

from musiclm_jax.runtime.atomic import atomic_path


def htk_hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
  """HTK mel scale: 2595 log10(1 + f / 700)."""
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def htk_mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def htk_mel_filterbank(
  sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
  """Triangular mel filters with peak 1 (HTK-style), so a pure tone reads at its own level.

  Returns:
    float32 [n_fft // 2 + 1, n_mels].
  """
  fmax = sample_rate / 2 if fmax is None else fmax
  if not 0 <= fmin < fmax <= sample_rate / 2:
    raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}")
  fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
  edges_hz = htk_mel_to_hz(np.linspace(htk_hz_to_mel(fmin), htk_hz_to_mel(fmax), n_mels + 2))
  lower, center, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
  rising = (fft_hz[:, None] - lower) / (center - lower)
  falling = (upper - fft_hz[:, None]) / (upper - center)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def stft_power(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """Power spectrogram with a Hann window, frames centred by reflect padding.

  Args:
    audio: float [samples], mono.
  Returns:
    float32 [frames, n_fft // 2 + 1], frames = samples // hop + 1.
  """
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 1:
    raise ValueError(f"expected mono audio [samples], got shape {audio.shape}")
  pad_mode = "reflect" if audio.size > n_fft // 2 else "constant"
  padded = np.pad(audio, n_fft // 2, mode=pad_mode)
  num_frames = 1 + (padded.size - n_fft) // hop
  frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:num_frames]
  spectrum = np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1].astype(np.float32), axis=-1)
  return (np.abs(spectrum) ** 2).astype(np.float32)


def log_mel_spectrogram(
  audio: np.ndarray,
  sample_rate: int,
  *,
  n_fft: int = 2048,
  hop_seconds: float = 0.01,
  n_mels: int = 128,
  fmin: float = 20.0,
  fmax: float | None = None,
  floor_db: float = -100.0,
) -> np.ndarray:
  """Log-mel spectrogram in dB relative to full scale.

  Args:
    audio: float [samples] in [-1, 1].
  Returns:
    float32 [frames, n_mels], 100 frames per second with the default hop.
  """
  hop = max(1, round(hop_seconds * sample_rate))
  power = stft_power(audio, n_fft, hop) / (n_fft / 4) ** 2  # a full-scale sine peaks near 0 dB
  mel = power @ htk_mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  return np.maximum(10.0 * np.log10(np.maximum(mel, 1e-20)), floor_db).astype(np.float32)


def save_spectrogram_png(
  audio: np.ndarray, sample_rate: int, path: str, title: str | None = None
) -> None:
  """Writes a PNG with the waveform above its log-mel spectrogram (time in seconds).

  Args:
    audio: float [samples], mono, in [-1, 1].
    sample_rate: samples per second of `audio`.
    path: the PNG to write (parent directories are created; written atomically).
    title: a line above the plot, e.g. the clip's caption.
  """
  import matplotlib

  matplotlib.use("Agg")  # no display on training hosts
  from matplotlib import pyplot as plt

  audio = np.asarray(audio, np.float32)
  log_mel = log_mel_spectrogram(audio, sample_rate)
  seconds = audio.size / sample_rate
  fig, (wave_ax, mel_ax) = plt.subplots(
    2, 1, figsize=(10, 5), sharex=True, gridspec_kw={"height_ratios": [1, 3]}
  )
  wave_ax.plot(np.arange(audio.size) / sample_rate, audio, linewidth=0.3, color="k")
  wave_ax.set(ylim=(-1, 1), ylabel="amplitude")
  image = mel_ax.imshow(
    log_mel.T,
    origin="lower",
    aspect="auto",
    extent=(0.0, seconds, 0, log_mel.shape[1]),
    vmin=max(float(log_mel.max()) - 80.0, -100.0),
    cmap="magma",
  )
  mel_ax.set(xlabel="seconds", ylabel="mel bin (20 Hz to Nyquist)")
  fig.colorbar(image, ax=[wave_ax, mel_ax], label="dBFS", shrink=0.8)
  if title:
    fig.suptitle(title if len(title) <= 110 else title[:107] + "...", fontsize=9)
  with atomic_path(path) as tmp_path:
    fig.savefig(tmp_path, dpi=100, format="png")
  plt.close(fig)
