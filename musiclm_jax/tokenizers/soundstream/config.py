"""SoundStream architecture settings: generator (SEANet + RVQ) and discriminators.

Bound once per size in gin/models/soundstream/{tiny,base,paper}.gin. The paper config (DESIGN §2)
is 24 kHz mono with a total stride of 480 (strides (3, 4, 5, 8), SoundStream's (2, 4, 5, 8) with
the first stride raised from 2 to 3), hence 50 frames per second, each quantized by 12 RVQ levels
of 1024 codes: 600 tokens/s, 6 kbps.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from musiclm_jax.tokenizers.rvq import RVQConfig


@dataclasses.dataclass(frozen=True)
class STFTDiscriminatorConfig:
  """Multi-scale complex-STFT discriminator (one 2-D conv net per FFT size).

  Attributes:
    fft_sizes: one sub-discriminator per FFT size; hop = n_fft // 4, Hann window.
    channels: width of every 2-D conv.
    time_dilations: dilations (in time) of the frequency-strided (stride 2) convs, one per conv.
    negative_slope: of the leaky ReLUs.
  """

  fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128)
  channels: int = 32
  time_dilations: tuple[int, ...] = (1, 2, 4)
  negative_slope: float = 0.2

  def __post_init__(self):
    if not self.fft_sizes or min(self.fft_sizes) < 8 or self.channels < 1:
      raise ValueError(f"STFTDiscriminatorConfig needs FFT sizes >= 8 and channels >= 1: {self}.")


@dataclasses.dataclass(frozen=True)
class WaveDiscriminatorConfig:
  """Multi-scale waveform discriminator (MelGAN style): one 1-D conv net per sample rate.

  Attributes:
    num_scales: sub-discriminators on the audio at rates 1, 1/2, 1/4, ... (average pooling).
    channels: width of the first conv (kernel 15).
    max_channels: cap of the widths, which grow 4× per downsampling conv.
    num_downsamples: stride-4 grouped convs.
    kernel_size: kernel of the downsampling convs.
    group_channels: input channels per group of the grouped convs.
    negative_slope: of the leaky ReLUs.
  """

  num_scales: int = 3
  channels: int = 16
  max_channels: int = 1024
  num_downsamples: int = 4
  kernel_size: int = 41
  group_channels: int = 4
  negative_slope: float = 0.2

  def __post_init__(self):
    if min(self.num_scales, self.channels, self.max_channels, self.kernel_size) < 1:
      raise ValueError(f"WaveDiscriminatorConfig needs positive sizes: {self}.")


@dataclasses.dataclass(frozen=True)
class SoundStreamConfig:
  """SoundStream codec: SEANet encoder → residual vector quantizer → SEANet decoder.

  Encoder block b has `channels * channel_mults[b]` output channels and downsamples by
  `strides[b]`; the decoder mirrors it. Residual units are Conv(k=7, dilation d) → Conv(k=1) with
  pre-activations (ELU or Snake), one per entry of `dilations`.

  Attributes:
    sample_rate: audio sample rate in Hz.
    channels: base width C (paper 32).
    channel_mults: width multipliers of the encoder blocks (paper (2, 4, 8, 16)).
    strides: downsampling factors of the encoder blocks; their product is the hop length.
    embedding_dim: width of the encoder output, the space the RVQ quantizes.
    dilations: dilations of the residual units in every block.
    kernel_size: kernel of the residual units' dilated convs and of the first/last decoder convs.
    causal: pad every conv on the left only, so the encoder output at frame t depends on samples
      up to the end of frame t and the decoder output up to frame t on codes up to t (streaming).
      Otherwise convs are centred.
    activation: 'elu' (SEANet, the paper) or 'snake' (x + sin²(αx)/α with learned α per channel,
      as in BigVGAN/DAC): a periodic bias that lets the decoder learn pitched partials sooner.
    tanh_output: squash the decoder output with tanh. Off by default: the output is linear so
      loud transients are not compressed and gradients do not vanish near ±1; clip for playback.
    dtype: compute dtype of the convs ('float32' or 'bfloat16'); quantization and losses stay
      float32.
    param_dtype: parameter dtype.
    rvq: the residual vector quantizer (its dim must equal embedding_dim).
    stft_discriminator: multi-scale STFT discriminator.
    wave_discriminator: multi-scale waveform discriminator.
  """

  sample_rate: int = 24000
  channels: int = 32
  channel_mults: tuple[int, ...] = (2, 4, 8, 16)
  strides: tuple[int, ...] = (3, 4, 5, 8)
  embedding_dim: int = 128
  dilations: tuple[int, ...] = (1, 3, 9)
  kernel_size: int = 7
  causal: bool = False
  activation: str = "elu"
  tanh_output: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"
  rvq: RVQConfig = RVQConfig(num_levels=12, codebook_size=1024, dim=128, dead_code_threshold=0.05)
  stft_discriminator: STFTDiscriminatorConfig = STFTDiscriminatorConfig()
  wave_discriminator: WaveDiscriminatorConfig = WaveDiscriminatorConfig()

  def __post_init__(self):
    if len(self.channel_mults) != len(self.strides) or not self.strides:
      raise ValueError(
        f"SoundStreamConfig needs one channel multiplier per stride, got channel_mults="
        f"{self.channel_mults} and strides={self.strides}."
      )
    if min(self.strides) < 1 or min(self.channel_mults) < 1 or self.channels < 1:
      raise ValueError(f"SoundStreamConfig needs positive strides and widths: {self}.")
    if self.activation not in ("elu", "snake"):
      raise ValueError(
        f"SoundStreamConfig.activation must be 'elu' or 'snake', got {self.activation!r}."
      )
    if self.rvq.dim != self.embedding_dim:
      raise ValueError(
        f"SoundStreamConfig.rvq.dim={self.rvq.dim} must equal embedding_dim="
        f"{self.embedding_dim} (the quantizer works on the encoder output)."
      )
    if self.sample_rate % self.hop_length:
      raise ValueError(
        f"sample_rate={self.sample_rate} is not a multiple of the hop {self.hop_length}; "
        "frame rates must be whole numbers."
      )

  @property
  def hop_length(self) -> int:
    """Samples per frame: the product of the strides (480 in the paper config)."""
    return math.prod(self.strides)

  @property
  def frame_rate(self) -> int:
    """Frames (token steps) per second: sample_rate / hop_length (50 in the paper config)."""
    return self.sample_rate // self.hop_length

  @property
  def num_levels(self) -> int:
    """RVQ levels (tokens per frame)."""
    return self.rvq.num_levels

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def num_frames(self, num_samples: int) -> int:
    """Frames for num_samples of audio: ceil(num_samples / hop_length) (audio is padded up)."""
    return -(-num_samples // self.hop_length)
