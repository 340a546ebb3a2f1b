"""Folders of audio clips for evaluation: every readable clip loaded, every other one listed.

`read_clip_folder(dir)` loads each audio file directly in `dir` (WAV, FLAC, OGG, MP3; other files
such as the renderer's .mid are left alone) as mono float32 at one sample rate. Another rate or
channel count is resampled or downmixed; a clip longer than `max_seconds` is cut there. A file
that is unreadable, empty, truncated, NaN/inf, silent or shorter than `min_seconds` is skipped and
listed with its reason, so one bad file never stops an evaluation. A folder with no usable clip is
an `EmptyFolderError`: there is nothing to measure.

A corpus folder in MusicCaps layout as the renderer writes it (`musiccaps.csv` with a `split` column
beside `audio/`) can be read one split at a time: `read_clip_folder(corpus, split="eval")` reads the
held-out clips of `audio/`, whose MIDI lies beside them.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from musiclm_jax.data import audio_io

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
CORPUS_CSV = "musiccaps.csv"
CORPUS_AUDIO = "audio"


class EmptyFolderError(ValueError):
  """A folder with no usable audio clip."""


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A file that was not evaluated, and why (an `audio_io` reason such as 'silent')."""

  path: str
  reason: str
  detail: str

  def record(self) -> dict[str, str]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ClipFolder:
  """The usable clips of one folder, sorted by name.

  Attributes:
    directory: the folder.
    names: file stems ("a" for "a.wav"); they pair generated with reference clips.
    paths: the files.
    audio: mono float32 [samples] per clip, at `sample_rate`.
    sample_rate: the rate every clip was loaded at.
    skipped: files left out, with their reasons.
  """

  directory: str
  names: tuple[str, ...]
  paths: tuple[str, ...]
  audio: tuple[np.ndarray, ...]
  sample_rate: int
  skipped: tuple[Skipped, ...]

  def index(self) -> dict[str, int]:
    return {name: i for i, name in enumerate(self.names)}

  def subset(self, indices: list[int]) -> ClipFolder:
    """The clips at `indices` (in that order), with the same skipped list."""
    pick = lambda seq: tuple(seq[i] for i in indices)  # noqa: E731
    return dataclasses.replace(
      self, names=pick(self.names), paths=pick(self.paths), audio=pick(self.audio)
    )


def audio_files(directory: str) -> list[str]:
  """The audio files directly in `directory`, sorted (raises EmptyFolderError if not a folder)."""
  if not os.path.isdir(directory):
    raise EmptyFolderError(f"{directory}: not a folder of audio clips")
  names = sorted(n for n in os.listdir(directory) if n.lower().endswith(AUDIO_EXTENSIONS))
  return [os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(directory, n))]


def _corpus_rows(corpus_dir: str) -> list[dict[str, str]]:
  csv_path = os.path.join(corpus_dir, CORPUS_CSV)
  with open(csv_path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def corpus_captions(corpus_dir: str) -> dict[str, str]:
  """{clip id: caption} of a MusicCaps-layout corpus; {} when `corpus_dir` has no musiccaps.csv
  (a plain folder of clips has no captions)."""
  if not os.path.isfile(os.path.join(corpus_dir, CORPUS_CSV)):
    return {}
  return {row["ytid"]: row.get("caption") or "" for row in _corpus_rows(corpus_dir)}


def corpus_split_files(corpus_dir: str, split: str) -> list[str]:
  """The audio files of `split`'s rows in a MusicCaps-layout corpus (see the module docstring).

  Raises:
    EmptyFolderError: no musiccaps.csv, no `split` column, or no audio of that split.
  """
  csv_path = os.path.join(corpus_dir, CORPUS_CSV)
  if not os.path.isfile(csv_path):
    raise EmptyFolderError(f"{corpus_dir}: no {CORPUS_CSV}, so no split {split!r} to read")
  rows = _corpus_rows(corpus_dir)
  if rows and "split" not in rows[0]:
    raise EmptyFolderError(f"{csv_path}: no 'split' column")
  ids = {row["ytid"] for row in rows if row.get("split") == split}
  files = audio_files(os.path.join(corpus_dir, CORPUS_AUDIO))
  return [p for p in files if os.path.splitext(os.path.basename(p))[0] in ids]


def _load(path: str, sample_rate: int, min_seconds: float, max_seconds: float) -> np.ndarray:
  info = audio_io.probe(path)
  if info.duration_s < min_seconds:
    detail = f"{info.duration_s:.2f} s is shorter than the {min_seconds:g} s evaluation minimum"
    raise audio_io.AudioError(path, "too_short", detail)
  return audio_io.load_audio(path, sample_rate, duration_s=min(info.duration_s, max_seconds))


def read_clip_folder(
  directory: str,
  sample_rate: int = audio_io.DEFAULT_SAMPLE_RATE,
  *,
  min_seconds: float = 1.0,
  max_seconds: float = 30.0,
  split: str | None = None,
) -> ClipFolder:
  """Loads every usable clip of `directory` (see the module docstring).

  Args:
    split: read only this split of a MusicCaps-layout corpus in `directory`.

  Raises:
    EmptyFolderError: `directory` is not a folder, or none of its files is a usable clip.
  """
  files = audio_files(directory) if split is None else corpus_split_files(directory, split)
  if split is not None:
    directory = os.path.join(directory, CORPUS_AUDIO)
  names, paths, audio, skipped = [], [], [], []
  for path in files:
    name = os.path.splitext(os.path.basename(path))[0]
    if name in names:
      skipped.append(
        Skipped(path, "duplicate_name", f"{name!r} is already {paths[names.index(name)]}")
      )
      continue
    try:
      clip = _load(path, sample_rate, min_seconds, max_seconds)
    except audio_io.AudioError as e:
      skipped.append(Skipped(path, e.reason, e.detail))
      continue
    names.append(name)
    paths.append(path)
    audio.append(clip)
  if not audio:
    why = (
      f"; {len(skipped)} skipped, e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""
    )
    raise EmptyFolderError(
      f"{directory}: no usable audio clip ({', '.join(AUDIO_EXTENSIONS)}){why}"
    )
  return ClipFolder(
    directory, tuple(names), tuple(paths), tuple(audio), sample_rate, tuple(skipped)
  )
