"""SoundStream training losses and the mel-distance metric: plain functions of arrays.

Reconstruction: multi-scale log-mel (L1 + L2) and multi-resolution STFT (spectral convergence +
log-magnitude L1). Adversarial: hinge losses on per-scale logits (SoundStream §3.4) and feature
matching between the discriminator's hidden maps of real and reconstructed audio. Every loss is a
float32 scalar averaged over the batch; audio is [batch, samples] (prediction and target the same
shape).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from musiclm_jax.layers import spectral

# Log-mel floor: well below the mel energy of audible signals, so silence does not dominate.
_LOG_FLOOR = 1e-5
# 2^6 .. 2^11, the scales of SoundStream's multi-scale spectral loss.
DEFAULT_MEL_FFT_SIZES = (64, 128, 256, 512, 1024, 2048)
DEFAULT_STFT_FFT_SIZES = (512, 1024, 2048)


def _check_pair(prediction: jax.Array, target: jax.Array) -> None:
  if prediction.shape != target.shape or prediction.ndim != 2:
    raise ValueError(
      f"Expected prediction and target audio of one shape [batch, samples], got "
      f"{tuple(prediction.shape)} and {tuple(target.shape)}."
    )


def _mels_for(n_fft: int, n_mels: int) -> int:
  """Mel filters at one FFT size: at most n_fft // 4, so small FFTs have no empty filters."""
  return max(1, min(n_mels, n_fft // 4))


def multiscale_mel_loss(
  prediction: jax.Array,
  target: jax.Array,
  sample_rate: int,
  *,
  fft_sizes: Sequence[int] = DEFAULT_MEL_FFT_SIZES,
  n_mels: int = 64,
  l1_weight: float = 1.0,
  l2_weight: float = 1.0,
) -> jax.Array:
  """Mean over FFT sizes s of L1 + L2 distances of log-mel spectrograms (hop s // 4).

  At FFT size s, n_mels is capped at s // 4 (16 filters at s = 64) so no filter is empty.

  Args:
    prediction: [batch, samples] reconstructed audio.
    target: [batch, samples] real audio.
    sample_rate: Hz.
    fft_sizes: FFT sizes of the scales.
    n_mels: mel filters per scale (before the cap).
    l1_weight: weight of mean |Δ log-mel|.
    l2_weight: weight of mean (Δ log-mel)².
  Returns:
    float32 scalar; 0 when prediction == target.
  """
  _check_pair(prediction, target)
  both = jnp.stack([prediction, target]).astype(jnp.float32)
  total = jnp.zeros((), jnp.float32)
  for n_fft in fft_sizes:
    log_mel = spectral.log_mel_spectrogram(
      both, sample_rate, n_fft, n_fft // 4, _mels_for(n_fft, n_mels), floor=_LOG_FLOOR
    )
    diff = log_mel[0] - log_mel[1]
    total += l1_weight * jnp.mean(jnp.abs(diff)) + l2_weight * jnp.mean(jnp.square(diff))
  return total / len(fft_sizes)


def multi_resolution_stft_loss(
  prediction: jax.Array,
  target: jax.Array,
  *,
  fft_sizes: Sequence[int] = DEFAULT_STFT_FFT_SIZES,
  eps: float = 1e-7,
) -> jax.Array:
  """Mean over FFT sizes of spectral convergence + log-magnitude L1 (Yamamoto et al., 2020).

  Spectral convergence ||S_t - S_p||_F / ||S_t||_F is taken per example, then averaged.

  Args:
    prediction: [batch, samples] reconstructed audio.
    target: [batch, samples] real audio.
    fft_sizes: FFT sizes; hop s // 4.
    eps: power floor of the magnitudes.
  Returns:
    float32 scalar; 0 when prediction == target.
  """
  _check_pair(prediction, target)
  both = jnp.stack([prediction, target]).astype(jnp.float32)
  total = jnp.zeros((), jnp.float32)
  for n_fft in fft_sizes:
    mag = spectral.magnitude(spectral.stft(both, n_fft, n_fft // 4), eps)
    pred, true = mag[0], mag[1]
    diff_norm = jnp.sqrt(jnp.sum(jnp.square(true - pred), axis=(-2, -1)))
    true_norm = jnp.sqrt(jnp.sum(jnp.square(true), axis=(-2, -1)))
    convergence = jnp.mean(diff_norm / jnp.maximum(true_norm, eps))
    log_l1 = jnp.mean(jnp.abs(jnp.log(true) - jnp.log(pred)))
    total += convergence + log_l1
  return total / len(fft_sizes)


def discriminator_hinge_loss(
  real_logits: Sequence[jax.Array], fake_logits: Sequence[jax.Array]
) -> jax.Array:
  """Hinge loss of the discriminator: mean over scales of E[relu(1 - D(x))] + E[relu(1 + D(G))].

  Args:
    real_logits: one array per scale, logits on real audio.
    fake_logits: the same scales on reconstructions (stop their gradient into the generator).
  Returns:
    float32 scalar; 0 once every real logit is ≥ 1 and every fake logit ≤ -1.
  """
  if len(real_logits) != len(fake_logits) or not real_logits:
    raise ValueError(f"Got {len(real_logits)} real and {len(fake_logits)} fake logit scales.")
  losses = [
    jnp.mean(jax.nn.relu(1.0 - r.astype(jnp.float32)))
    + jnp.mean(jax.nn.relu(1.0 + f.astype(jnp.float32)))
    for r, f in zip(real_logits, fake_logits)
  ]
  return jnp.mean(jnp.stack(losses))


def generator_hinge_loss(fake_logits: Sequence[jax.Array]) -> jax.Array:
  """Adversarial loss of the generator: mean over scales of E[relu(1 - D(G(x)))].

  Args:
    fake_logits: one array per scale, logits on reconstructions.
  Returns:
    float32 scalar; 0 once every fake logit is ≥ 1.
  """
  if not fake_logits:
    raise ValueError("generator_hinge_loss needs at least one scale of logits.")
  losses = [jnp.mean(jax.nn.relu(1.0 - f.astype(jnp.float32))) for f in fake_logits]
  return jnp.mean(jnp.stack(losses))


def feature_matching_loss(
  real_features: Sequence[Sequence[jax.Array]],
  fake_features: Sequence[Sequence[jax.Array]],
  eps: float = 1e-8,
) -> jax.Array:
  """Mean over scales and layers of mean|real - fake| / mean|real|.

  Normalising by the real map's mean magnitude weighs every layer alike, whatever its scale. The
  real maps are constants of the generator's loss (their gradient is stopped).

  Args:
    real_features: per scale, the discriminator's hidden maps on real audio.
    fake_features: the same maps on reconstructions.
    eps: floor of the normaliser.
  Returns:
    float32 scalar; 0 when the maps are equal.
  """
  if len(real_features) != len(fake_features) or not real_features:
    raise ValueError(f"Got {len(real_features)} real and {len(fake_features)} fake scales.")
  losses = []
  for real_scale, fake_scale in zip(real_features, fake_features):
    if len(real_scale) != len(fake_scale):
      raise ValueError(f"A scale has {len(real_scale)} real and {len(fake_scale)} fake maps.")
    for real, fake in zip(real_scale, fake_scale):
      real = jax.lax.stop_gradient(real.astype(jnp.float32))
      scale = jnp.maximum(jnp.mean(jnp.abs(real)), eps)
      losses.append(jnp.mean(jnp.abs(real - fake.astype(jnp.float32))) / scale)
  return jnp.mean(jnp.stack(losses))


def mel_distance(
  a: jax.Array,
  b: jax.Array,
  sample_rate: int,
  *,
  fft_sizes: Sequence[int] = (512, 1024, 2048),
  n_mels: int = 80,
) -> jax.Array:
  """Reconstruction metric: mean |Δ log-mel| over a few FFT sizes, per example.

  Args:
    a: [batch, samples] audio.
    b: [batch, samples] audio.
    sample_rate: Hz.
    fft_sizes: FFT sizes (hop s // 4).
    n_mels: mel filters per scale (capped at s // 4).
  Returns:
    float32 [batch]; 0 where a == b, larger for more distortion.
  """
  _check_pair(a, b)
  both = jnp.stack([a, b]).astype(jnp.float32)
  distances = []
  for n_fft in fft_sizes:
    log_mel = spectral.log_mel_spectrogram(
      both, sample_rate, n_fft, n_fft // 4, _mels_for(n_fft, n_mels), floor=_LOG_FLOOR
    )
    distances.append(jnp.mean(jnp.abs(log_mel[0] - log_mel[1]), axis=(-2, -1)))
  return jnp.mean(jnp.stack(distances), axis=0)
