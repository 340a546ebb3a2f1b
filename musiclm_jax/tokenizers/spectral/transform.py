"""STFT, inverse STFT and fast Griffin-Lim in jax, on the codec's frame grid.

Frame t of `stft(audio)` is centred on sample t · hop (the signal is zero-padded by n_fft / 2 on
the left), so `num_samples / hop` frames cover the audio exactly and `istft` of them returns
`frames · hop` samples: the codec's frame count, not librosa's frames + 1. With n_fft a multiple
R of the hop, framing is a reshape into hop-sized blocks and R shifted views of them, and the
overlap-add is R strided adds: no gather, no scatter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def hann(n_fft: int) -> jax.Array:
  """Periodic Hann window [n_fft] (sums to a constant under a hop of n_fft / 4)."""
  return jnp.asarray(np.hanning(n_fft + 1)[:-1], jnp.float32)


def _overlap(n_fft: int, hop: int) -> int:
  return n_fft // hop


def _padded_length(num_frames: int, n_fft: int, hop: int) -> int:
  return (num_frames + _overlap(n_fft, hop) - 1) * hop


def _frames(padded: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """[B, (n + R - 1) · hop] -> [B, n, n_fft] windows starting every hop samples."""
  overlap = _overlap(n_fft, hop)
  blocks = padded.reshape(padded.shape[0], -1, hop)
  n = blocks.shape[1] - overlap + 1
  return jnp.concatenate([blocks[:, r : r + n] for r in range(overlap)], axis=-1)


def _overlap_add(frames: jax.Array, hop: int) -> jax.Array:
  """[B, n, n_fft] -> [B, (n + R - 1) · hop], the inverse of `_frames`' layout."""
  batch, n, n_fft = frames.shape
  overlap = _overlap(n_fft, hop)
  out = jnp.zeros((batch, n + overlap - 1, hop), frames.dtype)
  for r in range(overlap):
    out = out.at[:, r : r + n].add(frames[..., r * hop : (r + 1) * hop])
  return out.reshape(batch, -1)


def stft(audio: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """[B, samples] (samples a multiple of hop) -> complex64 [B, samples // hop, n_fft // 2 + 1]."""
  num_frames = audio.shape[1] // hop
  left = n_fft // 2
  total = _padded_length(num_frames, n_fft, hop)
  right = max(total - left - audio.shape[1], 0)
  padded = jnp.pad(audio.astype(jnp.float32), ((0, 0), (left, right)))[:, :total]
  return jnp.fft.rfft(_frames(padded, n_fft, hop) * hann(n_fft), axis=-1)


@functools.lru_cache(maxsize=64)
def _window_norm(num_frames: int, n_fft: int, hop: int) -> np.ndarray:
  """[(n + R - 1) · hop] overlap-added squared window, computed on the host: as a traced
  constant XLA would fold its scatter-adds at every compile (seconds per program)."""
  window_sq = np.hanning(n_fft + 1)[:-1].astype(np.float32) ** 2
  norm = np.zeros(_padded_length(num_frames, n_fft, hop), np.float32)
  for t in range(num_frames):
    norm[t * hop : t * hop + n_fft] += window_sq
  return np.maximum(norm, 1e-8)


def _inverse_padded(spectra: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """Weighted overlap-add inverse of `stft`, on the zero-padded grid (pads included)."""
  frames = jnp.fft.irfft(spectra, n=n_fft, axis=-1) * hann(n_fft)
  return _overlap_add(frames, hop) / _window_norm(spectra.shape[1], n_fft, hop)


def istft(spectra: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """complex [B, frames, bins] -> float32 [B, frames · hop], the inverse of `stft`."""
  padded = _inverse_padded(spectra, n_fft, hop)
  left = n_fft // 2
  return padded[:, left : left + spectra.shape[1] * hop]


def griffin_lim(
  magnitudes: jax.Array, n_fft: int, hop: int, iters: int, momentum: float, seed: int = 0
) -> jax.Array:
  """Audio [B, frames · hop] whose STFT magnitudes approximate `magnitudes` [B, frames, bins].

  Fast Griffin-Lim (Perraudin, Balazs & Søndergaard 2013): alternate projections onto the
  consistent spectrograms and onto the given magnitudes, with momentum. The initial phase is
  pseudo-random from `seed`, so a decode is a deterministic function of its codes.
  """
  phase = jax.random.uniform(jax.random.key(seed), magnitudes.shape, jnp.float32, 0, 2 * jnp.pi)
  start = magnitudes * jnp.exp(1j * phase)

  def project(_, carry):
    spectra, previous = carry
    consistent = jnp.fft.rfft(
      _frames(_inverse_padded(spectra, n_fft, hop), n_fft, hop) * hann(n_fft), axis=-1
    )
    accelerated = consistent + momentum * (consistent - previous)
    return magnitudes * jnp.exp(1j * jnp.angle(accelerated)), consistent

  spectra, _ = jax.lax.fori_loop(0, iters, project, (start, start))
  return istft(spectra, n_fft, hop)
