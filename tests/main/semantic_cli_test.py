"""Smoke test of the semantic-token run files through `musiclm-jax train`, as the README runs them:
w2v-BERT pre-training (gin/runs/w2v_bert_rendered.gin), then the k-means on its embeddings
(gin/runs/semantic_kmeans_rendered.gin), then semantic tokens from the two."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import gin
from musiclm_jax.data.builders import build
from musiclm_jax.data.render.corpus import render_corpus
from musiclm_jax.main import cli
from musiclm_jax.tokenizers.w2v_bert.semantic import load_semantic_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  manual_dir = tmp_path_factory.mktemp("rendered")
  render_corpus(str(manual_dir), num_clips=16, clip_seconds=4.0, seed=2, progress=False)
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
def test_w2v_bert_then_kmeans_run_files_make_a_semantic_tokenizer(data_dir, tmp_path):
  w2v_dir, kmeans_dir = tmp_path / "w2v_bert", tmp_path / "kmeans"
  common = [f"--gin.DATA_DIR='{data_dir}'"]
  assert (
    _train(
      "--gin_file=gin/models/w2v_bert/tiny.gin",
      "--gin_file=gin/runs/w2v_bert_rendered.gin",
      "--gin_file=gin/mesh/single_device.gin",
      f"--gin.MODEL_DIR='{w2v_dir}'",
      "--gin.NUM_STEPS=4",
      "--gin.w2v_bert_train_job.train_w2v_bert.log_every_steps=2",
      "--gin.optimizers.OptimizerConfig.warmup_steps=1",
      *common,
    )
    == 0
  )
  metrics = json.loads((w2v_dir / "final_metrics.json").read_text())
  assert metrics["step"] == 4 and np.isfinite(metrics["eval/loss"])
  assert (w2v_dir / "operative_config.gin").exists()

  assert (
    _train(
      "--gin_file=gin/runs/semantic_kmeans_rendered.gin",
      "--gin_file=gin/mesh/single_device.gin",
      f"--gin.MODEL_DIR='{kmeans_dir}'",
      f"--gin.W2V_BERT_DIR='{w2v_dir}'",
      "--gin.NUM_CLUSTERS=8",
      "--gin.CROP_SAMPLES=96000",
      "--gin.MAX_BATCHES=2",
      "--gin.kmeans.KMeansConfig.init_samples=512",
      *common,
    )
    == 0
  )
  tokenizer = load_semantic_tokenizer(str(w2v_dir), str(kmeans_dir))
  assert tokenizer.kmeans.metadata["layer"] == 2  # the tiny config's kmeans_layer
  audio = np.random.default_rng(0).uniform(-0.3, 0.3, (1, 24_000 * 2)).astype(np.float32)
  ids = tokenizer.semantic_tokens(audio)
  assert ids.shape == (1, 50) and 0 <= ids.min() and ids.max() < 8
