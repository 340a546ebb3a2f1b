"""w2v-BERT feature front end: 80-bin log-mel at 100 Hz, normalised, subsampled ×4 to 25 Hz.

Audio [batch, S] → centred STFT (hop 240, Hann window 600 in n_fft 1024, zero padding) → power
→ Slaney mel filterbank → log → normalisation → two 3×3 stride-2 convolutions (time and
frequency) → dense to d_model → LayerNorm. The first 4·F mel frames are kept, F = S // 960, so
the frame count is exactly S // 960 whatever S is.

`audio_mask` marks real samples; padded samples are zeroed before the STFT, excluded from the
normalisation statistics, and frames whose 960 samples are mostly padding are invalid.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax import axes
from musiclm_jax.layers import spectral
from musiclm_jax.layers.dense import Projection
from musiclm_jax.layers.normalization import LayerNorm
from musiclm_jax.tokenizers.w2v_bert.config import SUBSAMPLING, W2VBertConfig


def log_mel(audio: jax.Array, config: W2VBertConfig) -> jax.Array:
  """Log mel power spectrogram (librosa `feature.melspectrogram(power=2)` conventions).

  Args:
    audio: [batch, samples] float.
    config: front-end settings (sample_rate, n_fft, hop_length, win_length, n_mels, mel_floor).
  Returns:
    float32 [batch, 1 + samples // hop_length, n_mels], natural log.
  """
  spectrum = spectral.stft(
    audio, config.n_fft, config.hop_length, config.win_length, center=True, pad_mode="constant"
  )
  power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
  filters = spectral.slaney_mel_filterbank(config.sample_rate, config.n_fft, config.n_mels)
  mel = jnp.matmul(power, filters, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(jnp.maximum(mel, config.mel_floor))


def num_frames(num_samples: int, config: W2VBertConfig) -> int:
  """Output frames for `num_samples` of audio: num_samples // 960 at 24 kHz."""
  frames = config.num_frames(num_samples)
  if frames < 1:
    raise ValueError(
      f"{num_samples} samples are shorter than one w2v-BERT frame ({config.samples_per_frame})."
    )
  return frames


def frame_valid(audio_mask: jax.Array, config: W2VBertConfig) -> jax.Array:
  """Frames whose samples are mostly real audio.

  Args:
    audio_mask: [batch, samples], 1 on real samples.
  Returns:
    bool [batch, samples // samples_per_frame].
  """
  frames = num_frames(audio_mask.shape[-1], config)
  per_frame = jnp.asarray(audio_mask)[:, : frames * config.samples_per_frame].astype(jnp.float32)
  per_frame = per_frame.reshape(audio_mask.shape[0], frames, config.samples_per_frame)
  return jnp.mean(per_frame, axis=-1) >= 0.5


def mel_valid(audio_mask: jax.Array, num_mel_frames: int, hop_length: int) -> jax.Array:
  """Mel frames centred on a real sample: bool [batch, num_mel_frames]."""
  centres = np.minimum(np.arange(num_mel_frames) * hop_length, audio_mask.shape[-1] - 1)
  return jnp.asarray(audio_mask)[:, centres] > 0.5


def normalize(features: jax.Array, valid: jax.Array, config: W2VBertConfig) -> jax.Array:
  """Normalises log-mel features; padded frames become zeros.

  Args:
    features: [batch, frames, n_mels] log-mel.
    valid: [batch, frames] bool.
  Returns:
    [batch, frames, n_mels]: per example and bin zero mean / unit variance over the valid
    frames ('utterance'), or (x - feature_mean) / feature_std ('fixed').
  """
  weights = valid[..., None].astype(jnp.float32)
  if config.feature_norm == "fixed":
    return (features - config.feature_mean) / config.feature_std * weights
  count = jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1.0)
  mean = jnp.sum(features * weights, axis=1, keepdims=True) / count
  var = jnp.sum(jnp.square(features - mean) * weights, axis=1, keepdims=True) / count
  return (features - mean) * jax.lax.rsqrt(var + 1e-5) * weights


class FeatureFrontEnd(nn.Module):
  """Audio → normalised log-mel → conv subsampling ×4 → [batch, frames, d_model]."""

  config: W2VBertConfig

  @nn.compact
  def __call__(
    self, audio: jax.Array, audio_mask: jax.Array | None = None, *, deterministic: bool = True
  ) -> tuple[jax.Array, jax.Array]:
    """Computes frame features.

    Args:
      audio: [batch, samples] float at config.sample_rate.
      audio_mask: [batch, samples], 1 on real samples (default: all real).
      deterministic: no dropout.
    Returns:
      (features [batch, frames, d_model], valid [batch, frames] bool), frames = samples // 960.
    """
    cfg = self.config
    if audio_mask is None:
      audio_mask = jnp.ones(audio.shape, jnp.float32)
    frames = num_frames(audio.shape[-1], cfg)
    audio = audio.astype(jnp.float32) * audio_mask.astype(jnp.float32)
    mel = log_mel(audio, cfg)[:, : frames * SUBSAMPLING]
    mel = normalize(mel, mel_valid(audio_mask, mel.shape[1], cfg.hop_length), cfg)
    x = self._subsample(mel.astype(cfg.compute_dtype)[..., None])  # [batch, frames, freq, ch]
    x = x.reshape(x.shape[0], x.shape[1], -1)
    x = Projection(
      cfg.d_model,
      (None, axes.EMBED),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      name="projection",
    )(x)
    x = LayerNorm(name="norm", dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)(x)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))
    return x, frame_valid(audio_mask, cfg)

  def _subsample(self, x: jax.Array) -> jax.Array:
    """[batch, 4F, n_mels, 1] -> [batch, F, ceil(ceil(n_mels / 2) / 2), channels]."""
    cfg = self.config
    for i in range(2):
      x = nn.Conv(
        cfg.subsampling_channels,
        (3, 3),
        strides=(2, 2),
        padding=((1, 1), (1, 1)),
        dtype=cfg.compute_dtype,
        param_dtype=cfg.weight_dtype,
        name=f"subsample_{i}",
      )(x)
      x = nn.swish(x)
    return x
