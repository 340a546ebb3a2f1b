"""SoundStream configs: gin size files parse and build, paper numbers, parameter budgets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import gin
from musiclm_jax.main import gin_utils
from musiclm_jax.tokenizers.rvq import RVQConfig
from musiclm_jax.tokenizers.soundstream import (
  SoundStream,
  SoundStreamConfig,
  SoundStreamDiscriminator,
)


def _gin_config(size: str) -> SoundStreamConfig:
  gin_utils.parse([f"gin/models/soundstream/{size}.gin"], [])
  try:
    return gin_utils.macro("CODEC_CONFIG")
  finally:
    gin.clear_config()


def _num_params(module, audio_shape=(1, 24000), **kwargs) -> int:
  """Parameter count from abstract shapes (nothing is allocated or compiled)."""
  audio = jax.ShapeDtypeStruct(audio_shape, jnp.float32)
  variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, **kwargs), audio)
  return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("size", ["tiny", "base", "paper"])
def test_gin_file_builds_a_50hz_24khz_config(size):
  config = _gin_config(size)
  assert isinstance(config, SoundStreamConfig)
  assert (config.sample_rate, config.hop_length, config.frame_rate) == (24000, 480, 50)
  assert config.rvq.dim == config.embedding_dim


def test_gin_files_equal_the_python_configs():
  assert _gin_config("tiny") == SoundStreamConfig.tiny()
  assert _gin_config("paper") == SoundStreamConfig()
  assert SoundStreamConfig().rvq == RVQConfig(
    num_levels=12, codebook_size=1024, dim=128, dead_code_threshold=0.05
  )
  assert _gin_config("base").rvq.num_levels == 12


def test_parameter_budgets():
  tiny = _num_params(SoundStream(SoundStreamConfig.tiny()), train=False)
  paper = _num_params(SoundStream(SoundStreamConfig()), train=False)
  assert 5_000 <= tiny <= 100_000
  assert 5_000_000 <= paper <= 20_000_000
  assert _num_params(SoundStreamDiscriminator(SoundStreamConfig.tiny())) <= 100_000


@pytest.mark.parametrize(
  "changes, message",
  [
    (dict(strides=(2, 4)), "one channel multiplier per stride"),
    (dict(embedding_dim=64), "must equal embedding_dim"),
    (dict(strides=(7, 4, 5, 8)), "not a multiple of the hop"),
    (dict(activation="relu"), "must be 'elu' or 'snake'"),
  ],
)
def test_inconsistent_configs_are_rejected(changes, message):
  with pytest.raises(ValueError, match=message):
    SoundStreamConfig(**changes)
