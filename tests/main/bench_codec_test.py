"""Smoke tests of `musiclm-jax bench codec` (encode/decode speed) and `bench codec-train`."""

from __future__ import annotations

import json

import pytest

from musiclm_jax.benchmarks import codec as codec_benchmarks
from musiclm_jax.main import cli
from musiclm_jax.partitioning import Partitioner
from tests.size_configs import size_config


def test_bench_codec_writes_positive_figures(tmp_path, capsys):
  out = tmp_path / "codec.json"
  code = cli.main(
    [
      "bench",
      "codec",
      "--gin_file=gin/models/soundstream/tiny.gin",
      "--seconds=0.2",
      "--batch_sizes=1,2",
      "--repeats=2",
      f"--out={out}",
    ]
  )
  assert code == 0
  assert "encode_x_realtime" in capsys.readouterr().out
  rows = json.loads(out.read_text())["rows"]
  assert [(r["batch"], r["seconds"]) for r in rows] == [(1, 0.2), (2, 0.2)]
  for row in rows:
    for key in ("encode_s", "decode_s", "encode_x_realtime", "decode_x_realtime"):
      assert row[key] > 0, key
    assert row["encode_rtf"] == pytest.approx(1 / row["encode_x_realtime"])
    assert row["params"] == 61025  # size_config("soundstream", "tiny"): ≈61k generator parameters


@pytest.mark.parametrize(
  "kwargs",
  [{"seconds": 0.001}, {"batch_sizes": [0]}, {"repeats": 0}],
  ids=["under_a_frame", "batch_0", "repeats_0"],
)
def test_bench_codec_rejects_bad_arguments(kwargs):
  args = {"seconds": 1.0, "batch_sizes": [1], "repeats": 1, **kwargs}
  with pytest.raises(ValueError, match="bench_codec needs"):
    codec_benchmarks.bench_codec(size_config("soundstream", "tiny"), **args)


def test_bench_codec_train_times_both_phases(tmp_path, capsys):
  out = tmp_path / "codec_train.json"
  argv = ["bench", "codec-train", "--gin_file=gin/models/soundstream/tiny.gin"]
  # One device: compiling the GAN step for the 8 fake devices would take most of a minute.
  argv += ["--gin_file=gin/mesh/single_device.gin"]
  argv += ["--seconds=0.04", "--batch_size=2", "--repeats=2", f"--out={out}"]
  assert cli.main(argv) == 0
  assert "s_per_step" in capsys.readouterr().out
  rows = json.loads(out.read_text())["rows"]
  assert [r["phase"] for r in rows] == ["reconstruction", "adversarial"]
  for row in rows:
    assert row["s_per_step"] > 0
    assert row["audio_s_per_s"] == pytest.approx(2 * 0.04 / row["s_per_step"])


@pytest.mark.parametrize(
  "kwargs",
  [{"seconds": 0.03}, {"batch_size": 0}, {"repeats": 0}],
  ids=["not_whole_frames", "batch_0", "repeats_0"],
)
def test_bench_codec_train_rejects_bad_arguments(kwargs):
  args = {"seconds": 0.04, "batch_size": 1, "repeats": 1, **kwargs}
  with pytest.raises(ValueError, match="bench_codec_train needs"):
    codec_benchmarks.bench_codec_train(size_config("soundstream", "tiny"), Partitioner(), **args)
