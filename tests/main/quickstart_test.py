"""`musiclm-jax quickstart --size=ci`: audio to music end to end, then a rerun that resumes.

The ci size is the `make quickstart` pipeline with every step kept (render, build-data, the five
tokenizer jobs, tokenize, the three stage LMs, infer, spectrogram, evaluate) and two optimizer steps per
model, so nearly all of its time is compiling.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import soundfile as sf

import gin
from musiclm_jax.main import cli, quickstart

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 24_000


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)  # gin file paths are relative to the repository, as in the README
  yield
  gin.clear_config()


def _run(out_dir: Path, size: str = "ci") -> float:
  start = time.perf_counter()
  assert cli.main(["quickstart", f"--out_dir={out_dir}", f"--size={size}"]) == 0
  return time.perf_counter() - start


def _check_music(out_dir: Path, summary: dict) -> None:
  seconds = quickstart.SIZES["ci"].prompt_seconds
  ids = ["chorale", "fiddle", "piano", "guitar", "harpsichord", "story"]
  assert [m["id"] for m in summary["music"]] == ids
  for music in summary["music"]:
    info = sf.info(music["wav"])
    assert info.samplerate == SAMPLE_RATE and info.frames == seconds * SAMPLE_RATE
    audio, _ = sf.read(music["wav"])
    assert audio.std() > 0  # the codec decoded something, not silence
    png = Path(music["png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
  manifest = [
    json.loads(x) for x in (out_dir / "music" / "manifest.jsonl").read_text().splitlines()
  ]
  story = next(record for record in manifest if record["id"] == "story")
  assert len(story["segments"]) == 2


def _check_models(out_dir: Path) -> None:
  def metrics(*parts: str) -> dict:
    return json.loads(out_dir.joinpath(*parts, "final_metrics.json").read_text())

  for piece in ("w2v_bert", "mulan", "mulan_quantizer"):
    assert metrics("tokenizers", piece)["step"] == 2
  # The spectral codec counts its steps in fitted levels (step 0 is the PCA).
  assert metrics("tokenizers", "codec")["step"] == quickstart.CODEC_LEVELS
  for stage in quickstart.STAGES:
    lm = metrics("stages", stage)
    assert lm["step"] == 2 and math.isfinite(lm["loss"]) and math.isfinite(lm["eval/loss"])
    # The conditioning check: only the stages conditioned on MuLan have one.
    swapped = lm.get("eval/swapped_conditioning_loss")
    assert (swapped is None) == (stage == "fine") and (swapped is None or math.isfinite(swapped))
  codec = metrics("tokenizers", "codec")
  assert codec["eval/mel_distance_all_levels"] < codec["eval/mel_distance_silence"]
  mulan = metrics("tokenizers", "mulan")
  assert 0.0 <= mulan["eval/recall@1"] <= 1.0 and mulan["eval/chance@1"] > 0.0
  assert (out_dir / "tokenizers" / "kmeans" / "kmeans.npz").is_file()


def _check_evaluation(summary: dict) -> None:
  """The music was scored against the held-out split, each number beside its scale."""
  report = summary["evaluation"]
  assert report["num_generated"] == 6 and report["num_reference"] >= 1
  assert report["reference_split"] == "eval"
  assert math.isfinite(report["fad_musicnn"]) and report["fad_musicnn"] >= 0
  assert math.isfinite(report["scale"]["white_noise"]["fad_musicnn"])
  assert -1.0 <= report["mcc"] <= 1.0 and math.isfinite(report["mcc_chance"])
  assert report["prompt_units"] == 7  # five prompts and the story's two segments
  # The held-out clips under their own captions: the ceiling of prompt adherence.
  assert -1.0 <= report["scale"]["reference_captions"]["mcc"] <= 1.0


def test_quickstart_makes_music_then_resumes_instead_of_redoing(tmp_path, capsys):
  out_dir = tmp_path / "quickstart"
  first = _run(out_dir)
  output = capsys.readouterr().out
  summary = json.loads((out_dir / "summary.json").read_text())
  names = [step.name for step in quickstart.plan(str(out_dir), quickstart.SIZES["ci"])]
  assert list(summary["steps"]) == names and len(names) == 14
  assert all(step["status"] == "ran" for step in summary["steps"].values())
  _check_music(out_dir, summary)
  _check_models(out_dir)
  _check_evaluation(summary)
  markdown = (out_dir / "summary.md").read_text()
  assert "| semantic LM | 2 |" in markdown and "text→audio R@1" in markdown
  assert "Music vs held-out clips: FAD_musicnn" in markdown
  # The equivalent commands are printed, the same gin files a run at scale uses.
  assert "$ musiclm-jax train --gin_file=gin/models/coarse/tiny.gin" in output
  assert "musiclm-jax infer --gin_file=gin/runs/infer.gin" in markdown

  second = _run(out_dir)
  output = capsys.readouterr().out
  summary = json.loads((out_dir / "summary.json").read_text())
  assert all(step["status"] == "skipped" for step in summary["steps"].values())
  assert "step 2/2" not in output and output.count("skipped, its output exists") == 14
  assert second < 0.2 * first, (first, second)

  # Another size would mix models of two sizes in one directory: refused.
  with pytest.raises(SystemExit, match="another size"):
    cli.main(["quickstart", f"--out_dir={out_dir}", "--size=default"])
