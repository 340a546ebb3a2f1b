"""rendered_music: a render-layout folder written by hand, and a tiny real render made by the
builder itself (music21 + FluidSynth)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from musiclm_jax.data.builders import BuildError, build
from tests.data.builders.inputs import write_sine

_HEADER = "ytid,start_s,end_s,aspect_list,caption,melody_group,score_id,split\n"
_ROWS = [
  ("bach-1-v0", "train", "bach-1", 1.0),
  ("bach-1-v1", "train", "bach-1", 1.0),
  ("folk-7-v0", "eval", "folk-7", 2.0),
  ("folk-7-v1", "dev-1", "folk-7", 2.0),  # not a split name TFDS can write
]


@pytest.fixture(scope="module")
def hand_written(tmp_path_factory) -> build.BuildResult:
  manual_dir = tmp_path_factory.mktemp("render_layout")
  lines = [_HEADER]
  for ytid, split, group, seconds in _ROWS:
    score = f"{group.split('-')[0]}/score{group.split('-')[1]}.mxl"
    caption = f"A chorale arrangement, {ytid}."
    lines.append(f'{ytid},0,{seconds:g},"[\'chorale\']","{caption}",{group},{score},{split}\n')
    write_sine(manual_dir / "audio" / f"{ytid}.wav", seconds, 24_000)
  (manual_dir / "musiccaps.csv").write_text("".join(lines))
  data_dir = tmp_path_factory.mktemp("render_data")
  return build.build_dataset("rendered_music", data_dir=str(data_dir), manual_dir=str(manual_dir))


def test_hand_written_render_layout(hand_written):
  assert hand_written.splits == {"eval": 1, "train": 2}
  assert hand_written.report.counts == {"bad_split": 1} and hand_written.report.kept == 3
  ds = tfds.load("rendered_music", data_dir=hand_written.data_dir, split="train")
  examples = {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}
  assert {ex["melody_group"].decode() for ex in examples.values()} == {"bach-1"}
  assert examples["bach-1-v0"]["score_id"].decode() == "bach/score1.mxl"
  assert examples["bach-1-v1"]["audio"].shape == (24_000,)


def test_renders_into_an_empty_manual_dir_when_asked(tmp_path):
  manual_dir = tmp_path / "render"
  result = build.build_dataset(
    "rendered_music",
    data_dir=str(tmp_path / "data"),
    manual_dir=str(manual_dir),
    config="16khz",
    overrides={"render_num_clips": 2, "render_clip_seconds": 1.0, "render_seed": 0},
  )
  assert (manual_dir / "musiccaps.csv").is_file()
  assert sum(result.splits.values()) == 2 and result.report.kept == 2
  examples = []
  for split in result.splits:
    ds = tfds.load(result.tfds_name, data_dir=result.data_dir, split=split)
    examples += list(tfds.as_numpy(ds))
  assert all(ex["audio"].shape == (16_000,) for ex in examples)
  assert all(np.abs(ex["audio"]).max() > 0.01 for ex in examples)
  assert examples[0]["melody_group"] == examples[1]["melody_group"]  # one passage, two renders
  assert all(ex["caption"] and len(ex["aspects"]) for ex in examples)


def test_missing_render_without_render_request_says_what_to_do(tmp_path):
  (tmp_path / "manual").mkdir()
  with pytest.raises(BuildError, match="has no musiccaps.csv: run `musiclm-jax render"):
    build.build_dataset(
      "rendered_music", data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path / "manual")
    )
