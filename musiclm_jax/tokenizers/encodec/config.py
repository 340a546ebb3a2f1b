"""The architecture of an imported EnCodec (Meta's SEANet + LSTM + RVQ codec), as our codec config.

Field names follow transformers' `EncodecConfig` where the meaning is the same, so that
`hf_import.config_from_hf` is a plain copy; `num_levels` is ours: how many of the checkpoint's
quantizers the import keeps, which the chosen bandwidth decides (24 kHz model: 1.5 kbps → 2
levels, 24 kbps → 32).

The 24 kHz model (`facebook/encodec_24khz`): 32 filters, hidden 128, ratios 8·5·4·2 (hop 320,
75 Hz), causal convolutions with reflect padding, 2 LSTM layers, 32 codebooks of 1024.
"""

from __future__ import annotations

import dataclasses
import math

from musiclm_jax.tokenizers.rvq import RVQConfig

# transformers' torch padding modes, as jnp.pad names them.
PAD_MODES = {"reflect": "reflect", "constant": "constant", "replicate": "edge", "circular": "wrap"}


@dataclasses.dataclass(frozen=True)
class EncodecCodecConfig:
  """An EnCodec's shape (see transformers' `EncodecConfig` for each field's meaning).

  Attributes:
    sample_rate: audio samples per second (transformers' `sampling_rate`).
    num_filters: channels of the first convolution; each downsampling doubles them.
    hidden_size: channels of the latent (and the codebook vectors' dimension).
    upsampling_ratios: the decoder's strides; the encoder downsamples by them reversed.
    num_residual_layers: residual blocks per resolution (dilations growing by
      `dilation_growth_rate`).
    kernel_size, last_kernel_size, residual_kernel_size: the first, last and residual kernels.
    dilation_growth_rate: dilation of residual block j is dilation_growth_rate ** j.
    use_causal_conv: pad convolutions on the left only (24 kHz model) or both sides.
    pad_mode: how convolutions pad: 'reflect', 'constant', 'replicate' or 'circular'.
    compress: the residual branch's channel reduction.
    num_lstm_layers: LSTM layers after the encoder's and before the decoder's convolutions.
    trim_right_ratio: the share of a causal transposed convolution's overhang cut on the right.
    use_conv_shortcut: residual blocks add a 1×1 convolution of their input (else the input).
    codebook_size: codes per level.
    num_levels: the quantizer levels this import keeps (a prefix of the checkpoint's).
    num_quantizers: the levels the checkpoint holds (at its largest bandwidth).
  """

  sample_rate: int = 24_000
  num_filters: int = 32
  hidden_size: int = 128
  upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)
  num_residual_layers: int = 1
  kernel_size: int = 7
  last_kernel_size: int = 7
  residual_kernel_size: int = 3
  dilation_growth_rate: int = 2
  use_causal_conv: bool = True
  pad_mode: str = "reflect"
  compress: int = 2
  num_lstm_layers: int = 2
  trim_right_ratio: float = 1.0
  use_conv_shortcut: bool = True
  codebook_size: int = 1024
  num_levels: int = 32
  num_quantizers: int = 32

  def __post_init__(self):
    if self.pad_mode not in PAD_MODES:
      raise ValueError(f"EnCodec pad_mode {self.pad_mode!r} is not one of {sorted(PAD_MODES)}.")
    if not 1 <= self.num_levels <= self.num_quantizers:
      raise ValueError(
        f"EnCodec num_levels={self.num_levels} must be in [1, num_quantizers="
        f"{self.num_quantizers}]."
      )
    if self.sample_rate % self.hop_length:
      raise ValueError(
        f"EnCodec hop {self.hop_length} does not divide the sample rate {self.sample_rate}: "
        "token frame rates must be whole numbers of frames per second here."
      )

  @property
  def hop_length(self) -> int:
    """Samples per frame: the product of the strides (320 for the 24 kHz model)."""
    return math.prod(self.upsampling_ratios)

  @property
  def frame_rate(self) -> int:
    """Frames per second (75 for the 24 kHz model)."""
    return self.sample_rate // self.hop_length

  @property
  def rvq(self) -> RVQConfig:
    """The quantizer's shape (levels kept, codes per level, vector dimension)."""
    return RVQConfig(
      num_levels=self.num_levels, codebook_size=self.codebook_size, dim=self.hidden_size
    )

  @property
  def bits_per_level(self) -> float:
    return math.log2(self.codebook_size)

  def num_frames(self, num_samples: int) -> int:
    """Frames for num_samples of audio: ceil(num_samples / hop_length), as EnCodec pads."""
    return -(-num_samples // self.hop_length)

  def encoder_channels(self) -> list[int]:
    """Channels at each resolution of the encoder, finest first (num_filters · 2^i)."""
    return [self.num_filters * 2**i for i in range(len(self.upsampling_ratios) + 1)]
