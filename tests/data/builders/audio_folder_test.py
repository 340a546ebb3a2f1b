"""audio_folder: a folder of clips with a captions CSV (splits from a column, 24 kHz) or JSONL
(all train, built at 16 kHz with 1 s clips as a config of its own)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from musiclm_jax.data.builders import build
from tests.data.builders.inputs import write_captions_csv, write_sine

ROWS = [
  {"file": "a.wav", "caption": "A calm sine.", "split": "train", "aspects": "['calm', 'sine']"},
  {"file": "sub/b.flac", "caption": "A stereo tone.", "split": "test", "aspects": ""},
  {"file": "c.wav", "caption": "A longer sine.", "split": "train", "aspects": "['long']"},
  {"file": "gone.wav", "caption": "Never downloaded.", "split": "train", "aspects": ""},
  {"file": "d.wav", "caption": "   ", "split": "train", "aspects": ""},
]
SECONDS = {"a": 1.5, "sub/b": 2.0, "c": 3.0}


def _write_folder(manual_dir, kind: str) -> None:
  write_sine(manual_dir / "a.wav", 1.5, 24_000)
  write_sine(manual_dir / "sub" / "b.flac", 2.0, 44_100, channels=2)
  write_sine(manual_dir / "c.wav", 3.0, 22_050)
  write_sine(manual_dir / "d.wav", 1.0, 24_000)
  if kind == "csv":
    write_captions_csv(manual_dir / "captions.csv", ROWS)
    return
  lines = []
  for row in ROWS:
    aspects = [a.strip(" '") for a in row["aspects"].strip("[]").split(",") if a]
    lines.append(json.dumps({"path": row["file"], "caption": row["caption"], "aspects": aspects}))
  (manual_dir / "clips.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module", params=["csv", "jsonl"])
def built(request, tmp_path_factory) -> tuple[str, build.BuildResult]:
  manual_dir = tmp_path_factory.mktemp(f"folder_{request.param}")
  _write_folder(manual_dir, request.param)
  overrides = {} if request.param == "csv" else {"sample_rate": 16_000, "max_seconds": 1.0}
  result = build.build_dataset(
    "audio_folder",
    data_dir=str(tmp_path_factory.mktemp("data")),
    manual_dir=str(manual_dir),
    overrides=overrides,
  )
  return request.param, result


def test_splits_config_and_report(built):
  kind, result = built
  if kind == "csv":
    assert result.tfds_name == "audio_folder/24khz"
    assert result.splits == {"test": 1, "train": 2}
  else:
    assert result.tfds_name == "audio_folder/16khz_max1s"
    assert result.splits == {"train": 3}
  assert result.report.kept == 3
  assert result.report.counts == {"missing_file": 1, "empty_caption": 1}


def test_load_by_name_gives_clips_at_the_config_rate(built):
  kind, result = built
  rate, max_seconds = (24_000, 30.0) if kind == "csv" else (16_000, 1.0)
  examples = {}
  for split in result.splits:
    ds = tfds.load(result.tfds_name, data_dir=result.data_dir, split=split)
    examples.update({ex["id"].decode(): ex for ex in tfds.as_numpy(ds)})
  assert set(examples) == set(SECONDS)
  for clip_id, seconds in SECONDS.items():
    audio = examples[clip_id]["audio"]
    assert audio.dtype == np.float32
    assert audio.shape == (round(min(seconds, max_seconds) * rate),)
  assert [a.decode() for a in examples["a"]["aspects"]] == ["calm", "sine"]
  assert examples["sub/b"]["caption"].decode() == "A stereo tone."
  info = tfds.builder(result.tfds_name, data_dir=result.data_dir).info
  assert info.features["audio"].sample_rate == rate
