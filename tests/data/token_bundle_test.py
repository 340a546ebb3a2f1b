"""token_bundle: checkpoint identities through checkpoints.py; loaders apart from their jobs."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import pytest

import musiclm_jax
from musiclm_jax import checkpoints
from musiclm_jax.checkpoints import CheckpointConfig, Checkpointer
from musiclm_jax.data import token_bundle

# What uses a trained model (the loaders, the bundle, the pipeline, evaluation, benchmarks).
_USERS = (
  "musiclm_jax.tokenizers.soundstream.codec",
  "musiclm_jax.tokenizers.w2v_bert.semantic",
  "musiclm_jax.tokenizers.mulan.tokens",
  "musiclm_jax.models.stage_lm",
  "musiclm_jax.data.token_bundle",
  "musiclm_jax.decoding.pipeline",
  "musiclm_jax.evaluation.codec_quality",
  "musiclm_jax.evaluation.music_report",
)
# Benchmarks time trainers, so they may import training/, but never a job.
_BENCHMARKS = (
  "musiclm_jax.benchmarks.codec",
  "musiclm_jax.benchmarks.evaluation",
  "musiclm_jax.benchmarks.mulan",
  "musiclm_jax.benchmarks.pipeline",
  "musiclm_jax.benchmarks.semantic",
  "musiclm_jax.benchmarks.stage_lm",
  "musiclm_jax.benchmarks.tokens",
)


def _imported_after(modules: tuple[str, ...], prefixes: tuple[str, ...]) -> list[str]:
  """The modules under `prefixes` that importing `modules` loads, in a fresh interpreter."""
  script = textwrap.dedent(
    f"""
    import importlib, json, sys
    for name in {modules!r}:
      importlib.import_module(name)
    print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))
    """
  )
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def _imports_of_jobs(path: pathlib.Path) -> list[str]:
  """'file:line' of each import of musiclm_jax.jobs in a source file, in functions too."""
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      names = [base] + [f"{base}.{alias.name}" for alias in node.names]
    else:
      continue
    if any(n == "musiclm_jax.jobs" or n.startswith("musiclm_jax.jobs.") for n in names):
      found.append(f"{path.name}:{node.lineno}")
  return found


def test_only_jobs_and_entry_points_import_jobs():
  package = pathlib.Path(musiclm_jax.__file__).parent
  outside = [
    path
    for path in sorted(package.rglob("*.py"))
    if path.relative_to(package).parts[0] not in ("jobs", "main")
  ]
  assert len(outside) > 50  # the whole package, not an empty glob
  assert [hit for path in outside for hit in _imports_of_jobs(path)] == []


def test_nothing_that_uses_a_trained_model_imports_its_job_or_trainer():
  assert _imported_after(_USERS, ("musiclm_jax.jobs", "musiclm_jax.training")) == []
  assert _imported_after(_BENCHMARKS, ("musiclm_jax.jobs",)) == []


def test_checkpoint_identity_is_the_latest_complete_step(tmp_path):
  config = CheckpointConfig(async_save=False, save_on_sigterm=False)
  with Checkpointer(tmp_path, config, metadata={"model": "mulan_rvq"}) as checkpointer:
    checkpointer.save(2, {"w": jnp.zeros(3)}, {}, force=True)
    checkpointer.save(6, {"w": jnp.ones(3)}, {}, force=True)
  (tmp_path / "9.orbax-checkpoint-tmp").mkdir()  # a step cut off mid-write is not listed
  identity = token_bundle.checkpoint_identity(str(tmp_path))
  committed = checkpoints.read_saved_step(tmp_path, step=6).committed_ns
  assert identity == {
    "dir": str(tmp_path),
    "step": 6,
    "model": "mulan_rvq",
    "committed_ns": committed,
  }
  assert committed > checkpoints.read_saved_step(tmp_path, step=2).committed_ns


def test_checkpoint_identity_of_a_missing_directory_says_so_and_creates_nothing(tmp_path):
  with pytest.raises(FileNotFoundError, match="No complete checkpoint in .*absent"):
    token_bundle.checkpoint_identity(str(tmp_path / "absent"))
  assert not (tmp_path / "absent").exists()
