"""`musiclm-jax evaluate`: the report file, the printed table, bad files listed, honest exits."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import soundfile as sf

from musiclm_jax.data import audio_io
from musiclm_jax.data.render.corpus import render_corpus
from musiclm_jax.main import cli

RATE = 24_000


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """G: four rendered clips and four bad files; R: a rendered corpus (its eval split is held out)."""
  root = tmp_path_factory.mktemp("evaluate_cli")
  render_corpus(str(root / "corpus"), num_clips=8, clip_seconds=3.0, seed=7, progress=False)
  generated = root / "generated"
  generated.mkdir()
  clips = sorted((root / "corpus" / "audio").glob("*.wav"))[:4]
  for clip in clips:
    shutil.copy(clip, generated / clip.name)
  (generated / "corrupt.wav").write_bytes(b"RIFF" + b"\0" * 100)
  nan = np.full(RATE * 2, np.nan, np.float32)
  sf.write(generated / "nan.wav", nan, RATE, subtype="FLOAT")
  audio_io.write_wav(generated / "silent.wav", np.zeros(RATE * 2, np.float32), RATE)
  tone = 0.2 * np.sin(2 * np.pi * 330 * np.arange(44_100 * 2) / 44_100)
  audio_io.write_wav(generated / "tone44k.wav", np.stack([tone, tone], 1), 44_100)
  (root / "corpus" / "audio" / f"{clips[3].stem}.mid").write_bytes(b"MThd broken")
  texts = ["a string quartet", "a folk fiddle tune", "piano and flute", "a church organ hymn"]
  prompts = [{"id": c.stem, "text": t, "seconds": 3} for c, t in zip(clips, texts)]
  prompts.append({"id": "never-generated", "text": "a guitar", "seconds": 3})
  lines = [json.dumps(p) + "\n" for p in prompts] + ['{"id": "broken", "text": \n']
  (root / "prompts.jsonl").write_text("".join(lines))
  return root


def test_evaluate_writes_the_report_and_prints_the_table(folders, capsys):
  out = folders / "report.json"
  argv = [
    "evaluate",
    f"--generated_dir={folders / 'generated'}",
    f"--reference_dir={folders / 'corpus' / 'audio'}",
    f"--prompts={folders / 'prompts.jsonl'}",
    f"--out={out}",
  ]
  assert cli.main(argv) == 0
  printed = capsys.readouterr()
  report = json.loads(out.read_text())
  for key in ("fad_musicnn", "kld_musicnn", "chroma_cosine", "note_f1", "instrument_auc"):
    assert math.isfinite(report[key]), key
  assert report["num_generated"] == 5 and report["num_paired"] == 4  # tone44k is resampled
  assert report["prompts_without_clip"] == ["never-generated"]
  assert [e["source"].rsplit(":", 1)[1] for e in report["prompt_errors"]] == ["6"]
  reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in report["skipped"]}
  assert reasons == {"corrupt.wav": "corrupt", "nan.wav": "nonfinite", "silent.wav": "silent"}
  assert "| FAD_musicnn (lower is better) |" in printed.out
  assert "skipped" in printed.err and "nan.wav" in printed.err
  assert report["note_clips"] == 3  # the fourth clip's MIDI is broken: listed, not fatal
  assert [s["reason"] for s in report["note_skipped"]] == ["unreadable_midi"]


def test_evaluate_reads_a_split_of_a_rendered_corpus(folders, capsys):
  out = folders / "split.json"
  argv = [
    "evaluate",
    f"--generated_dir={folders / 'generated'}",
    f"--reference_dir={folders / 'corpus'}",
    "--reference_split=eval",
    f"--out={out}",
  ]
  assert cli.main(argv) == 0
  report = json.loads(out.read_text())
  assert 1 <= report["num_reference"] < 8 and report["reference_split"] == "eval"


def test_empty_and_missing_folders_exit_2_with_one_line(folders, tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  base = [f"--reference_dir={folders / 'generated'}", f"--out={tmp_path / 'r.json'}"]
  assert cli.main(["evaluate", f"--generated_dir={empty}", *base]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "no usable audio clip" in err and str(empty) in err
  assert cli.main(["evaluate", f"--generated_dir={tmp_path / 'missing'}", *base]) == 2
  assert "no such folder" in capsys.readouterr().err
  assert not (tmp_path / "r.json").exists()


def test_bench_evaluate_times_each_model_and_prints_the_report(tmp_path, capsys):
  out = tmp_path / "bench.json"
  assert cli.main(["bench", "evaluate", "--num_clips=2", "--seconds=2", f"--json={out}"]) == 0
  rows = json.loads(out.read_text())["rows"]
  assert [r["part"] for r in rows][-1] == "evaluate (whole report)"
  assert all(r["seconds"] > 0 and r["clips"] == 2 for r in rows)
  assert "| FAD_musicnn (lower is better) |" in capsys.readouterr().out
