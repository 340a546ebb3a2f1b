"""Spectral codec settings: STFT frames → power-law magnitudes → PCA → RVQ, and back.

Bound per size in gin/models/spectral_codec/{tiny,base}.gin. The frame grid is the paper's
SoundStream grid (24 kHz, hop 480 → 50 Hz), so its tokens drop into the same stage layouts.
"""

from __future__ import annotations

import dataclasses

from musiclm_jax.tokenizers.rvq import RVQConfig


@dataclasses.dataclass(frozen=True)
class SpectralCodecConfig:
  """A codec whose encoder and decoder are fitted linear maps of STFT magnitudes.

  Encoding: periodic-Hann STFT (`n_fft`, `hop_length`, centred), magnitude |X|, power-law
  compression |X|^`compression`, projection onto the `rvq.dim` leading principal components of
  the training frames, greedy residual VQ. Decoding: codes → the sum of their code vectors → the
  PCA inverse → clamped at 0 → ^(1/`compression`) → Griffin-Lim (`griffin_lim_iters` fast
  iterations, Perraudin et al. 2013) from a fixed pseudo-random phase → inverse STFT.

  Attributes:
    sample_rate: audio sample rate in Hz.
    n_fft: STFT window and FFT size (a multiple of the hop; 1920 = 80 ms gives 12.5 Hz bins,
      enough to resolve semitones from ~110 Hz up).
    hop_length: samples per frame (480: 50 frames per second).
    compression: exponent of the magnitudes before the PCA (0.3: a loudness-like law that keeps
      the noise floor between partials near 0, so the components spend their variance on where
      the partials are; a log would spend it on the floor's shape).
    rvq: the quantizer of the PCA coefficients (its dim is the number of components). Only
      num_levels, codebook_size and dim matter here; the codebooks are fitted by k-means.
    griffin_lim_iters: phase-reconstruction iterations in decode.
    griffin_lim_momentum: the fast Griffin-Lim momentum (0: plain Griffin-Lim).
  """

  sample_rate: int = 24000
  n_fft: int = 1920
  hop_length: int = 480
  compression: float = 0.3
  rvq: RVQConfig = RVQConfig(num_levels=8, codebook_size=256, dim=32)
  griffin_lim_iters: int = 32
  griffin_lim_momentum: float = 0.99

  def __post_init__(self):
    if self.hop_length < 1 or self.n_fft % self.hop_length:
      raise ValueError(
        f"SpectralCodecConfig needs n_fft ({self.n_fft}) a multiple of hop_length "
        f"({self.hop_length}): the inverse STFT overlaps whole frames."
      )
    if self.sample_rate % self.hop_length:
      raise ValueError(
        f"sample_rate={self.sample_rate} is not a multiple of the hop {self.hop_length}; "
        "frame rates must be whole numbers."
      )
    if not 0.0 < self.compression <= 1.0:
      raise ValueError(f"SpectralCodecConfig.compression={self.compression} must be in (0, 1].")
    if self.rvq.dim > self.num_bins:
      raise ValueError(
        f"SpectralCodecConfig.rvq.dim={self.rvq.dim} principal components exceed the "
        f"{self.num_bins} frequency bins of n_fft={self.n_fft}."
      )
    if self.griffin_lim_iters < 0 or not 0.0 <= self.griffin_lim_momentum < 1.0:
      raise ValueError(
        f"SpectralCodecConfig needs griffin_lim_iters >= 0 and momentum in [0, 1): {self}."
      )

  @property
  def num_bins(self) -> int:
    """Frequency bins of one STFT frame: n_fft // 2 + 1."""
    return self.n_fft // 2 + 1

  @property
  def frame_rate(self) -> int:
    """Frames (token steps) per second."""
    return self.sample_rate // self.hop_length

  @property
  def num_levels(self) -> int:
    """RVQ levels (tokens per frame)."""
    return self.rvq.num_levels

  @property
  def latent_dim(self) -> int:
    """PCA components per frame (the quantized space)."""
    return self.rvq.dim

  def num_frames(self, num_samples: int) -> int:
    """Frames for num_samples of audio: ceil(num_samples / hop_length) (audio is padded up)."""
    return -(-num_samples // self.hop_length)
