"""MuLan's audio tower: a ResNet on log-mel spectrograms, and clip embeddings over windows.

    audio [b, samples] ─► log-mel [b, frames, mels, 1] ─► stem ─► ResNet stages
        ─► global average pool [b, channels] ─► linear [b, embed_dim] ─► L2-normalise

The tower embeds one window (any length of at least n_fft samples works: the pool is global).
A clip's embedding is the mean of its windows' embeddings, re-normalised (`clip_embedding`).
Parameters carry logical axis names: conv kernels shard their output channels like `EMBED`
(FSDP), activations stay split over the batch only.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax import axes
from musiclm_jax.layers import spectral
from musiclm_jax.layers.dense import Projection
from musiclm_jax.tokenizers.mulan.config import AudioTowerConfig

_ACTIVATION_AXES = (axes.BATCH, axes.LENGTH, None, axes.ACT_EMBED)


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """x / max(|x|, eps) over the last axis, in float32: [..., d] -> [..., d]."""
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def log_mel_features(audio: jax.Array, config: AudioTowerConfig) -> jax.Array:
  """Normalised log-mel image of a window.

  Args:
    audio: [batch, samples] float at config.sample_rate.
  Returns:
    float32 [batch, 1 + samples // hop_length, n_mels, 1].
  """
  mel = spectral.log_mel_spectrogram(
    audio.astype(jnp.float32),
    config.sample_rate,
    config.n_fft,
    config.hop_length,
    config.n_mels,
    floor=config.mel_floor,
  )
  return ((mel - config.feature_mean) / config.feature_std)[..., None]


class ConvNorm(nn.Module):
  """Bias-free 2-D conv ('SAME' padding) → GroupNorm, optionally → ReLU.

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    stride: stride over time and frequency.
    relu: apply a ReLU after the norm.
  """

  features: int
  kernel_size: int
  config: AudioTowerConfig
  stride: int = 1
  relu: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, time, freq, in] -> [batch, ceil(time / stride), ceil(freq / stride), features]."""
    cfg = self.config
    x = nn.Conv(
      self.features,
      (self.kernel_size, self.kernel_size),
      strides=(self.stride, self.stride),
      padding="SAME",
      use_bias=False,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      kernel_init=nn.with_logical_partitioning(
        nn.initializers.kaiming_normal(), (None, None, None, axes.EMBED)
      ),
      name="conv",
    )(x)
    x = nn.GroupNorm(
      num_groups=cfg.norm_groups,
      epsilon=cfg.norm_eps,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axes.EMBED,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes.EMBED,)),
      name="norm",
    )(x)
    return nn.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
  """A post-activation ResNet block (v1.5: the stride sits in the 3×3 conv).

  'bottleneck': 1×1 (width) → 3×3 (width, stride) → 1×1 (width × 4); 'basic': 3×3 (width,
  stride) → 3×3 (width). The shortcut is a strided 1×1 conv + norm when the shape changes.
  """

  width: int
  stride: int
  config: AudioTowerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, time, freq, in] -> [batch, time / stride, freq / stride, width × expansion]."""
    cfg = self.config
    out = self.width * cfg.expansion
    if cfg.block_type == "bottleneck":
      y = ConvNorm(self.width, 1, cfg, name="conv_in")(x)
      y = ConvNorm(self.width, 3, cfg, stride=self.stride, name="conv_mid")(y)
      y = ConvNorm(out, 1, cfg, relu=False, name="conv_out")(y)
    else:
      y = ConvNorm(self.width, 3, cfg, stride=self.stride, name="conv_in")(x)
      y = ConvNorm(out, 3, cfg, relu=False, name="conv_out")(y)
    if self.stride != 1 or x.shape[-1] != out:
      x = ConvNorm(out, 1, cfg, stride=self.stride, relu=False, name="shortcut")(x)
    return nn.relu(x + y)


class AudioTower(nn.Module):
  """Embeds audio windows into the joint space (unit vectors)."""

  config: AudioTowerConfig

  @nn.compact
  def __call__(self, audio: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """Embeds windows.

    Args:
      audio: [batch, samples] float at config.sample_rate (samples >= n_fft).
      deterministic: no dropout.
    Returns:
      float32 [batch, embed_dim], unit L2 norm.
    """
    cfg = self.config
    x = log_mel_features(audio, cfg).astype(cfg.compute_dtype)
    x = nn.with_logical_constraint(x, _ACTIVATION_AXES)
    stem = ConvNorm(
      cfg.stem_channels, cfg.stem_kernel_size, cfg, stride=cfg.stem_stride, name="stem"
    )
    x = stem(x)
    if cfg.stem_pool:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for stage, (depth, width) in enumerate(zip(cfg.stage_depths, cfg.stage_widths)):
      for block in range(depth):
        stride = 2 if stage > 0 and block == 0 else 1
        x = ResidualBlock(width, stride, cfg, name=f"stage_{stage}_block_{block}")(x)
      x = nn.with_logical_constraint(x, _ACTIVATION_AXES)
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    pooled = nn.Dropout(cfg.dropout_rate)(pooled, deterministic=deterministic)
    embedding = Projection(
      cfg.embed_dim,
      (axes.EMBED, None),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      name="projection",
    )(pooled)
    return l2_normalize(embedding)


def clip_windows(num_samples: int, window_samples: int, hop_samples: int) -> np.ndarray:
  """Start samples of the windows whose embeddings average into a clip embedding.

  Windows start every `hop_samples` and lie wholly inside the clip; when the last of them ends
  before the clip does, one more window aligned with the clip's end is added, so every sample is
  seen. A clip shorter than a window has one window at 0 (`clip_embedding` zero-pads it).

  Args:
    num_samples: clip length.
    window_samples: window length.
    hop_samples: hop between window starts.
  Returns:
    int64 [num_windows] start samples, increasing.
  """
  if num_samples < 1 or window_samples < 1 or hop_samples < 1:
    raise ValueError(
      f"Need positive lengths, got num_samples={num_samples}, window_samples={window_samples}, "
      f"hop_samples={hop_samples}."
    )
  last = num_samples - window_samples
  if last <= 0:
    return np.zeros((1,), np.int64)
  starts = np.arange(0, last + 1, hop_samples, dtype=np.int64)
  if starts[-1] != last:
    starts = np.append(starts, last)
  return starts


def _apply_in_chunks(
  apply_fn: Callable[[jax.Array], jax.Array], windows: jax.Array, chunk: int | None
) -> jax.Array:
  """apply_fn over [n, window] rows, `chunk` rows per call (all at once when None)."""
  n = windows.shape[0]
  if chunk is None or chunk >= n:
    return apply_fn(windows)
  num_chunks = -(-n // chunk)
  padded = jnp.pad(windows, ((0, num_chunks * chunk - n), (0, 0)))
  out = jax.lax.map(apply_fn, padded.reshape(num_chunks, chunk, -1))
  return out.reshape((num_chunks * chunk,) + out.shape[2:])[:n]


def clip_embedding(
  apply_fn: Callable[[jax.Array], jax.Array],
  audio: jax.Array,
  window_samples: int,
  hop_samples: int,
  *,
  windows_per_call: int | None = None,
) -> jax.Array:
  """The paper's clip embedding: mean of window embeddings, re-normalised (DESIGN §2).

  Pure: jit it with `apply_fn` closed over. Every clip in the batch has the same length; a clip
  shorter than a window is zero-padded to one window (its embedding is that of the clip followed
  by silence).

  Args:
    apply_fn: window embedder, [n, window_samples] -> [n, embed_dim] (unit vectors).
    audio: [batch, samples] float.
    window_samples: window length (paper: 10 s).
    hop_samples: hop between windows (paper: 1 s).
    windows_per_call: embed at most this many windows per `apply_fn` call (bounds memory on
      long clips; the calls run in a `lax.map`); None: all windows of the batch at once.
  Returns:
    float32 [batch, embed_dim], unit L2 norm.
  """
  batch, samples = audio.shape
  if samples < window_samples:
    audio = jnp.pad(audio, ((0, 0), (0, window_samples - samples)))
  starts = clip_windows(samples, window_samples, hop_samples)
  index = starts[:, None] + np.arange(window_samples)[None, :]
  windows = audio[:, index].reshape(batch * len(starts), window_samples)
  embeddings = _apply_in_chunks(apply_fn, windows, windows_per_call)
  embeddings = embeddings.reshape(batch, len(starts), -1)
  return l2_normalize(jnp.mean(embeddings.astype(jnp.float32), axis=1))
