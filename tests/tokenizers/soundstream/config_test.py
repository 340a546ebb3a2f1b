"""SoundStream configs: gin size files parse and build, paper numbers, parameter budgets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from musiclm_jax.tokenizers.rvq import RVQConfig
from musiclm_jax.tokenizers.soundstream import (
  SoundStream,
  SoundStreamConfig,
  SoundStreamDiscriminator,
)
from tests.size_configs import size_config


def _num_params(module, audio_shape=(1, 24000), **kwargs) -> int:
  """Parameter count from abstract shapes (nothing is allocated or compiled)."""
  audio = jax.ShapeDtypeStruct(audio_shape, jnp.float32)
  variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, **kwargs), audio)
  return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("size", ["tiny", "base", "paper"])
def test_gin_file_builds_a_50hz_24khz_config(size):
  config = size_config("soundstream", size)
  assert isinstance(config, SoundStreamConfig)
  assert (config.sample_rate, config.hop_length, config.frame_rate) == (24000, 480, 50)
  assert config.rvq.dim == config.embedding_dim


def test_paper_gin_file_is_the_dataclass_default():
  assert size_config("soundstream", "paper") == SoundStreamConfig()
  assert SoundStreamConfig().rvq == RVQConfig(
    num_levels=12, codebook_size=1024, dim=128, dead_code_threshold=0.05
  )
  assert size_config("soundstream", "base").rvq.num_levels == 12


def test_parameter_budgets():
  tiny = _num_params(SoundStream(size_config("soundstream", "tiny")), train=False)
  paper = _num_params(SoundStream(SoundStreamConfig()), train=False)
  assert 5_000 <= tiny <= 100_000
  assert 5_000_000 <= paper <= 20_000_000
  assert _num_params(SoundStreamDiscriminator(size_config("soundstream", "tiny"))) <= 100_000


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
