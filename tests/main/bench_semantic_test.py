"""Smoke test of `musiclm-jax bench semantic`: gin W2V_BERT_CONFIG -> tokenization speed JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gin
from musiclm_jax.main import cli

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)
  yield
  gin.clear_config()


def test_bench_semantic_writes_positive_figures(tmp_path, capsys):
  out = tmp_path / "semantic.json"
  args = ["--gin_file=gin/models/w2v_bert/tiny.gin", "--seconds=1", "--batch_sizes=1,2"]
  code = cli.main(["bench", "semantic", *args, "--num_clusters=8", "--repeats=2", f"--out={out}"])
  assert code == 0
  assert "audio_seconds_per_s" in capsys.readouterr().out
  rows = json.loads(out.read_text())["rows"]
  assert [(r["batch"], r["frames"]) for r in rows] == [(1, 25), (2, 25)]
  for row in rows:
    assert row["tokenize_s"] > 0 and row["audio_seconds_per_s"] > 0
    assert row["audio_seconds_per_s"] == pytest.approx(row["batch"] / row["tokenize_s"])
