"""Spectral codec: fitted PCA of power-law STFT magnitudes, RVQ, and Griffin-Lim decoding."""

from __future__ import annotations

from musiclm_jax.tokenizers.spectral.codec import SpectralCodec, load_spectral_codec
from musiclm_jax.tokenizers.spectral.config import SpectralCodecConfig

__all__ = ["SpectralCodec", "SpectralCodecConfig", "load_spectral_codec"]
