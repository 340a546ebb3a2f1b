"""Spectral front ends in JAX: framing, STFT, magnitudes, Slaney mel filterbanks, log-mel.

Shared by the SoundStream losses and STFT discriminator and by the w2v-BERT and MuLan front ends.
Audio is `[..., samples]` (usually `[batch, samples]`); spectrograms are `[..., frames, bins]`,
time before frequency, so they feed dense layers and 2-D convolutions (NHWC) directly.

The mel filterbank follows librosa's `filters.mel(htk=False, norm='slaney')`: Slaney's auditory
mel scale (linear below 1 kHz, logarithmic above) and filters scaled to unit area in Hz. It is a
NumPy constant, computed once at trace time, so it costs nothing inside `jit`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Slaney mel scale (librosa `hz_to_mel(htk=False)`): 3 mels per 200 Hz below 1 kHz, then a
# constant log step chosen so that 6.4 kHz lies 27 mels above 1 kHz.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def slaney_hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
  """Slaney mel of frequencies in Hz (float64 NumPy, same shape)."""
  hz = np.asarray(hz, np.float64)
  linear = hz / _F_SP
  log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
  return np.where(hz >= _MIN_LOG_HZ, log, linear)


def slaney_mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
  """Inverse of `slaney_hz_to_mel` (float64 NumPy, same shape)."""
  mel = np.asarray(mel, np.float64)
  linear = mel * _F_SP
  log = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel - _MIN_LOG_MEL))
  return np.where(mel >= _MIN_LOG_MEL, log, linear)


def slaney_mel_filterbank(
  sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
  """Slaney-normalised triangular mel filters (librosa `filters.mel(htk=False, norm='slaney')`).

  Filter m rises linearly from edge f[m] to 1 at f[m+1] and falls to 0 at f[m+2], where f are
  n_mels + 2 points equally spaced on the Slaney mel scale between fmin and fmax; it is then
  scaled by 2 / (f[m+2] - f[m]) so each triangle has unit area in Hz.

  Args:
    sample_rate: audio sample rate in Hz.
    n_fft: FFT size; the filters cover its n_fft // 2 + 1 bins.
    n_mels: number of filters.
    fmin: lowest edge in Hz.
    fmax: highest edge in Hz (default sample_rate / 2).
  Returns:
    float32 [n_fft // 2 + 1, n_mels] (librosa's matrix transposed: `power @ filters` is mel).
  """
  fmax = sample_rate / 2.0 if fmax is None else float(fmax)
  if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
    raise ValueError(f"Need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}.")
  if n_mels < 1 or n_fft < 2:
    raise ValueError(f"Need n_mels >= 1 and n_fft >= 2, got n_mels={n_mels}, n_fft={n_fft}.")
  fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
  edges = slaney_mel_to_hz(np.linspace(slaney_hz_to_mel(fmin), slaney_hz_to_mel(fmax), n_mels + 2))
  widths = np.diff(edges)
  ramps = edges[:, None] - fft_hz[None, :]
  rising = -ramps[:-2] / widths[:-1, None]
  falling = ramps[2:] / widths[1:, None]
  weights = np.maximum(0.0, np.minimum(rising, falling))
  weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
  return weights.T.astype(np.float32)


def hann_window(length: int, periodic: bool = True) -> np.ndarray:
  """Hann window (periodic by default, as `scipy.signal.get_window('hann')` and librosa use).

  Returns:
    float32 [length].
  """
  denominator = length if periodic else max(length - 1, 1)
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / denominator)).astype(np.float32)


def frame(signal: jax.Array, frame_length: int, hop_length: int) -> jax.Array:
  """Overlapping frames of a signal (no padding; a partial last frame is dropped).

  When the hop divides the frame length (the usual case) the frames are built from
  frame_length / hop_length shifted reshapes instead of a gather, which is much cheaper on TPU.

  Args:
    signal: [..., samples].
    frame_length: samples per frame.
    hop_length: samples between frame starts.
  Returns:
    [..., frames, frame_length] with frames = 1 + (samples - frame_length) // hop_length.
  """
  samples = signal.shape[-1]
  if samples < frame_length:
    raise ValueError(f"Signal of {samples} samples is shorter than one frame ({frame_length}).")
  num_frames = 1 + (samples - frame_length) // hop_length
  if frame_length % hop_length == 0:
    chunks_per_frame = frame_length // hop_length
    num_chunks = num_frames + chunks_per_frame - 1
    chunks = signal[..., : num_chunks * hop_length]
    chunks = chunks.reshape(signal.shape[:-1] + (num_chunks, hop_length))
    parts = [chunks[..., i : i + num_frames, :] for i in range(chunks_per_frame)]
    return jnp.concatenate(parts, axis=-1)
  index = np.arange(num_frames)[:, None] * hop_length + np.arange(frame_length)[None, :]
  return signal[..., index]


def _padded_window(n_fft: int, win_length: int | None) -> np.ndarray:
  """Hann window of win_length samples, zero-padded on both sides to n_fft (librosa style)."""
  win_length = n_fft if win_length is None else win_length
  if not 1 <= win_length <= n_fft:
    raise ValueError(f"win_length={win_length} must be in [1, n_fft={n_fft}].")
  left = (n_fft - win_length) // 2
  return np.pad(hann_window(win_length), (left, n_fft - win_length - left))


def stft(
  audio: jax.Array,
  n_fft: int,
  hop_length: int | None = None,
  win_length: int | None = None,
  *,
  center: bool = True,
  pad_mode: str = "reflect",
) -> jax.Array:
  """Short-time Fourier transform with a Hann window (librosa conventions, unnormalised).

  Args:
    audio: [..., samples] float.
    n_fft: FFT size (= frame length).
    hop_length: samples between frames (default n_fft // 4).
    win_length: Hann window length, centred in the frame (default n_fft).
    center: pad n_fft // 2 samples on each side so frame t is centred on sample t * hop_length.
    pad_mode: `jnp.pad` mode of that padding ('reflect' or 'constant').
  Returns:
    complex64 [..., frames, n_fft // 2 + 1]; frames = 1 + samples // hop_length when centred,
    else 1 + (samples - n_fft) // hop_length.
  """
  hop_length = n_fft // 4 if hop_length is None else hop_length
  audio = jnp.asarray(audio, jnp.float32)
  if center:
    widths = [(0, 0)] * (audio.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    audio = jnp.pad(audio, widths, mode=pad_mode)
  frames = frame(audio, n_fft, hop_length) * _padded_window(n_fft, win_length)
  return jnp.fft.rfft(frames, n=n_fft, axis=-1)


def magnitude(spectrum: jax.Array, eps: float = 1e-9) -> jax.Array:
  """|spectrum| with a gradient that stays finite at zero: sqrt(max(re² + im², eps)).

  Args:
    spectrum: complex [..., frames, bins].
    eps: floor of the power (the magnitude floor is sqrt(eps)).
  Returns:
    float32 [..., frames, bins].
  """
  power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
  return jnp.sqrt(jnp.maximum(power, eps))


def mel_spectrogram(
  audio: jax.Array,
  sample_rate: int,
  n_fft: int,
  hop_length: int | None = None,
  n_mels: int = 128,
  *,
  fmin: float = 0.0,
  fmax: float | None = None,
  power: float = 1.0,
  center: bool = True,
) -> jax.Array:
  """Mel spectrogram: |STFT|^power through the Slaney mel filterbank.

  Args:
    audio: [..., samples] float.
    sample_rate: Hz.
    n_fft: FFT size.
    hop_length: default n_fft // 4.
    n_mels: filters.
    fmin, fmax: filterbank edges in Hz.
    power: 1 for magnitude, 2 for power.
    center: as in `stft` (reflect padding).
  Returns:
    float32 [..., frames, n_mels].
  """
  spectrum = magnitude(stft(audio, n_fft, hop_length, center=center))
  if power != 1.0:
    spectrum = spectrum**power
  filters = slaney_mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  return jnp.matmul(spectrum, filters, precision=jax.lax.Precision.HIGHEST)


def log_mel_spectrogram(
  audio: jax.Array,
  sample_rate: int,
  n_fft: int,
  hop_length: int | None = None,
  n_mels: int = 128,
  *,
  fmin: float = 0.0,
  fmax: float | None = None,
  power: float = 1.0,
  center: bool = True,
  floor: float = 1e-5,
) -> jax.Array:
  """Natural log of `mel_spectrogram`, floored at `floor` (silence reads log(floor)).

  Returns:
    float32 [..., frames, n_mels].
  """
  mel = mel_spectrogram(
    audio,
    sample_rate,
    n_fft,
    hop_length,
    n_mels,
    fmin=fmin,
    fmax=fmax,
    power=power,
    center=center,
  )
  return jnp.log(jnp.maximum(mel, floor))
