"""How long `musiclm-jax evaluate` takes, and where the time goes (`musiclm-jax bench evaluate`).

Renders two sets of clips from the music21 corpus (different seeds: 'generated' and 'reference',
MIDI beside the reference), gives the generated clips the reference's names so that every paired
metric runs, times each model of the evaluation alone on the generated set, then the whole report
end to end (both folders, chroma and note F1 per pair, the white-noise and shuffled scales).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from musiclm_jax.data.render.corpus import render_corpus
from musiclm_jax.evaluation import music_report, music_stats, notes
from musiclm_jax.evaluation.clip_folders import read_clip_folder
from musiclm_jax.evaluation.musicnn import load_musicnn


def _render(out_dir: str, num_clips: int, seconds: float, seed: int) -> str:
  render_corpus(out_dir, num_clips=num_clips, clip_seconds=seconds, seed=seed, progress=False)
  return os.path.join(out_dir, "audio")


def _paired_by_name(generated_dir: str, reference_dir: str) -> None:
  """Renames the generated WAVs to the reference's names (other music, paired by name)."""
  wavs = lambda d: sorted(n for n in os.listdir(d) if n.endswith(".wav"))  # noqa: E731
  for generated, reference in zip(wavs(generated_dir), wavs(reference_dir)):
    os.replace(os.path.join(generated_dir, generated), os.path.join(generated_dir, f".{reference}"))
  for name in wavs(reference_dir):
    if os.path.exists(os.path.join(generated_dir, f".{name}")):
      os.replace(os.path.join(generated_dir, f".{name}"), os.path.join(generated_dir, name))


def _timed(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def bench_evaluate(num_clips: int, seconds: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """(rows {part, clips, seconds, clips_per_s} for each model and the whole report, the report).

  The report scores one rendered set against another: music against other music of the same
  corpus, beside the scales (reference halves, white noise, shuffled pairing).
  """
  with tempfile.TemporaryDirectory() as tmp:
    generated_dir = _render(os.path.join(tmp, "generated"), num_clips, seconds, seed=1)
    reference_dir = _render(os.path.join(tmp, "reference"), num_clips, seconds, seed=2)
    _paired_by_name(generated_dir, reference_dir)
    clips = read_clip_folder(generated_dir)
    audio, rate = list(clips.audio), clips.sample_rate
    tagger, transcriber = load_musicnn(), notes.load_note_transcriber()
    tagger.analyze(audio[:1], rate)  # compile once, as a warm process would have
    transcriber.transcribe(audio[0], rate)
    report: dict[str, Any] = {}
    parts = {
      "read folder (load + resample)": lambda: read_clip_folder(generated_dir),
      "musicnn tags + embeddings": lambda: tagger.analyze(audio, rate),
      "basic-pitch transcription": lambda: [transcriber.transcribe(a, rate) for a in audio],
      "chroma + statistics": lambda: [music_stats.music_statistics(a, rate) for a in audio],
      "evaluate (whole report)": lambda: report.update(
        music_report.evaluate_folders(generated_dir, reference_dir)
      ),
    }
    rows = []
    for part, fn in parts.items():
      took = _timed(fn)
      rows.append(
        {"part": part, "clips": len(audio), "seconds": took, "clips_per_s": len(audio) / took}
      )
    return rows, report
