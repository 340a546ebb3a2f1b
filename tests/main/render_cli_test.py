"""Smoke tests of `musiclm-jax render`: flags -> render_corpus -> files and exit codes."""

from __future__ import annotations

import csv
import os

import pytest

from musiclm_jax.data.render import synth
from musiclm_jax.main import cli, render


def test_render_verb_writes_corpus_and_spectrograms(tmp_path, capsys):
  out = tmp_path / "corpus"
  code = cli.main(
    [
      "render", "--out_dir", str(out), "--num_clips", "3", "--clip_seconds", "3", "--seed", "7",
      "--soundfont", synth.bundled_soundfont(), "--spectrograms", "--no_progress",
    ]
  )  # fmt: skip
  assert code == 0
  assert "3 clips" in capsys.readouterr().out
  with open(out / "musiccaps.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 3 and {r["end_s"] for r in rows} == {"3"}
  for row in rows:
    assert (out / "audio" / f"{row['ytid']}.wav").exists()
    assert (out / "spectrograms" / f"{row['ytid']}.png").stat().st_size > 1000
  assert (out / "render_report.json").exists()


def test_missing_soundfont_exits_2(tmp_path, capsys):
  missing = str(tmp_path / "missing.sf2")
  code = render.main(["--out_dir", str(tmp_path), "--num_clips", "1", "--soundfont", missing])
  assert code == 2
  assert "missing.sf2" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "musiccaps.csv")


def test_unsupported_sample_rate_exits_2(tmp_path, capsys):
  code = render.main(["--out_dir", str(tmp_path), "--num_clips", "1", "--sample_rate", "200000"])
  assert code == 2
  assert "sample_rate 200000" in capsys.readouterr().err


@pytest.mark.parametrize(
  "flags",
  [
    ["--num_clips", "4"],  # no --out_dir
    ["--out_dir", "x", "--num_clips", "0"],
    ["--out_dir", "x", "--num_clips", "2", "--clip_seconds", "-1"],
    ["--out_dir", "x", "--num_clips", "2", "--eval_fraction", "1.5"],
  ],
)
def test_bad_flags_exit_2(flags):
  with pytest.raises(SystemExit) as exit_info:
    render.main(flags)
  assert exit_info.value.code == 2
