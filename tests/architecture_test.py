"""Config dataclasses survive the JSON of a checkpoint's metadata."""

from __future__ import annotations

import dataclasses
import json

import pytest

from musiclm_jax import architecture
from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig
from tests.size_configs import size_config


@dataclasses.dataclass(frozen=True)
class _Inner:
  sizes: tuple[int, ...] = (1, 2)


@dataclasses.dataclass(frozen=True)
class _Outer:
  width: int = 8
  pairs: tuple[tuple[int, int], ...] = ((1, 2), (3, 4))
  inner: _Inner = _Inner()


def test_nested_dataclasses_and_tuples_round_trip():
  config = _Outer(width=3, pairs=((5, 6),), inner=_Inner(sizes=(7,)))
  saved = json.loads(json.dumps(architecture.to_json(config)))
  assert architecture.from_json(_Outer, saved) == config


def test_real_codec_config_round_trips():
  config = size_config("soundstream", "tiny")
  assert architecture.from_json(SoundStreamConfig, architecture.to_json(config)) == config


def test_unknown_keys_are_ignored_and_missing_defaults_fill_in():
  assert architecture.from_json(_Outer, {"width": 2, "retired_field": 1}) == _Outer(width=2)


def test_not_a_config_of_that_class_is_a_clear_error():
  @dataclasses.dataclass(frozen=True)
  class Required:
    depth: int

  with pytest.raises(ValueError, match="does not describe a Required"):
    architecture.from_json(Required, {"width": 2})
