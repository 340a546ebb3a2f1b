"""Smoke test of the MuLan run files through `musiclm-jax train`, as the README runs them: MuLan
(gin/runs/mulan_rendered.gin), then its conditioning quantizer
(gin/runs/mulan_quantizer_rendered.gin), then tokens of a caption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gin
from musiclm_jax.data.builders import build
from musiclm_jax.data.render.corpus import render_corpus
from musiclm_jax.main import cli
from musiclm_jax.tokenizers.mulan.tokens import load_mulan_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  manual_dir = tmp_path_factory.mktemp("rendered")
  render_corpus(
    str(manual_dir), num_clips=24, clip_seconds=2.0, seed=4, eval_fraction=0.3, progress=False
  )
  data_dir = tmp_path_factory.mktemp("tfds")
  build.build_dataset("rendered_music", data_dir=str(data_dir), manual_dir=str(manual_dir))
  return str(data_dir)


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)
  yield
  gin.clear_config()


def _train(*args: str) -> int:
  code = cli.main(["train", *args])
  gin.clear_config()
  return code


@pytest.mark.slow
def test_mulan_then_quantizer_run_files_make_conditioning_tokens(data_dir, tmp_path):
  mulan_dir, rvq_dir = tmp_path / "mulan", tmp_path / "rvq"
  single = "--gin_file=gin/mesh/single_device.gin"
  code = _train(
    "--gin_file=gin/models/mulan/tiny.gin",
    "--gin_file=gin/runs/mulan_rendered.gin",
    single,
    f"--gin.MODEL_DIR='{mulan_dir}'",
    f"--gin.DATA_DIR='{data_dir}'",
    "--gin.NUM_STEPS=2",
    "--gin.BATCH_SIZE=8",
    "--gin.mulan_train_job.train_mulan.eval_clip_seconds=2.0",
    "--gin.optimizers.OptimizerConfig.warmup_steps=1",
  )
  assert code == 0
  metrics = json.loads((mulan_dir / "final_metrics.json").read_text())
  assert metrics["step"] == 2 and "eval/recall@5" in metrics
  assert (mulan_dir / "text_tokenizer.json").exists()

  code = _train(
    "--gin_file=gin/runs/mulan_quantizer_rendered.gin",
    single,
    f"--gin.MODEL_DIR='{rvq_dir}'",
    f"--gin.MULAN_DIR='{mulan_dir}'",
    f"--gin.DATA_DIR='{data_dir}'",
    "--gin.NUM_STEPS=2",
    "--gin.BATCH_SIZE=8",
    "--gin.NUM_LEVELS=3",
    "--gin.CODEBOOK_SIZE=4",
  )
  assert code == 0
  tokenizer = load_mulan_tokenizer(str(mulan_dir), str(rvq_dir))
  tokens = tokenizer.text_tokens(["a calm violin melody over soft piano"])
  assert tokens.shape == (1, 3) and 0 <= tokens.min() and tokens.max() < 4
