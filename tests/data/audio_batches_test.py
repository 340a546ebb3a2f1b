"""audio_crop_dataset on a small audio_folder dataset at 8 kHz: real windows, padding and mask,
silence dropping, determinism, exact resume, disjoint shards, the sample-rate check."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from musiclm_jax.data.audio_batches import AudioSource, audio_crop_dataset
from musiclm_jax.data.builders import build
from tests.data.builders.inputs import write_captions_csv

RATE = 8_000
CROP = 2_000
# id -> (split, seconds, kind); 'half_silent' is silent for its first 0.6 s, 'short' < CROP.
CLIPS = {
  "short": ("train", 0.15, "noise"),
  "b": ("train", 0.7, "noise"),
  "chirp": ("train", 1.0, "chirp"),
  "d": ("train", 1.3, "noise"),
  "half_silent": ("train", 1.0, "half_silent"),
  "f": ("train", 0.9, "noise"),
  "g": ("train", 1.6, "noise"),
  "eval_long": ("eval", 0.8, "noise"),
  "eval_short": ("eval", 0.15, "noise"),
}
TRAIN_IDS = {k for k, v in CLIPS.items() if v[0] == "train"}


def _signal(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
  n = round(seconds * RATE)
  t = np.arange(n) / RATE
  if kind == "chirp":  # no two windows alike, unlike a steady sine
    return 0.3 * np.sin(2 * np.pi * (200.0 + 1_000.0 * t) * t)
  audio = rng.uniform(-0.3, 0.3, n)
  if kind == "half_silent":
    audio[: round(0.6 * RATE)] = 0.0
  return audio


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[AudioSource, dict[str, np.ndarray]]:
  """The built dataset's source and its clips as stored ({id: float32 [samples]})."""
  manual_dir = tmp_path_factory.mktemp("crop_clips")
  rng = np.random.default_rng(0)
  rows = []
  for clip_id, (split, seconds, kind) in CLIPS.items():
    sf.write(manual_dir / f"{clip_id}.wav", _signal(kind, seconds, rng).astype(np.float32), RATE)
    rows.append(
      {"file": f"{clip_id}.wav", "id": clip_id, "caption": f"cap {clip_id}", "split": split}
    )
  write_captions_csv(manual_dir / "captions.csv", rows)
  result = build.build_dataset(
    "audio_folder",
    data_dir=str(tmp_path_factory.mktemp("crop_data")),
    manual_dir=str(manual_dir),
    overrides={"sample_rate": RATE, "min_seconds": 0.1},
  )
  source = AudioSource(result.tfds_name, data_dir=result.data_dir, sample_rate=RATE)
  clips = {}
  for split in result.splits:
    ds = tfds.load(result.tfds_name, data_dir=result.data_dir, split=split)
    clips.update({ex["id"].decode(): ex["audio"] for ex in tfds.as_numpy(ds)})
  assert set(clips) == set(CLIPS)
  return source, clips


def _batches(
  source: AudioSource, limit: int | None = None, **kwargs
) -> list[dict[str, np.ndarray]]:
  args = {"split": "train", "crop_samples": CROP, "batch_size": 2, "seed": 7, "num_epochs": 2}
  ds = audio_crop_dataset(source, **{**args, **kwargs})
  return list(ds.take(limit).as_numpy_iterator() if limit else ds.as_numpy_iterator())


def _rows(batches: list[dict[str, np.ndarray]]) -> list[dict]:
  """Batches → per-crop dicts with decoded strings."""
  rows = []
  for batch in batches:
    for i in range(len(batch["id"])):
      row = {k: v[i] for k, v in batch.items()}
      rows.append({k: v.decode() if isinstance(v, bytes) else v for k, v in row.items()})
  return rows


def _window_start(crop: np.ndarray, mask: np.ndarray, clip: np.ndarray) -> int:
  """Where the crop's real samples sit in the clip; fails if they are no window of it."""
  real = int(mask.sum())
  np.testing.assert_array_equal(mask, np.arange(CROP) < real)  # real prefix, padded tail
  np.testing.assert_array_equal(crop[real:], 0.0)
  windows = np.lib.stride_tricks.sliding_window_view(clip, real)
  starts = np.flatnonzero((windows == crop[:real]).all(axis=1))
  assert starts.size > 0, "crop is not a window of its clip"
  return int(starts[0])


def test_crops_are_windows_of_their_clips_with_random_offsets(built):
  source, clips = built
  batches = _batches(source, crops_per_clip=3, with_captions=True, min_rms_db=None)
  for batch in batches:
    assert set(batch) == {"audio", "audio_mask", "id", "caption"}
    assert batch["audio"].shape == batch["audio_mask"].shape == (2, CROP)
    assert batch["audio"].dtype == batch["audio_mask"].dtype == np.float32
    assert batch["id"].shape == batch["caption"].shape == (2,)
  rows = _rows(batches)
  assert len(rows) == 2 * 3 * len(TRAIN_IDS) - (2 * 3 * len(TRAIN_IDS)) % 2
  starts = {}
  for row in rows:
    assert row["caption"] == f"cap {row['id']}"
    assert row["audio_mask"].sum() == min(CROP, len(clips[row["id"]]))
    start = _window_start(row["audio"], row["audio_mask"], clips[row["id"]])
    starts.setdefault(row["id"], set()).add(start)
  assert starts["short"] == {0}  # shorter than the crop: from 0, zero-padded
  assert all(len(starts[i]) > 1 for i in TRAIN_IDS - {"short"})  # 6 draws, not all alike
  assert max(max(s) for s in starts.values()) > CROP  # offsets reach deep into long clips


def test_eval_windows_start_at_zero_and_pad_short_clips(built):
  source, clips = built
  rows = _rows(
    _batches(source, split="eval", shuffle=False, num_epochs=1, batch_size=1, crops_per_clip=5)
  )
  long, short = clips["eval_long"], clips["eval_short"]  # 6400 and 1200 samples
  got = sorted((r["id"], _window_start(r["audio"], r["audio_mask"], clips[r["id"]])) for r in rows)
  # Consecutive windows from 0; those past a clip's end have no real sample and are dropped.
  assert got == [("eval_long", i * CROP) for i in range(4)] + [("eval_short", 0)]
  (short_row,) = [r for r in rows if r["id"] == "eval_short"]
  np.testing.assert_array_equal(short_row["audio"][: len(short)], short)
  np.testing.assert_array_equal(short_row["audio_mask"], np.arange(CROP) < len(short))
  (fourth,) = [r for r in rows if r["id"] == "eval_long" and not r["audio_mask"].all()]
  assert fourth["audio_mask"].sum() == len(long) - 3 * CROP  # the fourth window is padded


def test_silent_crops_are_dropped(built):
  source, _ = built
  eval_mode = {"shuffle": False, "num_epochs": 1, "batch_size": 1}
  kept = {r["id"] for r in _rows(_batches(source, **eval_mode))}
  assert kept == TRAIN_IDS - {"half_silent"}  # its window [0, CROP) is all zeros
  kept_all = _rows(_batches(source, **eval_mode, min_rms_db=None))
  assert {r["id"] for r in kept_all} == TRAIN_IDS
  (silent,) = [r for r in kept_all if r["id"] == "half_silent"]
  assert not silent["audio"].any() and silent["audio_mask"].all()

  def rms_db(row):
    mean_square = np.mean(row["audio"][row["audio_mask"] > 0] ** 2)
    return 10 * np.log10(mean_square + 1e-20)

  train = {"crops_per_clip": 8}
  assert min(rms_db(r) for r in _rows(_batches(source, **train))) >= -50.0
  assert min(rms_db(r) for r in _rows(_batches(source, **train, min_rms_db=None))) < -100.0


def test_same_arguments_same_batches(built):
  source, _ = built
  first = _batches(source, crops_per_clip=2, num_epochs=None, limit=12)
  again = _batches(source, crops_per_clip=2, num_epochs=None, limit=12)
  other_seed = _batches(source, crops_per_clip=2, num_epochs=None, limit=12, seed=8)
  assert len(first) == 12  # repeats forever: 12 batches of 2 > one epoch's 14 crops
  for a, b in zip(first, again, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert any(not np.array_equal(a["audio"], b["audio"]) for a, b in zip(first, other_seed))


def test_skip_batches_resumes_exactly(built):
  source, _ = built
  full = _batches(source, crops_per_clip=2, num_epochs=3)
  resumed = _batches(source, crops_per_clip=2, num_epochs=3, skip_batches=5)
  assert len(full) > 5 and len(resumed) == len(full) - 5
  for a, b in zip(full[5:], resumed, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_are_disjoint_and_cover_the_split(built, shuffle):
  source, _ = built
  args = {"num_epochs": 1, "batch_size": 1, "min_rms_db": None, "shuffle": shuffle}
  shards = [
    [r["id"] for r in _rows(_batches(source, shard_id=i, num_shards=2, **args))] for i in (0, 1)
  ]
  assert all(shards)
  assert not set(shards[0]) & set(shards[1])
  assert sorted(shards[0] + shards[1]) == sorted(TRAIN_IDS)


def test_sample_rate_mismatch_names_both_rates(built):
  source, _ = built
  wrong = AudioSource(source.name, data_dir=source.data_dir, sample_rate=24_000)
  with pytest.raises(ValueError, match=r"8000 Hz.*24000 Hz"):
    audio_crop_dataset(wrong, split="train", crop_samples=CROP, batch_size=2, seed=0)


@pytest.mark.parametrize(
  "bad",
  [{"shard_id": 2, "num_shards": 2}, {"crop_samples": 0}, {"skip_batches": -1}, {"num_epochs": 0}],
)
def test_bad_arguments_raise(built, bad):
  source, _ = built
  args = {"split": "train", "crop_samples": CROP, "batch_size": 2, "seed": 0, **bad}
  with pytest.raises(ValueError):
    audio_crop_dataset(source, **args)
