"""Smoke tests of `musiclm-jax bench tokenize` and `bench input-pipeline` at tiny size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import gin
from musiclm_jax.main import cli

REPO_ROOT = Path(__file__).resolve().parents[2]

TOKENIZE_KEYS = {
  "size",
  "seconds",
  "batch",
  "compile_s",
  "tokenize_s",
  "audio_seconds_per_s",
  "codec_s",
  "semantic_s",
  "mulan_s",
  "codec_share",
  "semantic_share",
  "mulan_share",
  "one_at_a_time_s",
  "one_at_a_time_audio_seconds_per_s",
  "batched_speedup",
}
PIPELINE_KEYS = {
  "stage",
  "sequence_length",
  "batch_size",
  "startup_s",
  "pipeline_examples_per_s",
  "pipeline_tokens_per_s",
  "cpu_cores",
  "pipeline_examples_per_s_per_core",
  "train_batch_size",
  "train_step_s",
  "trainer_examples_per_s",
  "pipeline_over_trainer",
}


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)
  yield
  gin.clear_config()


def _positive_finite(row: dict, keys: set[str]) -> None:
  for key in keys:
    if isinstance(row[key], float | int):
      assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])


def test_bench_tokenize_times_the_bundle_and_each_tokenizer(tmp_path, capsys):
  out = tmp_path / "tokenize.json"
  args = ["--size=tiny", "--seconds=2", "--batch_sizes=1,2", "--repeats=1", f"--out={out}"]
  assert cli.main(["bench", "tokenize", *args]) == 0
  assert "batched_speedup" in capsys.readouterr().out
  rows = json.loads(out.read_text())["rows"]
  assert [(r["size"], r["seconds"], r["batch"]) for r in rows] == [
    ("tiny", 2.0, 1),
    ("tiny", 2.0, 2),
  ]
  for row in rows:
    assert set(row) == TOKENIZE_KEYS
    _positive_finite(row, TOKENIZE_KEYS)
    assert row["audio_seconds_per_s"] == pytest.approx(row["batch"] * 2.0 / row["tokenize_s"])
    assert sum(row[f"{p}_share"] for p in ("codec", "semantic", "mulan")) == pytest.approx(1.0)
    assert row["batched_speedup"] == pytest.approx(row["one_at_a_time_s"] / row["tokenize_s"])
  # At batch 1 the bundle already tokenizes one clip per call.
  assert rows[0]["one_at_a_time_s"] == rows[0]["tokenize_s"]


def test_bench_input_pipeline_compares_pipeline_and_train_step(tmp_path, capsys):
  out = tmp_path / "pipeline.json"
  args = [
    "--size=tiny",
    "--stages=fine",
    "--cache_clips=8",
    "--cache_clip_seconds=8",
    "--pipeline_batch_size=4",
    "--pipeline_batches=4",
    "--train_batch_size=8",  # one example per fake device
    f"--out={out}",
  ]
  assert cli.main(["bench", "input-pipeline", *args]) == 0
  assert "pipeline_over_trainer" in capsys.readouterr().out
  (row,) = json.loads(out.read_text())["rows"]
  assert set(row) == PIPELINE_KEYS
  _positive_finite(row, PIPELINE_KEYS - {"stage"})
  assert row["stage"] == "fine" and row["batch_size"] == 4 and row["train_batch_size"] == 8
  assert row["trainer_examples_per_s"] == pytest.approx(8 / row["train_step_s"])
  assert row["pipeline_over_trainer"] == pytest.approx(
    row["pipeline_examples_per_s"] / row["trainer_examples_per_s"]
  )
  assert row["pipeline_tokens_per_s"] == pytest.approx(
    row["pipeline_examples_per_s"] * row["sequence_length"]
  )
