"""The prepared accelerator benchmark runs where gin, seqio, TensorFlow, TFDS and Beam are absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from musiclm_jax.benchmarks import gpu
from musiclm_jax.main import gin_utils

# The lent machine's image lacks these: importing any of them must fail in the benchmark's process.
_ABSENT = ("seqio", "tensorflow", "tensorflow_datasets", "gin", "apache_beam")

_RUN_WITHOUT = textwrap.dedent(
  f"""
  import importlib.abc, runpy, sys

  class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
      if name.split(".")[0] in {_ABSENT!r}:
        raise ModuleNotFoundError(f"No module named {{name!r}} (absent on the lent machine)")

  sys.meta_path.insert(0, Absent())
  sys.argv = ["gpu"] + sys.argv[1:]
  runpy.run_module("musiclm_jax.benchmarks.gpu", run_name="__main__")
  """
)


def _run(tmp_path, *flags: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one device, as on the lent machine
  proc = subprocess.run(
    [sys.executable, "-c", _RUN_WITHOUT, f"--out={tmp_path}", *flags],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads((tmp_path / "gpu_benchmark.json").read_text())


def test_every_part_measures_at_tiny_size_without_the_absent_packages(tmp_path):
  report = _run(tmp_path, "--size=tiny", "--budget_s=300")
  parts = report["parts"]
  assert {name: part["status"] for name, part in parts.items()} == {
    name: "ok" for name, _ in gpu.PARTS
  }
  for name in ("train_semantic", "train_coarse"):
    (row,) = parts[name]["rows"]
    assert row["timed_steps"] >= 1 and row["tokens_per_s"] > 0
    assert row["mfu"] is None  # no known peak on CPU
  decode = parts["decode"]["rows"]
  assert [r["batch"] for r in decode] == [1, 4]
  assert all(r["tokens_per_s"] > 0 and 0 < r["roofline_fraction"] for r in decode)
  assert [r["batch"] for r in parts["codec"]["rows"]] == [1, 2]
  markdown = (tmp_path / "gpu_benchmark.md").read_text()
  assert "**decode**" in markdown and "| batch |" in markdown


def test_a_spent_budget_skips_the_remaining_parts_and_still_writes_the_report(tmp_path):
  # The first part starts within its share (it always runs at least one timed step) and
  # overruns it; nothing is left for the others.
  report = _run(tmp_path, "--size=tiny", "--budget_s=0.001")
  statuses = [report["parts"][name]["status"] for name, _ in gpu.PARTS]
  assert statuses[0] == "ok"
  assert all(s == "skipped: the budget was spent" for s in statuses[1:])
  assert "skipped" in (tmp_path / "gpu_benchmark.md").read_text()


@pytest.mark.parametrize("size", ["tiny", "paper"])
@pytest.mark.parametrize("stage", ["semantic", "coarse", "fine"])
def test_python_configs_equal_the_gin_size_files(size, stage):
  gin_utils.parse([f"gin/models/{stage}/{size}.gin"], [])
  from_gin = gin_utils.macro("MODEL")
  ours = gpu.stage_model(size, stage)
  assert ours.config == from_gin.config
  assert ours.layout == from_gin.layout
  assert ours.codebook_softmax == from_gin.codebook_softmax


def test_the_paper_codec_equals_the_gin_size_file():
  gin_utils.parse(["gin/models/soundstream/paper.gin"], [])
  assert gpu.CODECS["paper"] == gin_utils.macro("CODEC_CONFIG")
