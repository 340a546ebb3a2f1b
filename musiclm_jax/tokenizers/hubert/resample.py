"""Rational-ratio resampling inside jitted programs: one strided, dilated convolution.

`resample(audio, from_rate, to_rate)` upsamples by L (zeros between samples: `lhs_dilation`),
low-passes with a Kaiser-windowed sinc at the lower Nyquist, and keeps every M-th sample
(`window_strides`), with L / M = to_rate / from_rate in lowest terms. The filter is built in
numpy at trace time; nothing leaves the device. For n input samples it gives
((n - 1) · L) // M + 1 outputs, i.e. n · L / M exactly when M divides n · L.

The host resampler (`data.audio_io.resample`, soxr) is better for files; this one exists so that
a semantic model at another rate composes inside the tokenization program.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

ZERO_CROSSINGS = 16  # filter half-length, in zero crossings of the sinc
KAISER_BETA = 8.0  # ~80 dB stopband


def _filter(up: int, down: int) -> np.ndarray:
  """The low-pass at the upsampled rate, gain `up` (zero insertion divided the level by it)."""
  band = max(up, down)
  half = ZERO_CROSSINGS * band
  n = np.arange(-half, half + 1)
  taps = np.sinc(n / band) / band * np.kaiser(2 * half + 1, KAISER_BETA)
  return (up * taps).astype(np.float32)


def output_length(num_samples: int, from_rate: int, to_rate: int) -> int:
  """Samples `resample` returns for num_samples."""
  g = math.gcd(from_rate, to_rate)
  up, down = to_rate // g, from_rate // g
  return ((num_samples - 1) * up) // down + 1


def resample(audio: jax.Array, from_rate: int, to_rate: int) -> jax.Array:
  """[batch, samples] at from_rate -> [batch, output_length(samples)] at to_rate."""
  if from_rate == to_rate:
    return audio
  g = math.gcd(from_rate, to_rate)
  up, down = to_rate // g, from_rate // g
  taps = _filter(up, down)
  half = len(taps) // 2
  y = jax.lax.conv_general_dilated(
    audio[:, :, None],
    jnp.asarray(taps)[:, None, None],
    window_strides=(down,),
    padding=((half, half),),
    lhs_dilation=(up,),
    dimension_numbers=("NWC", "WIO", "NWC"),
    precision=jax.lax.Precision.HIGHEST,
  )
  return y[:, :, 0]
