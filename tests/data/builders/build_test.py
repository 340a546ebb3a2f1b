"""build_dataset's choices (configs, overrides) and its errors, which name what to do."""

from __future__ import annotations

import pytest

from musiclm_jax.data.builders import AudioFolder, BuildError, Musiccaps, base, build
from tests.data.builders.inputs import write_captions_csv, write_sine


@pytest.mark.parametrize(
  "config, fields, want",
  [
    (None, {}, "24khz"),
    ("16khz", {}, "16khz"),
    (None, {"sample_rate": 16_000}, "16khz"),
    (None, {"sample_rate": 22_050, "max_seconds": 10.0}, "22050hz_max10s"),
    (None, {"min_seconds": 1.5, "normalization": "peak"}, "24khz_min1p5s_peak"),
    ("mine", {"max_seconds": 5.0}, "mine"),
  ],
)
def test_resolve_config_names(config, fields, want):
  resolved = build.resolve_config(Musiccaps, config, fields)
  name = resolved if isinstance(resolved, str) else resolved.name
  assert name == want
  if isinstance(resolved, str):
    assert resolved in Musiccaps.builder_configs  # registered: passed by name
  else:
    assert resolved.max_seconds == fields.get("max_seconds", base.DEFAULT_MAX_SECONDS)


def test_registered_config_with_other_values_is_refused():
  with pytest.raises(BuildError, match="registered with other values"):
    build.resolve_config(Musiccaps, "16khz", {"sample_rate": 24_000})


def test_overrides_split_into_config_fields_and_builder_kwargs():
  fields, kwargs = build.split_overrides(AudioFolder, {"sample_rate": 16_000, "manifest": "x.csv"})
  assert fields == {"sample_rate": 16_000} and kwargs == {"manifest": "x.csv"}
  with pytest.raises(BuildError, match="unknown option.*render_num_clips.*accepted: sample_rate"):
    build.split_overrides(Musiccaps, {"render_num_clips": 3})


def test_unknown_dataset(tmp_path):
  with pytest.raises(BuildError, match="unknown dataset 'nsynth'; one of musiccaps"):
    build.build_dataset("nsynth", data_dir=str(tmp_path), manual_dir=str(tmp_path))


def test_missing_manual_dir(tmp_path):
  with pytest.raises(BuildError, match="manual_dir .*nowhere is not a folder"):
    build.build_dataset("musiccaps", data_dir=str(tmp_path), manual_dir=str(tmp_path / "nowhere"))


def test_two_manifests_and_no_default_name(tmp_path):
  (tmp_path / "a.csv").write_text("ytid,start_s,end_s,caption\n")
  (tmp_path / "b.csv").write_text("ytid,start_s,end_s,caption\n")
  with pytest.raises(BuildError, match="found a.csv, b.csv; pass its name as manifest="):
    build.build_dataset("musiccaps", data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path))


def test_manifest_without_required_columns(tmp_path):
  (tmp_path / "musiccaps-public.csv").write_text("ytid,caption\nabc,hello\n")
  with pytest.raises(BuildError, match="lacks required column"):
    build.build_dataset("musiccaps", data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path))


def test_nothing_usable_is_an_error_carrying_the_report(tmp_path):
  (tmp_path / "bad.wav").write_bytes(b"not audio at all")
  write_sine(tmp_path / "hush.wav", 0.1, 24_000)
  rows = [
    {"file": "bad.wav", "caption": "Broken."},
    {"file": "hush.wav", "caption": "Too short."},
    {"file": "gone.wav", "caption": "Missing."},
  ]
  write_captions_csv(tmp_path / "captions.csv", rows)
  with pytest.raises(BuildError, match="no usable examples") as error:
    build.build_dataset("audio_folder", data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path))
  report = error.value.report
  assert report.kept == 0 and report.skipped == 3
  assert set(report.counts) == {"missing_file", "too_short", "corrupt"}


def test_a_split_with_no_usable_clip_is_left_out(tmp_path):
  write_sine(tmp_path / "good.wav", 1.0, 24_000)
  (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
  rows = [
    {"file": "good.wav", "caption": "Fine.", "split": "train"},
    {"file": "bad.wav", "caption": "Broken.", "split": "test"},
  ]
  write_captions_csv(tmp_path / "captions.csv", rows)
  result = build.build_dataset(
    "audio_folder", data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path)
  )
  assert result.splits == {"train": 1}
  assert result.report.kept == 1 and result.report.skipped == 1
