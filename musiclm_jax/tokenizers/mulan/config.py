"""MuLan architecture settings: the audio tower (a ResNet on log-mel) and the joint model.

Bound once per size in gin/models/mulan/{tiny,base,paper}.gin. The text tower's settings are its
own dataclass (`text_tower.TextTowerConfig`); `MuLanConfig` holds both towers and the contrastive
settings.

Paper audio tower (DESIGN §2): ResNet-50 — stages of (3, 4, 6, 3) bottleneck blocks of inner
widths (64, 128, 256, 512) × expansion 4, a 7×7 stride-2 stem with a 3×3 stride-2 max pool —
on a 64-bin log-mel spectrogram (25 ms Hann window, 10 ms hop) of a 10 s window, treated as a
one-channel image [frames, mels, 1]; global average pool, a linear map to 128-d, L2-normalised.

Deviation from the paper: GroupNorm instead of BatchNorm. BatchNorm's running statistics are
mutable state that the core trainer does not carry, and its batch statistics would couple the
examples on different devices; GroupNorm normalises each example alone, so sharded and unsharded
runs agree and evaluation needs no separate mode.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from musiclm_jax.tokenizers.mulan.text_tower import TextTowerConfig

BLOCK_TYPES = ("basic", "bottleneck")
_EXPANSION = {"basic": 1, "bottleneck": 4}


@dataclasses.dataclass(frozen=True)
class AudioTowerConfig:
  """ResNet audio tower on log-mel spectrograms.

  Attributes:
    stage_depths: residual blocks per stage; every stage after the first halves time and
      frequency in its first block.
    stage_widths: inner width of each stage's blocks; a block outputs width × expansion channels
      (expansion 4 for 'bottleneck', 1 for 'basic').
    block_type: 'bottleneck' (1×1 → 3×3 → 1×1, ResNet-50) or 'basic' (3×3 → 3×3, ResNet-18).
    stem_channels, stem_kernel_size, stem_stride: the first convolution.
    stem_pool: a 3×3 stride-2 max pool after the stem (as in ResNet-50).
    norm_groups: groups of every GroupNorm (must divide every conv's channels).
    norm_eps: GroupNorm epsilon.
    embed_dim: width of the joint embedding space.
    sample_rate: audio sample rate in Hz.
    window_seconds: length of the window the tower embeds (paper 10 s).
    hop_seconds: hop between the windows averaged into a clip embedding (paper 1 s).
    n_mels, n_fft, hop_length: log-mel front end (centred STFT, Hann window of n_fft samples,
      magnitude, Slaney mel filterbank).
    mel_floor: floor of the mel magnitude before the log.
    feature_mean, feature_std: log-mel features enter the ResNet as (log-mel - mean) / std.
    dropout_rate: dropout on the pooled features (training only).
    dtype, param_dtype: compute and parameter dtypes (the log-mel is always float32).
  """

  stage_depths: tuple[int, ...] = (3, 4, 6, 3)
  stage_widths: tuple[int, ...] = (64, 128, 256, 512)
  block_type: str = "bottleneck"
  stem_channels: int = 64
  stem_kernel_size: int = 7
  stem_stride: int = 2
  stem_pool: bool = True
  norm_groups: int = 32
  norm_eps: float = 1e-5
  embed_dim: int = 128
  sample_rate: int = 24000
  window_seconds: float = 10.0
  hop_seconds: float = 1.0
  n_mels: int = 64
  n_fft: int = 600
  hop_length: int = 240
  mel_floor: float = 1e-5
  feature_mean: float = -5.0
  feature_std: float = 4.0
  dropout_rate: float = 0.0
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.block_type not in BLOCK_TYPES:
      raise ValueError(f"block_type {self.block_type!r} is not one of {BLOCK_TYPES}.")
    if not self.stage_depths or len(self.stage_depths) != len(self.stage_widths):
      raise ValueError(
        f"stage_depths {self.stage_depths} and stage_widths {self.stage_widths} must be "
        "non-empty and of the same length."
      )
    channels = (self.stem_channels,) + tuple(self.stage_widths) + self.stage_channels
    bad = [c for c in channels if c % self.norm_groups]
    if bad:
      raise ValueError(f"norm_groups={self.norm_groups} does not divide channel counts {bad}.")
    if self.n_fft // 2 + 1 < self.n_mels:
      raise ValueError(f"n_mels={self.n_mels} exceeds the {self.n_fft // 2 + 1} FFT bins.")
    if self.window_samples < self.n_fft or self.hop_samples < 1:
      raise ValueError(
        f"Need a window of at least n_fft={self.n_fft} samples and a hop of at least one "
        f"sample, got {self.window_samples} and {self.hop_samples}."
      )

  @property
  def expansion(self) -> int:
    """Output channels of a block per unit of its inner width."""
    return _EXPANSION[self.block_type]

  @property
  def stage_channels(self) -> tuple[int, ...]:
    """Output channels of each stage."""
    return tuple(w * self.expansion for w in self.stage_widths)

  @property
  def window_samples(self) -> int:
    return round(self.window_seconds * self.sample_rate)

  @property
  def hop_samples(self) -> int:
    return round(self.hop_seconds * self.sample_rate)

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def num_frames(self, num_samples: int) -> int:
    """Log-mel frames of `num_samples` (centred STFT)."""
    return 1 + num_samples // self.hop_length

  def num_params(self) -> int:
    """Parameters of `audio_tower.AudioTower` with this config (conv kernels, norms, head)."""
    conv_norm = lambda k, cin, cout: k * k * cin * cout + 2 * cout  # noqa: E731
    count = conv_norm(self.stem_kernel_size, 1, self.stem_channels)
    in_channels = self.stem_channels
    for stage, (depth, width) in enumerate(zip(self.stage_depths, self.stage_widths)):
      out = width * self.expansion
      for block in range(depth):
        if self.block_type == "bottleneck":
          count += conv_norm(1, in_channels, width) + conv_norm(3, width, width)
          count += conv_norm(1, width, out)
        else:
          count += conv_norm(3, in_channels, width) + conv_norm(3, width, width)
        if (stage > 0 and block == 0) or in_channels != out:
          count += conv_norm(1, in_channels, out)
        in_channels = out
    return count + in_channels * self.embed_dim


@dataclasses.dataclass(frozen=True)
class MuLanConfig:
  """MuLan: audio and text towers and their contrastive objective.

  Attributes:
    audio: the audio tower.
    text: the text tower.
    embed_dim: the joint space's width (both towers must output it).
    initial_temperature: softmax temperature τ of the contrastive logits at initialisation;
      logits are cosine similarities × scale, scale = 1 / τ.
    learn_temperature: learn log(scale) (CLIP style) or keep it at 1 / initial_temperature.
    max_logit_scale: the learned scale is clipped to [1, max_logit_scale] (CLIP: 100), which
      keeps the logits from blowing up early in training.
  """

  audio: AudioTowerConfig
  text: TextTowerConfig
  embed_dim: int = 128
  initial_temperature: float = 0.07
  learn_temperature: bool = True
  max_logit_scale: float = 100.0

  def __post_init__(self):
    dims = (self.embed_dim, self.audio.embed_dim, self.text.embed_dim)
    if len(set(dims)) != 1:
      raise ValueError(
        f"MuLanConfig.embed_dim={dims[0]}, audio.embed_dim={dims[1]} and text.embed_dim="
        f"{dims[2]} must be equal."
      )
    if not 1.0 / self.max_logit_scale <= self.initial_temperature <= 1.0:
      raise ValueError(
        f"initial_temperature={self.initial_temperature} must lie in "
        f"[1 / max_logit_scale, 1] = [{1.0 / self.max_logit_scale}, 1]."
      )

  @property
  def initial_log_scale(self) -> float:
    return math.log(1.0 / self.initial_temperature)
