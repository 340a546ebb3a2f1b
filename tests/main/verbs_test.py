"""Smoke tests of the compile and bench verbs, and the paper configs' sizes (the quickstart has
tests/main/quickstart_test.py)."""

import json
import math

import jax
import pytest

from musiclm_jax.main import cli, gin_utils


@pytest.mark.parametrize("stage", ["semantic", "coarse", "fine"])
def test_paper_stage_configs_have_about_430m_params(stage):
  gin_utils.parse([f"gin/models/{stage}/paper.gin"], [])
  model = gin_utils.macro("MODEL")
  assert 400e6 < model.num_params() < 460e6, model.num_params()
  expected = {"semantic": 12 + 750, "coarse": 12 + 250 + 2000, "fine": 600 + 1200}[stage]
  assert model.sequence_length == expected


def test_num_params_formula_matches_initialised_tiny_model():
  gin_utils.parse(["gin/models/coarse/tiny.gin"], [])
  model = gin_utils.macro("MODEL")
  shapes = jax.eval_shape(lambda: model.get_initial_variables(jax.random.key(0)))
  counted = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert counted == model.num_params()


@pytest.mark.slow
def test_compile_verb_reports_memory_for_a_tpu_topology(tmp_path, capsys):
  out = tmp_path / "report.json"
  code = cli.main(
    [
      "compile",
      "--gin_file=gin/models/semantic/tiny.gin",
      "--gin_file=gin/mesh/data_parallel.gin",
      "--topology=v5e:2x2",
      "--batch_size=8",
      f"--out={out}",
    ]
  )
  assert code == 0
  report = json.loads(out.read_text())
  assert report["num_devices"] == 4 and report["device_kind"].startswith("TPU v5")
  assert report["fits"] is True and report["peak_bytes_per_device"] > 0
  gin_utils.parse(["gin/models/semantic/tiny.gin"], [])
  assert report["num_params"] == gin_utils.macro("MODEL").num_params()
  assert "per-chip memory" in capsys.readouterr().out


@pytest.mark.slow
def test_compile_verb_compiles_for_two_slices_with_data_parallel_over_dcn(tmp_path):
  out = tmp_path / "report.json"
  code = cli.main(
    [
      "compile",
      "--gin_file=gin/models/semantic/tiny.gin",
      "--gin_file=gin/mesh/tpu_v5e_16x2_multislice.gin",
      "--gin.partitioning.MeshConfig.ici_fsdp=4",  # the shipped file's 16, for 2x2 slices
      "--topology=v5e:2x2",
      "--num_slices=2",
      "--batch_size=8",
      f"--out={out}",
    ]
  )
  assert code == 0
  report = json.loads(out.read_text())
  assert report["topology"] == "2x v5e:2x2" and report["num_devices"] == 8
  assert report["mesh_shape"] == {"data": 2, "fsdp": 4, "tensor": 1}


def test_compile_verb_rejects_an_unknown_topology(capsys):
  with pytest.raises(ValueError, match="Cannot describe TPU topology"):
    cli.main(["compile", "--gin_file=gin/models/semantic/tiny.gin", "--topology=v99:1x1"])


def test_bench_decode_measures_cached_and_uncached(tmp_path):
  out = tmp_path / "decode.json"
  code = cli.main(
    [
      "bench",
      "decode",
      "--gin_file=gin/models/semantic/tiny.gin",
      "--batch_sizes=2",
      "--context_lengths=16,64",
      "--new_tokens=4",
      "--uncached_max_context=16",
      f"--out={out}",
    ]
  )
  assert code == 0
  rows = json.loads(out.read_text())["rows"]
  assert [r["context"] for r in rows] == [16, 64]
  assert rows[0]["cached_tokens_per_s"] > 0 and rows[0]["uncached_tokens_per_s"] > 0
  assert "uncached_tokens_per_s" not in rows[1]  # above uncached_max_context


def test_bench_decode_times_steps_in_a_preallocated_cache(tmp_path):
  out = tmp_path / "decode.json"
  code = cli.main(
    [
      "bench",
      "decode",
      "--gin_file=gin/models/semantic/tiny.gin",
      "--gin.config.TransformerConfig.decode_chunk_length=8",
      "--batch_sizes=1",
      "--context_lengths=4,40",
      "--new_tokens=4",
      "--uncached_max_context=0",
      "--cache_length=64",
      "--repeats=1",
      f"--out={out}",
    ]
  )
  assert code == 0
  rows = json.loads(out.read_text())["rows"]
  assert [r["cache_length"] for r in rows] == [64, 64]
  assert all(r["ms_per_step"] > 0 for r in rows)


def test_bench_train_reports_throughput(tmp_path):
  out = tmp_path / "train.json"
  code = cli.main(
    [
      "bench",
      "train",
      "--gin_file=gin/models/fine/tiny.gin",
      "--gin_file=gin/mesh/cpu8.gin",
      "--batch_size=8",
      "--num_steps=2",
      f"--out={out}",
    ]
  )
  assert code == 0
  (row,) = json.loads(out.read_text())["rows"]
  assert row["tokens_per_s"] > 0 and row["step_time_s"] > 0


def test_bench_render_reports_audio_seconds_per_second(tmp_path):
  out = tmp_path / "render.json"
  code = cli.main(
    ["bench", "render", "--num_clips=2", "--clip_seconds=1", "--worker_counts=1", f"--out={out}"]
  )
  assert code == 0
  (row,) = json.loads(out.read_text())["rows"]
  assert row["clips"] == 2 and row["audio_s"] == pytest.approx(2.0)
  assert row["audio_s_per_s"] > 0 and row["speedup"] == 1.0
