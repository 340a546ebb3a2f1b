"""Folders of clips to evaluate: every kind of bad file is skipped with its reason, never fatal."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from musiclm_jax.data import audio_io
from musiclm_jax.evaluation.clip_folders import EmptyFolderError, read_clip_folder

RATE = 24_000


def _tone(seconds: float, rate: int = RATE, hz: float = 440.0) -> np.ndarray:
  t = np.arange(round(seconds * rate)) / rate
  return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture()
def mixed_folder(tmp_path):
  """Two good clips (one stereo at 44.1 kHz) beside each kind of bad file."""
  audio_io.write_wav(tmp_path / "good.wav", _tone(2.0), RATE)
  stereo = np.stack([_tone(2.0, 44_100), _tone(2.0, 44_100, 660.0)], axis=1)
  audio_io.write_wav(tmp_path / "stereo44k.wav", stereo, 44_100)
  (tmp_path / "unreadable.wav").write_bytes(b"RIFF not really a wave file at all" * 10)
  (tmp_path / "empty.wav").write_bytes(b"")
  nan = _tone(2.0)
  nan[100] = np.nan
  sf.write(tmp_path / "nan.wav", nan, RATE, subtype="FLOAT")
  audio_io.write_wav(tmp_path / "silent.wav", np.zeros(2 * RATE, np.float32), RATE)
  audio_io.write_wav(tmp_path / "short.wav", _tone(0.2), RATE)
  audio_io.write_wav(tmp_path / "good.flac.wav", _tone(2.0), RATE)
  sf.write(tmp_path / "good.flac", _tone(2.0), RATE)  # same stem as good.wav
  (tmp_path / "notes.mid").write_bytes(b"MThd")  # not audio: left alone
  return tmp_path


def test_bad_files_are_skipped_with_their_reasons(mixed_folder):
  folder = read_clip_folder(str(mixed_folder))
  assert folder.names == ("good", "good.flac", "stereo44k")
  reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in folder.skipped}
  assert reasons == {
    "empty.wav": "empty",
    "nan.wav": "nonfinite",
    "short.wav": "too_short",
    "silent.wav": "silent",
    "unreadable.wav": "corrupt",
    "good.wav": "duplicate_name",  # good.flac sorts first and keeps the name
  }


def test_other_rates_and_channels_are_resampled_and_downmixed(mixed_folder):
  folder = read_clip_folder(str(mixed_folder))
  stereo = folder.audio[folder.index()["stereo44k"]]
  assert stereo.ndim == 1 and abs(len(stereo) - 2 * RATE) <= 1
  assert folder.sample_rate == RATE and np.isfinite(stereo).all()


def test_long_clips_are_cut_at_max_seconds(tmp_path):
  audio_io.write_wav(tmp_path / "long.wav", _tone(5.0), RATE)
  folder = read_clip_folder(str(tmp_path), max_seconds=3.0)
  assert len(folder.audio[0]) == 3 * RATE


def test_a_folder_with_nothing_usable_is_an_error_naming_it(tmp_path):
  with pytest.raises(EmptyFolderError, match="no usable audio clip"):
    read_clip_folder(str(tmp_path))
  audio_io.write_wav(tmp_path / "silent.wav", np.zeros(RATE * 2, np.float32), RATE)
  with pytest.raises(EmptyFolderError, match="silent"):
    read_clip_folder(str(tmp_path))
  with pytest.raises(EmptyFolderError, match="not a folder"):
    read_clip_folder(str(tmp_path / "missing"))


def test_a_rendered_corpus_is_read_one_split_at_a_time(tmp_path):
  from musiclm_jax.data.render.corpus import render_corpus

  render_corpus(
    str(tmp_path), num_clips=8, clip_seconds=2.0, seed=3, progress=False, eval_fraction=0.5
  )
  held_out = read_clip_folder(str(tmp_path), split="eval")
  train = read_clip_folder(str(tmp_path), split="train")
  assert held_out.names and train.names and not set(held_out.names) & set(train.names)
  assert len(held_out.names) + len(train.names) == 8
  assert held_out.directory == str(tmp_path / "audio")  # where each clip's MIDI lies
  with pytest.raises(EmptyFolderError, match="no usable audio clip"):
    read_clip_folder(str(tmp_path), split="nonesuch")
  with pytest.raises(EmptyFolderError, match="no musiccaps.csv"):
    read_clip_folder(str(tmp_path / "audio"), split="eval")
