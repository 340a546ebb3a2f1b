"""Acceptance tests of `render_corpus`: real music21 scores rendered through real FluidSynth.

Renders are small (8 clips of 5 s with the 6 MB TimGM6mb soundfont) and shared per module.
"""

from __future__ import annotations

import ast
import csv
import os
import re
import shutil
import wave

import numpy as np
import pretty_midi
import pytest

from musiclm_jax.data.render import corpus, synth

TIM = synth.bundled_soundfont()
COMMON = dict(num_clips=8, clip_seconds=5, progress=False)


def _render(out_dir, **kwargs) -> corpus.RenderSummary:
  return corpus.render_corpus(str(out_dir), **{**COMMON, "soundfont": TIM, **kwargs})


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
  """Seed 0 with 1 and with 2 workers, and seed 1."""
  root = tmp_path_factory.mktemp("renders")
  out = {}
  for name, kwargs in {
    "a": dict(seed=0),
    "a2": dict(seed=0, num_workers=2),
    "b": dict(seed=1),
  }.items():
    out[name] = (root / name, _render(root / name, **kwargs))
  return out


def _rows(out_dir) -> list[dict]:
  with open(os.path.join(out_dir, corpus.CSV_NAME), newline="") as f:
    return list(csv.DictReader(f))


def _pcm(path) -> tuple[np.ndarray, int]:
  with wave.open(str(path)) as w:
    assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
    return np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768.0, w.getframerate()


def _files(out_dir) -> dict[str, bytes]:
  names = sorted(os.listdir(os.path.join(out_dir, corpus.AUDIO_SUBDIR)))
  files = {n: (out_dir / corpus.AUDIO_SUBDIR / n).read_bytes() for n in names}
  files[corpus.CSV_NAME] = (out_dir / corpus.CSV_NAME).read_bytes()
  return files


def test_eight_audible_five_second_clips(renders):
  out_dir, summary = renders["a"]
  rows = _rows(out_dir)
  assert summary.num_clips == len(rows) == 8 and not summary.failures
  for row in rows:
    audio, rate = _pcm(out_dir / "audio" / f"{row['ytid']}.wav")
    assert rate == 24_000 and audio.shape == (5 * 24_000,)
    assert 20 * np.log10(np.sqrt(np.mean(audio**2))) > -40
    assert np.max(np.abs(audio)) < 1.0
    assert np.mean(np.abs(audio) < 1e-4) < 0.5  # not mostly silence
    assert (out_dir / "audio" / f"{row['ytid']}.mid").exists()


def test_csv_layout(renders):
  out_dir, summary = renders["a"]
  rows = _rows(out_dir)
  assert list(rows[0]) == list(corpus.CSV_COLUMNS)
  assert summary.csv_path == str(out_dir / corpus.CSV_NAME)
  for row in rows:
    assert re.fullmatch(r"m21-[A-Za-z0-9-]+-p\d+-v\d+", row["ytid"])
    assert (row["start_s"], row["end_s"]) == ("0", "5")
    aspects = ast.literal_eval(row["aspect_list"])
    assert isinstance(aspects, list) and all(isinstance(a, str) for a in aspects) and aspects
    assert row["split"] in ("train", "eval")
    assert row["ytid"].startswith(row["melody_group"])
  assert len({r["ytid"] for r in rows}) == len(rows)
  assert (out_dir / corpus.REPORT_NAME).exists()


def test_same_seed_byte_identical_any_workers(renders):
  a, a2 = _files(renders["a"][0]), _files(renders["a2"][0])
  assert a.keys() == a2.keys()
  for name in a:
    assert a[name] == a2[name], name


def test_different_seed_differs(renders):
  a, b = _files(renders["a"][0]), _files(renders["b"][0])
  assert a[corpus.CSV_NAME] != b[corpus.CSV_NAME]
  wavs = lambda files: {v for k, v in files.items() if k.endswith(".wav")}  # noqa: E731
  assert wavs(a) != wavs(b)


def _notes_and_programs(path) -> tuple[list, set]:
  pm = pretty_midi.PrettyMIDI(str(path))
  notes = sorted(
    (n.pitch, round(n.start, 3), round(n.end, 3), n.velocity)
    for inst in pm.instruments
    for n in inst.notes
  )
  return notes, {inst.program for inst in pm.instruments}


@pytest.mark.parametrize("name", ["a", "b"])
def test_melody_groups_share_notes_not_instruments(renders, name):
  out_dir, _ = renders[name]
  groups: dict[str, list[str]] = {}
  for row in _rows(out_dir):
    groups.setdefault(row["melody_group"], []).append(row["ytid"])
  assert len(groups) == 4 and all(len(g) == 2 for g in groups.values())
  for members in groups.values():
    (n0, p0), (n1, p1) = (_notes_and_programs(out_dir / "audio" / f"{y}.mid") for y in members)
    assert n0 == n1 and n0
    assert p0 != p1


@pytest.mark.parametrize("name", ["a", "b"])
def test_splits_by_score(renders, name):
  rows = _rows(renders[name][0])
  splits: dict[str, set] = {}
  for row in rows:
    splits.setdefault(row["score_id"], set()).add(row["split"])
  assert all(len(s) == 1 for s in splits.values())
  if len(splits) >= 2:
    assert {"train", "eval"} == set().union(*splits.values())


def test_captions_vary_and_name_instruments(renders):
  rows = _rows(renders["a"][0]) + _rows(renders["b"][0])
  structures = set()
  for row in rows:
    sentences = re.split(r"(?<=\.) ", row["caption"])
    structures.add(tuple(s.split()[0] for s in sentences))
    names = row["instruments"].split(", ")
    assert any(n in row["caption"] for n in names), row["caption"]
    assert any(n in ast.literal_eval(row["aspect_list"]) for n in names)
  assert len(structures) > 2
  assert len({r["caption"] for r in rows}) == len(rows)


def test_rerun_keeps_complete_clips_and_redoes_broken_ones(renders, tmp_path):
  src, _ = renders["a"]
  out_dir = tmp_path / "resume"
  shutil.copytree(src, out_dir)
  rows = _rows(out_dir)
  audio = out_dir / "audio"
  (audio / f"{rows[0]['ytid']}.wav").unlink()  # never written
  (audio / f"{rows[1]['ytid']}.wav").write_bytes(b"RIFF half")  # from a non-atomic writer
  (audio / f".{rows[2]['ytid']}.wav.abc123.tmp").write_bytes(b"partial")  # killed mid-write
  summary = _render(out_dir, seed=0)
  assert (summary.num_rendered, summary.num_reused) == (2, 6)
  assert _files(out_dir) == _files(src)


def test_rerun_with_other_settings_rerenders(renders, tmp_path):
  out_dir = tmp_path / "other"
  shutil.copytree(renders["a"][0], out_dir)
  summary = _render(out_dir, seed=0, sample_rate=16_000)
  assert summary.num_rendered == 8
  assert _pcm(out_dir / "audio" / f"{_rows(out_dir)[0]['ytid']}.wav")[1] == 16_000


def test_default_soundfont(tmp_path):
  summary = corpus.render_corpus(str(tmp_path), num_clips=2, clip_seconds=2, seed=5, progress=False)
  assert summary.soundfont == synth.resolve_soundfont(None)
  if os.path.exists(synth.SYSTEM_SOUNDFONT):
    assert summary.soundfont == synth.SYSTEM_SOUNDFONT
  assert summary.num_clips == 2 and not summary.failures


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError):
    _render(tmp_path, seed=0, num_clips=0)
  with pytest.raises(ValueError, match="sample_rate 4000"):
    _render(tmp_path, seed=0, sample_rate=4000)
  with pytest.raises(FileNotFoundError, match="nope.sf2"):
    corpus.render_corpus(str(tmp_path), num_clips=1, clip_seconds=1, seed=0, soundfont="nope.sf2")
