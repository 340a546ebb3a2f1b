"""Smoke test of `musiclm-jax build-data`: flags -> a built dataset and the printed report."""

from __future__ import annotations

import json

import tensorflow_datasets as tfds

from musiclm_jax.main import build_data, cli
from tests.data.builders.inputs import write_captions_csv, write_sine


def test_build_data_builds_prints_the_report_and_loads(tmp_path, capsys):
  manual_dir = tmp_path / "clips"
  write_sine(manual_dir / "one.wav", 1.0, 44_100, channels=2)
  write_sine(manual_dir / "two.wav", 2.0, 16_000)
  rows = [
    {"path": "one.wav", "caption": "A tone.", "split": "train"},
    {"path": "two.wav", "caption": "Another tone.", "split": "validation"},
    {"path": "three.wav", "caption": "Not downloaded.", "split": "train"},
  ]
  write_captions_csv(manual_dir / "captions.csv", rows)
  data_dir = tmp_path / "data"
  argv = ["--dataset=audio_folder", f"--manual_dir={manual_dir}", f"--data_dir={data_dir}"]
  code = build_data.main(argv + ["--sample_rate=16000", "--max_seconds=1.5"])
  out = capsys.readouterr().out
  assert code == 0, out
  assert "audio_folder/16khz_max1p5s 1.0.0 built at" in out
  assert "  train: 1 examples" in out and "  validation: 1 examples" in out
  assert "skip report: kept 2, skipped 1 (missing_file: 1)" in out
  report_path = data_dir / "audio_folder" / "16khz_max1p5s" / "1.0.0" / "skip_report.json"
  assert json.loads(report_path.read_text())["by_reason"] == {"missing_file": 1}
  ds = tfds.load("audio_folder/16khz_max1p5s", data_dir=str(data_dir), split="validation")
  assert next(iter(tfds.as_numpy(ds)))["audio"].shape == (24_000,)


def test_build_data_errors_exit_2_with_advice(tmp_path, capsys):
  argv = ["build-data", "--dataset=musiccaps", f"--manual_dir={tmp_path}", f"--data_dir={tmp_path}"]
  assert cli.main(argv + ["--render_num_clips=3"]) == 2
  assert "unknown option(s) render_num_clips" in capsys.readouterr().err
  (tmp_path / "musiccaps-public.csv").write_text("ytid,start_s,end_s,caption\nabc,0,10,Hi.\n")
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert "no usable examples" in err and "missing_file:" in err
