"""MuLan audio tower: unit-vector embeddings, ResNet sizes, windows and clip embeddings."""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.tokenizers.mulan.audio_tower import AudioTower, clip_embedding, clip_windows
from musiclm_jax.tokenizers.mulan.config import AudioTowerConfig
from tests.size_configs import size_config

# Tiny tower on 10 s windows with a 1 s hop, as the paper's clip embedding.
CONFIG = dataclasses.replace(size_config("mulan", "tiny").audio, window_seconds=10.0)
TOWER = AudioTower(CONFIG)


@functools.cache
def _params():
  audio = jnp.zeros((1, CONFIG.window_samples), jnp.float32)
  return nn.unbox(jax.jit(TOWER.init)(jax.random.key(0), audio)["params"])


@jax.jit
def _embed(params, audio):
  return TOWER.apply({"params": params}, audio)


def _audio(batch: int, seconds: float, seed: int = 0) -> np.ndarray:
  """Sums of random sines and noise, different per example."""
  rng = np.random.RandomState(seed)
  t = np.arange(round(seconds * CONFIG.sample_rate)) / CONFIG.sample_rate
  freqs = rng.uniform(100.0, 4000.0, size=(batch, 3, 1))
  sines = np.sin(2 * np.pi * freqs * t).sum(axis=1) * 0.1
  return (sines + 0.01 * rng.randn(batch, t.size)).astype(np.float32)


def test_windows_embed_to_128d_unit_vectors():
  emb = np.asarray(_embed(_params(), _audio(2, 10.0)))
  assert emb.shape == (2, 128)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)
  assert not np.allclose(emb[0], emb[1], atol=1e-3)


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_num_params_matches_the_module(size):
  config = size_config("mulan", size).audio
  audio = jax.ShapeDtypeStruct((1, config.window_samples), jnp.float32)
  shapes = jax.eval_shape(AudioTower(config).init, jax.random.key(0), audio)["params"]
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(shapes)))
  assert count == config.num_params()


def test_paper_tower_is_resnet50_sized_and_embeds_10s_windows():
  config = size_config("mulan", "paper").audio
  assert config.stage_depths == (3, 4, 6, 3) and config.block_type == "bottleneck"
  audio = jax.ShapeDtypeStruct((2, 10 * 24000), jnp.float32)
  tower = AudioTower(config)
  variables = jax.eval_shape(tower.init, jax.random.key(0), audio)
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(variables)))
  # ResNet-50 without its classifier has ≈23.5M parameters; + a 2048 × 128 projection.
  assert count == config.num_params()
  assert 23.0e6 < count < 24.5e6, count
  out = jax.eval_shape(tower.apply, nn.unbox(variables), audio)
  assert out.shape == (2, 128) and out.dtype == jnp.float32


def test_config_rejects_inconsistent_settings():
  with pytest.raises(ValueError, match="block_type"):
    AudioTowerConfig(block_type="wide")
  with pytest.raises(ValueError, match="norm_groups"):
    AudioTowerConfig(norm_groups=48)
  with pytest.raises(ValueError, match="same length"):
    AudioTowerConfig(stage_depths=(1, 1), stage_widths=(8,))
  with pytest.raises(ValueError, match="n_mels"):
    AudioTowerConfig(n_fft=64, n_mels=64)


def test_clip_windows():
  sr = 24000
  starts = clip_windows(25 * sr, 10 * sr, sr)
  np.testing.assert_array_equal(starts, np.arange(16) * sr)  # 25 s, 10 s windows, 1 s hop
  np.testing.assert_array_equal(clip_windows(10 * sr, 10 * sr, sr), [0])
  np.testing.assert_array_equal(clip_windows(3 * sr, 10 * sr, sr), [0])  # short: one window
  # A tail shorter than a hop gets one more window, aligned with the clip's end.
  np.testing.assert_array_equal(clip_windows(1250, 1000, 100), [0, 100, 200, 250])
  with pytest.raises(ValueError, match="positive"):
    clip_windows(0, 10, 1)


def test_clip_embedding_of_25s_is_the_normalised_mean_of_16_windows():
  params, audio = _params(), _audio(2, 25.0, seed=1)
  window, hop = CONFIG.window_samples, CONFIG.hop_samples
  apply_fn = functools.partial(_embed, params)
  manual = np.mean(
    [np.asarray(apply_fn(audio[:, s * hop : s * hop + window])) for s in range(16)], 0
  )
  manual /= np.linalg.norm(manual, axis=-1, keepdims=True)
  embed = jax.jit(clip_embedding, static_argnums=(0, 2, 3), static_argnames="windows_per_call")
  full = embed(apply_fn, audio, window, hop)
  np.testing.assert_allclose(full, manual, atol=2e-5)
  np.testing.assert_allclose(np.linalg.norm(full, axis=-1), 1.0, rtol=1e-5)
  chunked = embed(apply_fn, audio, window, hop, windows_per_call=5)  # 32 windows in 7 calls
  np.testing.assert_allclose(chunked, full, atol=2e-5)


def test_clips_shorter_than_a_window_are_zero_padded():
  params, audio = _params(), _audio(2, 4.0, seed=2)
  window = CONFIG.window_samples
  padded = np.pad(audio, ((0, 0), (0, window - audio.shape[1])))
  short = clip_embedding(functools.partial(_embed, params), audio, window, CONFIG.hop_samples)
  np.testing.assert_allclose(short, _embed(params, padded), atol=1e-5)
