"""SoundStream discriminators: multi-scale complex-STFT and multi-scale waveform.

Each sub-discriminator returns logits (a map: one real/fake score per time(-frequency) cell) and
the feature maps of its hidden layers, which the generator's feature-matching loss compares
between real and reconstructed audio. `SoundStreamDiscriminator` runs both families and returns
every scale's logits and features in one `DiscriminatorOutput` (STFT scales first).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax import axes
from musiclm_jax.layers import spectral
from musiclm_jax.tokenizers.soundstream.config import (
  SoundStreamConfig,
  STFTDiscriminatorConfig,
  WaveDiscriminatorConfig,
)
from musiclm_jax.tokenizers.soundstream.seanet import CodecConv


class DiscriminatorOutput(NamedTuple):
  """Per-scale outputs of a (multi-scale) discriminator, all float32.

  Attributes:
    logits: one array per scale: [batch, frames, bins'] for STFT scales, [batch, steps] for
      waveform scales.
    features: one list per scale of its hidden feature maps ([batch, frames, bins', channels] or
      [batch, steps, channels]).
  """

  logits: list[jax.Array]
  features: list[list[jax.Array]]


def _check_audio(audio: jax.Array) -> jax.Array:
  if audio.ndim != 2:
    raise ValueError(f"Expected audio [batch, samples], got shape {tuple(audio.shape)}.")
  return audio


class STFTDiscriminator(nn.Module):
  """2-D conv net on the complex STFT (real and imaginary parts as 2 channels) of one FFT size.

  Layers over [time, frequency]: Conv(3×9) → one Conv(3×9, stride 1×2, time dilation d) per
  `time_dilations` → Conv(3×3) → Conv(3×3, 1 channel) = logits; leaky ReLU after each hidden conv.

  Attributes:
    config: channel and dilation settings.
    n_fft: FFT size; hop n_fft // 4, Hann window, centred frames.
  """

  config: STFTDiscriminatorConfig
  n_fft: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _conv(
    self,
    features: int,
    kernel: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    name: str | None = None,
  ) -> nn.Conv:
    """A 'SAME'-padded 2-D conv over [time, frequency]."""
    return nn.Conv(
      features,
      kernel,
      strides=strides,
      kernel_dilation=dilation,
      padding="SAME",
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name=name,
    )

  @nn.compact
  def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """[batch, samples] -> (logits [batch, frames, bins'], hidden feature maps).

    frames = 1 + samples // (n_fft // 4); bins' = ceil((n_fft // 2 + 1) / 2^len(time_dilations)).
    """
    cfg = self.config
    spectrum = spectral.stft(_check_audio(audio), self.n_fft, self.n_fft // 4)
    # Scale so a frame's spectrum has the energy of the frame itself, whatever the FFT size.
    spectrum = spectrum / np.sqrt(np.sum(np.square(spectral.hann_window(self.n_fft))))
    x = jnp.stack([spectrum.real, spectrum.imag], axis=-1).astype(self.dtype)
    x = nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, None, None))
    features = []
    x = nn.leaky_relu(self._conv(cfg.channels, (3, 9), name="conv_in")(x), cfg.negative_slope)
    features.append(x)
    for i, d in enumerate(cfg.time_dilations):
      conv = self._conv(cfg.channels, (3, 9), (1, 2), (d, 1), name=f"conv_down{i}")
      x = nn.leaky_relu(conv(x), cfg.negative_slope)
      features.append(x)
    x = nn.leaky_relu(self._conv(cfg.channels, (3, 3), name="conv_mid")(x), cfg.negative_slope)
    features.append(x)
    logits = self._conv(1, (3, 3), name="conv_out")(x)[..., 0]
    return logits.astype(jnp.float32), [f.astype(jnp.float32) for f in features]


def _group_count(in_channels: int, out_channels: int, group_channels: int) -> int:
  """Groups of a grouped conv: about in/group_channels, dividing both channel counts."""
  return int(np.gcd(np.gcd(in_channels, out_channels), max(1, in_channels // group_channels)))


class WaveDiscriminator(nn.Module):
  """MelGAN-style 1-D conv net on the waveform at one sample rate.

  Conv(k=15) → num_downsamples × grouped Conv(kernel_size, stride 4, width ×4 up to
  max_channels) → Conv(k=5) → Conv(k=3, 1 channel) = logits; leaky ReLU after each hidden conv.

  Attributes:
    config: widths and kernels.
  """

  config: WaveDiscriminatorConfig
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """[batch, samples] -> (logits [batch, samples // 4^num_downsamples], hidden feature maps)."""
    cfg = self.config
    conv = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = jnp.asarray(_check_audio(audio), self.dtype)[..., None]
    x = nn.leaky_relu(CodecConv(cfg.channels, 15, name="conv_in", **conv)(x), cfg.negative_slope)
    features = [x]
    width = cfg.channels
    for i in range(cfg.num_downsamples):
      out = min(width * 4, cfg.max_channels)
      groups = _group_count(width, out, cfg.group_channels)
      down = CodecConv(out, cfg.kernel_size, stride=4, groups=groups, name=f"conv_down{i}", **conv)
      x = nn.leaky_relu(down(x), cfg.negative_slope)
      x = nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))
      features.append(x)
      width = out
    x = nn.leaky_relu(CodecConv(width, 5, name="conv_mid", **conv)(x), cfg.negative_slope)
    features.append(x)
    logits = CodecConv(1, 3, name="conv_out", **conv)(x)[..., 0]
    return logits.astype(jnp.float32), [f.astype(jnp.float32) for f in features]


def downsample_audio(audio: jax.Array) -> jax.Array:
  """Halves the sample rate by average pooling (window 4, stride 2, edges not over-counted).

  Args:
    audio: [batch, samples].
  Returns:
    [batch, samples // 2] (for even sample counts; (samples - 1) // 2 + 1 in general).
  """
  pooled = nn.avg_pool(
    audio[..., None], (4,), strides=(2,), padding=((1, 1),), count_include_pad=False
  )
  return pooled[..., 0]


class MultiScaleSTFTDiscriminator(nn.Module):
  """One `STFTDiscriminator` per FFT size of the config."""

  config: STFTDiscriminatorConfig
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, audio: jax.Array) -> DiscriminatorOutput:
    """[batch, samples] -> DiscriminatorOutput with one scale per FFT size."""
    logits, features = [], []
    for n_fft in self.config.fft_sizes:
      sub = STFTDiscriminator(
        self.config, n_fft, self.dtype, self.param_dtype, name=f"stft_{n_fft}"
      )
      scale_logits, scale_features = sub(audio)
      logits.append(scale_logits)
      features.append(scale_features)
    return DiscriminatorOutput(logits, features)


class MultiScaleWaveDiscriminator(nn.Module):
  """One `WaveDiscriminator` per sample rate: the input, then halved per scale."""

  config: WaveDiscriminatorConfig
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, audio: jax.Array) -> DiscriminatorOutput:
    """[batch, samples] -> DiscriminatorOutput with scales at rates 1, 1/2, 1/4, ..."""
    logits, features = [], []
    x = _check_audio(audio)
    for scale in range(self.config.num_scales):
      if scale:
        x = downsample_audio(x)
      sub = WaveDiscriminator(self.config, self.dtype, self.param_dtype, name=f"wave_{scale}")
      scale_logits, scale_features = sub(x)
      logits.append(scale_logits)
      features.append(scale_features)
    return DiscriminatorOutput(logits, features)


class SoundStreamDiscriminator(nn.Module):
  """Both discriminator families of a `SoundStreamConfig`, as one module with one param tree."""

  config: SoundStreamConfig

  @nn.compact
  def __call__(self, audio: jax.Array) -> DiscriminatorOutput:
    """Scores audio.

    Args:
      audio: [batch, samples] float (real audio or the generator's reconstruction).
    Returns:
      DiscriminatorOutput: len(stft fft_sizes) STFT scales followed by the waveform scales.
    """
    cfg = self.config
    dtypes = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    stft = MultiScaleSTFTDiscriminator(cfg.stft_discriminator, name="stft", **dtypes)(audio)
    wave = MultiScaleWaveDiscriminator(cfg.wave_discriminator, name="wave", **dtypes)(audio)
    return DiscriminatorOutput(stft.logits + wave.logits, stft.features + wave.features)
