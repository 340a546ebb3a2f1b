"""Fixtures of the builder tests (the inputs themselves are written by inputs.py)."""

from __future__ import annotations

import pathlib

import pytest

from tests.data.builders.inputs import write_musiccaps


@pytest.fixture(scope="module")
def musiccaps_dir(tmp_path_factory) -> pathlib.Path:
  manual_dir = tmp_path_factory.mktemp("musiccaps_manual")
  write_musiccaps(manual_dir)
  return manual_dir
