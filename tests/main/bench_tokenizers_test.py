"""Smoke tests of `musiclm-jax bench semantic` and `bench mulan`: gin config -> speed JSON."""

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


TINY_HUBERT = {
  "conv_dim": "(8, 8, 8, 8, 8, 8, 8)",
  "hidden_size": "16",
  "num_layers": "2",
  "num_heads": "2",
  "intermediate_size": "32",
  "num_conv_pos_embeddings": "8",
  "num_conv_pos_embedding_groups": "4",
}


def test_bench_semantic_times_an_imported_hubert_architecture(tmp_path, capsys):
  out = tmp_path / "hubert.json"
  shrink = [f"--gin.hubert_config.HubertEncoderConfig.{k}={v}" for k, v in TINY_HUBERT.items()]
  args = ["--gin_file=gin/models/hubert/base.gin", *shrink, "--seconds=1", "--batch_sizes=2"]
  assert (
    cli.main(["bench", "semantic", *args, "--num_clusters=8", "--repeats=1", f"--out={out}"]) == 0
  )
  assert "imported hubert (16000 Hz), layer 1" in capsys.readouterr().out
  rows = json.loads(out.read_text())["rows"]
  assert [(r["batch"], r["frames"]) for r in rows] == [(2, 25)]
  assert rows[0]["tokenize_s"] > 0


def test_bench_mulan_writes_positive_figures(tmp_path, capsys):
  out = tmp_path / "mulan.json"
  args = ["--gin_file=gin/models/mulan/tiny.gin", "--batch_sizes=1,2", "--repeats=2"]
  assert cli.main(["bench", "mulan", *args, f"--out={out}"]) == 0
  assert "captions_per_s" in capsys.readouterr().out
  rows = json.loads(out.read_text())["rows"]
  assert [r["batch"] for r in rows] == [1, 2]
  for row in rows:
    assert row["audio_s"] > 0 and row["text_s"] > 0
    assert row["audio_seconds_per_s"] == pytest.approx(row["batch"] * 2.0 / row["audio_s"])
