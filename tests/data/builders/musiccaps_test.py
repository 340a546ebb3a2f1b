"""musiccaps: a real-format MusicCaps CSV with good, missing, corrupt and badly captioned clips,
built with the plain generator and with Beam's DirectRunner, then read back with tfds."""

from __future__ import annotations

import csv
import json
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from musiclm_jax.data.builders import build
from musiclm_jax.main import build_data
from tests.data.builders.inputs import (
  ASPECTS,
  MUSICCAPS_KEPT,
  MUSICCAPS_SKIPPED,
  musiccaps_caption,
)


@pytest.fixture(scope="module")
def plain(musiccaps_dir, tmp_path_factory) -> build.BuildResult:
  data_dir = tmp_path_factory.mktemp("musiccaps_plain")
  return build.build_dataset("musiccaps", data_dir=str(data_dir), manual_dir=str(musiccaps_dir))


@pytest.fixture(scope="module")
def beam(musiccaps_dir, tmp_path_factory) -> build.BuildResult:
  data_dir = tmp_path_factory.mktemp("musiccaps_beam")
  return build.build_dataset(
    "musiccaps",
    data_dir=str(data_dir),
    manual_dir=str(musiccaps_dir),
    beam_runner="DirectRunner",
    beam_options=["--direct_num_workers=1"],
  )


def _examples(result: build.BuildResult, split: str) -> dict[str, dict]:
  ds = tfds.load(result.tfds_name, data_dir=result.data_dir, split=split)
  return {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}


def test_splits_and_skip_report(plain):
  assert plain.tfds_name == "musiccaps/24khz" and not plain.reused
  assert plain.splits == {"eval": 1, "train": 2}
  assert plain.report.kept == 3
  assert plain.report.counts == MUSICCAPS_SKIPPED
  on_disk = json.loads(open(plain.report_path).read())
  assert plain.report_path == f"{plain.dataset_dir}/skip_report.json"
  assert on_disk["by_reason"] == MUSICCAPS_SKIPPED
  wheres = {r: e[0]["where"] for r, e in on_disk["examples"].items()}
  assert wheres["missing_file"].endswith("musiccaps-public.csv:4")
  assert "-1LrH01Ei1w.wav" in wheres["corrupt"]
  assert wheres["non_utf8_caption"].endswith("musiccaps-public.csv:6")


@pytest.mark.parametrize("split", ["train", "eval"])
def test_load_gives_mono_float_audio_at_24khz(plain, split):
  examples = _examples(plain, split)
  assert set(examples) == set(MUSICCAPS_KEPT[split])
  for ytid, seconds in MUSICCAPS_KEPT[split].items():
    ex = examples[ytid]
    assert ex["audio"].dtype == np.float32 and ex["audio"].shape == (round(seconds * 24_000),)
    assert 0.25 < np.abs(ex["audio"]).max() < 0.35  # the 0.3 sine, resampled and downmixed
    assert ex["caption"].decode() == musiccaps_caption(ytid)
    assert tuple(a.decode() for a in ex["aspects"]) == ASPECTS
    assert ex["melody_group"].decode() == ytid and ex["score_id"].decode() == ytid


def test_tfds_builder_reads_the_build(plain):
  builder = tfds.builder("musiccaps", data_dir=plain.data_dir)
  assert builder.builder_config.name == "24khz"
  assert builder.info.features["audio"].sample_rate == 24_000
  assert builder.info.splits["train"].num_examples == 2


def test_beam_path_yields_the_same_examples_and_report(plain, beam):
  assert beam.splits == plain.splits
  assert beam.report.to_dict()["by_reason"] == plain.report.to_dict()["by_reason"]
  assert beam.report.kept == plain.report.kept
  for split in plain.splits:
    got, want = _examples(beam, split), _examples(plain, split)
    assert set(got) == set(want)
    for ytid, ex in want.items():
      np.testing.assert_array_equal(got[ytid]["audio"], ex["audio"])
      assert got[ytid]["caption"] == ex["caption"]
  assert not list(pathlib.Path(beam.dataset_dir).glob("*.partial.json"))


def test_second_build_reuses_the_dataset_and_its_report(plain, musiccaps_dir):
  again = build.build_dataset("musiccaps", data_dir=plain.data_dir, manual_dir=str(musiccaps_dir))
  assert again.reused and again.splits == plain.splits
  assert again.report.to_dict() == plain.report.to_dict()


def test_every_missing_clip_is_listed_beside_the_report(musiccaps_dir, tmp_path, capsys):
  """More missing clips than the report keeps examples of: missing_clips.csv has them all."""
  manual_dir = tmp_path / "manual"
  shutil.copytree(musiccaps_dir, manual_dir)
  csv_path = manual_dir / "musiccaps-public.csv"
  extra = [(f"-missing{i:03d}", f"{i}", f"{i + 10}.5") for i in range(30)]
  with open(csv_path, "a") as f:  # one caption over two lines: rows are found by record
    for ytid, start, end in extra:
      f.write(f'{ytid},{start},{end},"/m/0",[],"A caption\nover two lines.",4,False,False\n')
  data_dir = tmp_path / "data"
  argv = ["--dataset=musiccaps", f"--manual_dir={manual_dir}", f"--data_dir={data_dir}"]
  assert build_data.main(argv) == 0
  result = build.build_dataset("musiccaps", data_dir=str(data_dir), manual_dir=str(manual_dir))
  assert result.reused and result.report.counts["missing_file"] == 31
  assert len(result.report.to_dict()["examples"]["missing_file"]) == 20  # the cap
  assert result.report.files == {"missing_clips": "missing_clips.csv"}
  listed = pathlib.Path(result.dataset_dir) / "missing_clips.csv"
  with open(listed, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["ytid", "start_s", "end_s"]
  assert rows[1:] == [["-0xzrMun0Rs", "30", "40"], *map(list, extra)]
  assert f"missing clips: {listed}" in capsys.readouterr().out
