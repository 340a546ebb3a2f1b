"""Tests of turning manifest rows into examples, and of the skips bad clips become."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from musiclm_jax.data import audio_io
from musiclm_jax.data.audio_examples import load_example
from musiclm_jax.data.manifest import ManifestRow
from musiclm_jax.data.skip_report import SkipReport

SR = 8000  # the file rate too, so no resampling: these tests are about windows and skips


def _tone(seconds: float, amp: float = 0.5, sr: int = SR) -> np.ndarray:
  return (amp * np.sin(2 * np.pi * 440 * np.arange(round(seconds * sr)) / sr)).astype(np.float32)


def _row(path, start_s: float = 30.0, end_s: float | None = 40.0) -> ManifestRow:
  return ManifestRow(
    id="clip",
    audio_path=os.fspath(path),
    caption="A calm tone.",
    aspects=("tone", "calm"),
    start_s=start_s,
    end_s=end_s,
    melody_group="group",
    score_id="score",
    split="train",
    where="mc.csv:7",
  )


def _load(path, **kwargs):
  report = SkipReport("test")
  row = _row(path, **{k: kwargs.pop(k) for k in ("start_s", "end_s") if k in kwargs})
  return load_example(row, sample_rate=SR, report=report, **kwargs), report


def test_trimmed_clip(tmp_path):
  path = tmp_path / "clip.wav"
  sf.write(path, _tone(10.0), SR)
  example, report = _load(path)
  assert report.summary_line() == "kept 1, skipped 0"
  assert example["audio"].dtype == np.float32 and example["audio"].shape == (10 * SR,)
  assert {k: v for k, v in example.items() if k != "audio"} == {
    "id": "clip",
    "caption": "A calm tone.",
    "aspects": ["tone", "calm"],
    "melody_group": "group",
    "score_id": "score",
    "split": "train",
    "duration_s": 10.0,
  }


def test_untrimmed_download_reads_the_captioned_segment(tmp_path):
  # 50 s recording; only [30, 40) is loud.
  audio = _tone(50.0, amp=0.05)
  audio[30 * SR : 40 * SR] *= 10
  path = tmp_path / "full.wav"
  sf.write(path, audio, SR)
  example, _ = _load(path)
  assert example["duration_s"] == 10.0
  assert np.abs(example["audio"]).min() < 0.01 and np.abs(example["audio"]).max() > 0.45
  assert np.abs(example["audio"][: SR // 2]).max() > 0.45


@pytest.mark.parametrize(
  "seconds, max_seconds, end_s, expected_s",
  [(12.0, 5.0, 40.0, 5.0), (3.0, 30.0, None, 3.0), (45.0, 5.0, 40.0, 5.0), (32.0, 30.0, 40.0, 2.0)],
)
def test_window_lengths(tmp_path, seconds, max_seconds, end_s, expected_s):
  path = tmp_path / "clip.flac"
  sf.write(path, _tone(seconds), SR)
  example, _ = _load(path, max_seconds=max_seconds, end_s=end_s)
  assert example["audio"].shape == (round(expected_s * SR),)


def _bad(kind: str, tmp_path):
  path = tmp_path / f"{kind}.wav"
  if kind == "corrupt":
    path.write_bytes(b"not audio at all" * 10)
  elif kind == "silent":
    sf.write(path, np.zeros(SR * 2, np.float32), SR)
  elif kind == "too_short":
    sf.write(path, _tone(0.2), SR)
  elif kind == "nonfinite":
    sf.write(path, np.full(SR, np.nan, np.float32), SR, subtype="FLOAT")
  return path  # "unreadable": never written


@pytest.mark.parametrize("reason", ["corrupt", "silent", "too_short", "nonfinite", "unreadable"])
def test_bad_clips_are_skipped_and_counted(tmp_path, reason):
  path = _bad(reason, tmp_path)
  example, report = _load(path)
  assert example is None
  assert (report.kept, report.counts) == (0, {reason: 1})
  [entry] = report.examples[reason]
  assert entry["where"] == f"mc.csv:7 ({path})"
  assert entry["detail"]


@pytest.mark.parametrize("mode", ["peak", "loudness"])
def test_normalization(tmp_path, mode):
  path = tmp_path / "quiet.wav"
  sf.write(path, _tone(3.0, amp=0.01), SR)
  example, _ = _load(path, normalization=mode)
  if mode == "peak":
    assert np.abs(example["audio"]).max() == pytest.approx(10 ** (-1 / 20), rel=1e-4)
  else:
    assert audio_io.integrated_loudness(example["audio"], SR) == pytest.approx(-23.0, abs=0.5)
