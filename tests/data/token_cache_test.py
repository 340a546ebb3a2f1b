"""The offline token cache: seqio's format, resumable shard by shard, tied to its tokenizers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import seqio

from musiclm_jax.data import token_bundle, token_cache, token_tasks
from musiclm_jax.data.token_bundle import CacheMismatchError
from musiclm_jax.tokenizers import kmeans
from tasks import musiclm

# One xdist worker builds the session's `token_world` (a minute of tokenizer training) for all three.
pytestmark = [
  pytest.mark.usefixtures("persistent_compilation_cache"),
  pytest.mark.xdist_group("token_world"),
]

TASK = "musiclm_tokens_rendered_music"
SPLITS = ("eval", "train")
NUM_SHARDS = 3  # per split (token_world builds 3 TFDS files per split)


def _spec(world, bundle=None):
  return musiclm.tokens_task_spec("rendered_music", bundle or world.bundle, data_dir=world.data_dir)


def _task_dir(cache_dir) -> str:
  return token_tasks.task_cache_dir(str(cache_dir), TASK)


def _read(world, cache_dir, split="train", bundle=None) -> list[dict]:
  source = token_tasks.TokenStreamSource(
    _spec(world, bundle), use_cached=True, cache_dir=str(cache_dir)
  )
  return list(source.get_dataset(split, shuffle=False).as_numpy_iterator())


@pytest.fixture(scope="module")
def reference(token_world, tmp_path_factory):
  """A cache written in one uninterrupted run, and its report."""
  cache_dir = tmp_path_factory.mktemp("reference_cache")
  report = token_cache.cache_tokens_task(_spec(token_world), str(cache_dir))
  return cache_dir, report


def test_the_cache_is_seqios_and_counts_its_tokens(token_world, reference):
  cache_dir, report = reference
  assert set(report) == set(SPLITS)
  assert report["train"]["examples"] == 8 and report["eval"]["examples"] == 4
  assert report["train"]["audio_seconds"] == pytest.approx(32.0)
  assert report["train"]["acoustic_tokens"] == 8 * 200 * 12
  usage = report["train"]["code_usage"]
  assert (
    len(usage["acoustic"]["used_codes"]) == 12 and 1 <= usage["semantic"]["used_codes"][0] <= 32
  )
  assert os.path.exists(os.path.join(_task_dir(cache_dir), "COMPLETED"))
  previous = seqio.get_global_cache_dirs()
  seqio.set_global_cache_dirs([str(cache_dir)])
  try:
    task = _spec(token_world).task()
    seqio_examples = list(
      task.get_dataset(None, split="train", use_cached=True, shuffle=False).as_numpy_iterator()
    )
  finally:
    seqio.set_global_cache_dirs(previous)
  ours = _read(token_world, cache_dir)
  assert sorted(e["id"] for e in seqio_examples) == sorted(e["id"] for e in ours)
  by_id = {e["id"]: e for e in ours}
  for example in seqio_examples:
    for family in ("mulan", "semantic", "acoustic"):
      np.testing.assert_array_equal(example[family], by_id[example["id"]][family])


def _shard_mtimes(cache_dir) -> dict[str, float]:
  task_dir = _task_dir(cache_dir)
  return {
    n: os.stat(os.path.join(task_dir, n)).st_mtime_ns
    for n in os.listdir(task_dir)
    if ".tfrecord-" in n
  }


def test_a_rerun_tokenizes_only_the_unfinished_shards(token_world, reference, tmp_path):
  first = token_cache.cache_tokens_task(_spec(token_world), str(tmp_path), max_shards=2)
  assert first["eval"]["finished_shards"] == 2 and first["train"]["finished_shards"] == 0
  assert not os.path.exists(os.path.join(_task_dir(tmp_path), "COMPLETED"))
  with pytest.raises(FileNotFoundError, match="incomplete"):
    _read(token_world, tmp_path, "eval")
  before = _shard_mtimes(tmp_path)
  second = token_cache.cache_tokens_task(_spec(token_world), str(tmp_path))
  assert all(second[s]["finished_shards"] == NUM_SHARDS for s in SPLITS)
  after = _shard_mtimes(tmp_path)
  assert all(after[name] == mtime for name, mtime in before.items())  # not rewritten
  assert len(after) == 2 * NUM_SHARDS
  _assert_same_examples(_read(token_world, tmp_path), _read(token_world, reference[0]))


def _assert_same_examples(got: list[dict], want: list[dict]) -> None:
  assert [e["id"] for e in got] == [e["id"] for e in want]  # same clips, once each, same order
  for a, b in zip(got, want):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def _tokenize_command(world, cache_dir) -> list[str]:
  return [
    sys.executable,
    "-m",
    "musiclm_jax.main.cli",
    "tokenize",
    "--gin_file=gin/runs/tokenize_rendered.gin",
    f"--gin.TOKENIZERS_DIR='{world.tokenizers_dir}'",
    f"--gin.DATA_DIR='{world.data_dir}'",
    "--gin.TOKENIZE_BATCH_SIZE=4",
    f"--output_cache_dir={cache_dir}",
  ]


def test_tokenize_killed_mid_run_then_rerun_loses_and_duplicates_nothing(
  token_world, reference, tmp_path
):
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS="cpu")
  process = subprocess.Popen(
    _tokenize_command(token_world, tmp_path),
    cwd=repo,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  task_dir = _task_dir(tmp_path)
  deadline = time.time() + 240
  while time.time() < deadline and process.poll() is None:
    done = (
      [n for n in os.listdir(task_dir) if n.endswith(".stats.json")]
      if os.path.isdir(task_dir)
      else []
    )
    if done:
      break
    time.sleep(0.02)
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  finished = [n for n in os.listdir(task_dir) if n.endswith(".stats.json") and ".shard-" in n]
  assert 1 <= len(finished) < 2 * NUM_SHARDS, finished  # killed mid-run, not before or after
  report = token_cache.cache_tokens_task(_spec(token_world), str(tmp_path))
  assert all(report[s]["finished_shards"] == NUM_SHARDS for s in SPLITS)
  assert not [n for n in os.listdir(task_dir) if n.startswith(token_cache.TMP_PREFIX)]
  for split in SPLITS:
    _assert_same_examples(
      _read(token_world, tmp_path, split), _read(token_world, reference[0], split)
    )


def _copy_tokenizers(world, destination) -> token_bundle.TokenizerBundleConfig:
  shutil.copytree(world.tokenizers_dir, destination)
  return token_bundle.bundle_under(str(destination), batch_size=world.bundle.batch_size)


def test_copied_tokenizers_and_cache_are_still_accepted(token_world, reference, tmp_path):
  bundle = _copy_tokenizers(token_world, tmp_path / "tokenizers")
  shutil.copytree(reference[0], tmp_path / "cache")
  _assert_same_examples(
    _read(token_world, tmp_path / "cache", bundle=bundle), _read(token_world, reference[0])
  )


def test_a_cache_of_other_tokenizers_is_refused(token_world, reference, tmp_path):
  bundle = _copy_tokenizers(token_world, tmp_path / "tokenizers")
  fitted = kmeans.KMeansModel.load(bundle.kmeans_dir)
  moved = np.asarray(fitted.centroids) + 0.01
  kmeans.KMeansModel(moved, fitted.mean, fitted.std, fitted.normalization, fitted.metadata).save(
    bundle.kmeans_dir
  )
  with pytest.raises(CacheMismatchError, match="kmeans"):
    _read(token_world, reference[0], bundle=bundle)
  with pytest.raises(CacheMismatchError, match="--overwrite"):
    token_cache.cache_tokens_task(_spec(token_world, bundle), str(reference[0]), max_shards=0)


def test_a_stage_whose_token_spec_is_not_the_tokenizers_is_refused(token_world):
  from musiclm_jax.stages import StageLayout, TokenSpec

  with pytest.raises(CacheMismatchError, match="differs from what the tokenizers produce"):
    musiclm.stage_task(
      StageLayout("semantic", TokenSpec.tiny(), 4.0), "rendered_music", token_world.bundle
    )
