"""Smoke test of `musiclm-jax bench pipeline` at tiny size: text → audio, timed stage by stage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import gin
from musiclm_jax.main import bench

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = ("semantic", "coarse", "fine")
KEYS = {
  "size",
  "seconds",
  "batch",
  "frames",
  "compile_s",
  "mulan_tokens",
  "mulan_s",
  *(
    f"{stage}_{what}" for stage in STAGES for what in ("windows", "new_tokens", "s", "tokens_per_s")
  ),
  "codec_s",
  "total_s",
  "real_time_factor",
  "audio_seconds_per_s",
}


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)
  yield
  gin.clear_config()


@pytest.mark.slow
def test_bench_pipeline_times_each_stage_of_text_to_music(tmp_path, capsys):
  out = tmp_path / "pipeline.json"
  args = ["--size=tiny", "--seconds=2", "--batch_sizes=1,2", f"--out={out}"]
  assert bench.main(["pipeline", *args]) == 0
  assert "real_time_factor" in capsys.readouterr().out
  rows = json.loads(out.read_text())["rows"]
  assert [(r["size"], r["seconds"], r["batch"]) for r in rows] == [
    ("tiny", 2.0, 1),
    ("tiny", 2.0, 2),
  ]
  for row in rows:
    assert set(row) == KEYS
    for key in KEYS - {"size"}:
      assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    # Tiny tokenizers: semantic and SoundStream frames at 25 and 50 Hz, 6 acoustic levels of
    # which the tiny stage gin files make 2 coarse; the 2 s clip fills the coarse crop (2 s).
    frames = row["frames"]
    assert frames == 50
    assert (row["semantic_new_tokens"], row["coarse_new_tokens"], row["fine_new_tokens"]) == (
      frames,
      2 * frames * 2,
      2 * frames * 4,
    )
    # One semantic (4 s crop) and one coarse window; fine: 1 s windows re-reading a third.
    assert (row["semantic_windows"], row["coarse_windows"], row["fine_windows"]) == (1, 1, 3)
    for stage in STAGES:
      assert row[f"{stage}_tokens_per_s"] == pytest.approx(
        row[f"{stage}_new_tokens"] * row["batch"] / row[f"{stage}_s"]
      )
    parts = row["mulan_s"] + sum(row[f"{s}_s"] for s in STAGES) + row["codec_s"]
    assert parts == pytest.approx(row["total_s"])
    assert row["real_time_factor"] == pytest.approx(row["total_s"] / (2.0 * row["batch"]))
    assert row["audio_seconds_per_s"] * row["real_time_factor"] == pytest.approx(1.0)
