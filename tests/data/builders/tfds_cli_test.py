"""TFDS's own `tfds build` command finds our builders through `--imports`, and `tfds.load` reads
what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

import musiclm_jax.data.builders  # noqa: F401  (registers the builders for tfds.load)
from tests.data.builders.inputs import MUSICCAPS_KEPT, MUSICCAPS_SKIPPED


@pytest.mark.slow
def test_tfds_build_cli_then_tfds_load(musiccaps_dir, tmp_path):
  tfds_cli = shutil.which("tfds", path=os.path.dirname(sys.executable))
  assert tfds_cli, "the tfds console script is installed with tensorflow-datasets"
  data_dir = tmp_path / "data"
  result = subprocess.run(
    [
      tfds_cli,
      "build",
      "--imports=musiclm_jax.data.builders",
      "musiccaps",
      f"--manual_dir={musiccaps_dir}",
      f"--data_dir={data_dir}",
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  for split, clips in MUSICCAPS_KEPT.items():
    dataset = tfds.load("musiccaps", split=split, data_dir=str(data_dir))
    ids = sorted(example["id"].numpy().decode() for example in dataset)
    assert ids == sorted(clips)
  (report_path,) = data_dir.glob("musiccaps/24khz/*/skip_report.json")
  assert json.loads(report_path.read_text())["by_reason"] == MUSICCAPS_SKIPPED
