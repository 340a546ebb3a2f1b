"""`musiclm-jax tokenize` then `musiclm-jax train` of the three stage LMs from the token cache."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

import gin
from musiclm_jax.main import cli

# One xdist worker builds the session's `token_world` (a minute of tokenizer training) for all three.
pytestmark = [
  pytest.mark.usefixtures("persistent_compilation_cache"),
  pytest.mark.xdist_group("token_world"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
# The token world's codebooks (tests/conftest.py): semantic 32 clusters, acoustic 16 codes a level.
CODEBOOK_SIZES = {"semantic": 32, "coarse": 16, "fine": 16}


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)  # gin file paths are relative to the repository, as in the README
  yield
  gin.clear_config()


def _world_flags(world) -> list[str]:
  return [f"--gin.TOKENIZERS_DIR='{world.tokenizers_dir}'", f"--gin.DATA_DIR='{world.data_dir}'"]


@pytest.fixture(scope="module")
def cache_dir(token_world, tmp_path_factory):
  root = tmp_path_factory.mktemp("cli_token_cache")
  code = cli.main(
    [
      "tokenize",
      "--gin_file=gin/runs/tokenize_rendered.gin",
      *_world_flags(token_world),
      "--gin.TOKENIZE_BATCH_SIZE=4",
      "--tasks=musiclm_tokens_.*",
      f"--output_cache_dir={root}",
    ]
  )
  gin.clear_config()
  assert code == 0
  return root


def _losses(output: str) -> list[float]:
  return [float(x) for x in re.findall(r"^step \d+/\d+\s+loss ([0-9.]+)", output, re.M)]


@pytest.mark.parametrize("stage", ["semantic", "coarse", "fine"])
def test_stage_lms_train_from_the_cache_and_their_losses_fall(
  token_world, cache_dir, tmp_path, capsys, stage
):
  code = cli.main(
    [
      "train",
      f"--gin_file=gin/models/{stage}/tiny.gin",
      "--gin_file=gin/runs/stage_rendered.gin",
      "--gin_file=gin/mesh/single_device.gin",
      f"--gin.MODEL_DIR='{tmp_path}'",
      *_world_flags(token_world),
      f"--gin.CACHE_DIR='{cache_dir}'",
      "--gin.NUM_STEPS=60",
      "--gin.BATCH_SIZE=4",
      "--gin.train_job.train.log_every_steps=10",
    ]
  )
  assert code == 0
  losses = _losses(capsys.readouterr().out)
  # Below chance (a uniform guess over the target's codebook, which is what the codebook softmax
  # normalises over), not only below the first logged loss: the coarse and fine LMs start from the
  # codec's codebooks, so their first loss is already lower than a random model's.
  chance = math.log(CODEBOOK_SIZES[stage])
  assert len(losses) == 6 and losses[-1] < losses[0] and losses[-1] < 0.9 * chance, losses
  with open(tmp_path / "final_metrics.json") as f:
    assert json.load(f)["step"] == 60


def test_tokenize_reports_the_cache_once_done(token_world, cache_dir, capsys):
  code = cli.main(
    [
      "tokenize",
      "--gin_file=gin/runs/tokenize_rendered.gin",
      *_world_flags(token_world),
      f"--output_cache_dir={cache_dir}",
    ]
  )
  assert code == 0
  out = capsys.readouterr().out
  assert "train: 3/3 shards, 8 clips, 32.0 audio-s" in out and "eval: 3/3 shards, 4 clips" in out


def test_training_on_a_cache_of_other_tokenizers_exits_2_naming_them(
  token_world, cache_dir, tmp_path, capsys
):
  other = tmp_path / "other_tokenizers"
  import shutil

  shutil.copytree(token_world.tokenizers_dir, other)
  meta = other / "w2v_bert" / "checkpoints"
  step = max(int(p.name) for p in meta.iterdir() if p.name.isdigit())
  commit = meta / str(step) / "_CHECKPOINT_METADATA"
  data = json.loads(commit.read_text())
  data["commit_timestamp_nsecs"] += 1  # as if trained again
  commit.write_text(json.dumps(data))
  code = cli.main(
    [
      "train",
      "--gin_file=gin/models/semantic/tiny.gin",
      "--gin_file=gin/runs/stage_rendered.gin",
      f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
      f"--gin.TOKENIZERS_DIR='{other}'",
      f"--gin.DATA_DIR='{token_world.data_dir}'",
      f"--gin.CACHE_DIR='{cache_dir}'",
      "--gin.NUM_STEPS=2",
    ]
  )
  err = capsys.readouterr().err
  assert code == 2 and "CacheMismatchError" in err and "w2v_bert" in err
