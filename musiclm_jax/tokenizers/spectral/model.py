"""The spectral codec's maps as pure functions of its variables.

Variables (what the fitting job saves and `SpectralCodec` wraps):
  params:    mean [bins] and components [bins, dim]: the PCA of compressed magnitude frames.
  quantizer: codebooks [levels, codes, dim]: greedy residual k-means of the PCA coefficients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from musiclm_jax.tokenizers import rvq
from musiclm_jax.tokenizers.spectral import transform
from musiclm_jax.tokenizers.spectral.config import SpectralCodecConfig

# PCA and codebook search decide codes: never let a reduced-precision matmul flip an argmin.
_HIGHEST = jax.lax.Precision.HIGHEST


def pad_to_hop(audio: jax.Array, hop: int) -> jax.Array:
  """[B, samples] zero-padded at the end to a multiple of hop."""
  return jnp.pad(audio, ((0, 0), (0, -audio.shape[1] % hop)))


def features(config: SpectralCodecConfig, audio: jax.Array) -> jax.Array:
  """[B, samples] -> [B, frames, bins] power-law compressed STFT magnitudes."""
  spectra = transform.stft(pad_to_hop(audio, config.hop_length), config.n_fft, config.hop_length)
  # sqrt(re² + im² + tiny): |X|^c has an infinite slope at 0, and a gradient may pass here.
  magnitude = jnp.sqrt(jnp.square(spectra.real) + jnp.square(spectra.imag) + 1e-12)
  return magnitude**config.compression


def project(params: dict, frames: jax.Array) -> jax.Array:
  """[..., bins] compressed magnitudes -> [..., dim] PCA coefficients."""
  return jnp.dot(frames - params["mean"], params["components"], precision=_HIGHEST)


def unproject(params: dict, latents: jax.Array) -> jax.Array:
  """[..., dim] PCA coefficients -> [..., bins] compressed magnitudes."""
  return jnp.dot(latents, params["components"].T, precision=_HIGHEST) + params["mean"]


def encode(config: SpectralCodecConfig, variables: dict, audio: jax.Array, levels: int):
  """[B, samples] audio -> [B, frames, levels] int32 codes."""
  latents = project(variables["params"], features(config, audio))
  return rvq.greedy_codes(variables[rvq.QUANTIZER]["codebooks"], latents, levels)


def magnitudes(config: SpectralCodecConfig, params: dict, latents: jax.Array) -> jax.Array:
  """[..., dim] PCA coefficients -> [..., bins] STFT magnitudes (compression undone)."""
  compressed = jnp.maximum(unproject(params, latents), 0.0)
  return compressed ** (1.0 / config.compression)


def decode(config: SpectralCodecConfig, variables: dict, codes: jax.Array) -> jax.Array:
  """[B, frames, levels] codes (-1: absent level) -> [B, frames · hop] audio by Griffin-Lim."""
  latents = rvq.sum_code_vectors(variables[rvq.QUANTIZER]["codebooks"], codes)
  return transform.griffin_lim(
    magnitudes(config, variables["params"], latents),
    config.n_fft,
    config.hop_length,
    config.griffin_lim_iters,
    config.griffin_lim_momentum,
  )
