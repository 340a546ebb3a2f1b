"""Gin paths resolve from any working directory, from a checkout and from an installed wheel."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from musiclm_jax.main import gin_utils

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = "gin/models/semantic/tiny.gin"
TRAIN_FILES = [TINY, "gin/runs/synthetic.gin", "gin/mesh/single_device.gin"]


def _write(path: Path, text: str) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def test_packaged_gin_dir_is_the_repository_gin_in_a_checkout():
  assert gin_utils.packaged_gin_dir() == REPO_ROOT / "gin"


def test_gin_paths_resolve_outside_the_repository(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert gin_utils.resolve_gin_file(TINY) == str(REPO_ROOT / TINY)
  # Paths relative to the gin directory itself resolve too.
  assert gin_utils.resolve_gin_file("models/semantic/tiny.gin") == str(REPO_ROOT / TINY)


def test_working_directory_then_search_paths_then_package(tmp_path, monkeypatch):
  cwd, extra = tmp_path / "cwd", tmp_path / "extra"
  local = _write(cwd / TINY, "# a local copy\n")
  searched = _write(extra / "gin/mesh/single_device.gin", "# from a search path\n")
  _write(extra / TINY, "# shadowed by the working directory\n")
  monkeypatch.chdir(cwd)
  assert gin_utils.resolve_gin_file(TINY, [str(extra)]) == str(local)
  assert gin_utils.resolve_gin_file("gin/mesh/single_device.gin", [str(extra)]) == str(searched)
  assert gin_utils.resolve_gin_file("gin/mesh/cpu8.gin", [str(extra)]) == str(
    REPO_ROOT / "gin/mesh/cpu8.gin"
  )


def test_missing_file_names_the_path_and_where_it_looked(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(gin_utils.GinConfigError) as error:
    gin_utils.parse(["gin/models/semantic/nope.gin"], [], [str(tmp_path / "extra")])
  message = str(error.value)
  assert "Unable to open file: gin/models/semantic/nope.gin" in message
  for root in (tmp_path, tmp_path / "extra", REPO_ROOT / "gin"):
    assert str(root) in message


def test_missing_include_names_the_path_and_where_it_looked(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  _write(tmp_path / "run.gin", "include 'gin/models/nope.gin'\n")
  with pytest.raises(gin_utils.GinConfigError) as error:
    gin_utils.parse(["run.gin"], [])
  assert "Unable to open file: gin/models/nope.gin. Searched:" in str(error.value)
  assert str(tmp_path) in str(error.value)


def test_parse_outside_the_repository_logs_no_path_errors(tmp_path, monkeypatch, caplog):
  """tiny.gin includes three more `gin/...` files; none may reach gin's resource reader."""
  monkeypatch.chdir(tmp_path)
  caplog.set_level(logging.INFO)
  gin_utils.parse(TRAIN_FILES, [f"MODEL_DIR = '{tmp_path}'"])
  assert gin_utils.macro("NUM_STEPS") > 0
  errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
  assert errors == []


def _install_non_editable(tmp_path: Path) -> Path:
  """`pip install .` (no deps, offline) of a copy of the sources into a target folder."""
  src, site = tmp_path / "src", tmp_path / "site"
  ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
  for name in ("musiclm_jax", "tasks", "gin"):
    shutil.copytree(REPO_ROOT / name, src / name, ignore=ignore)
  for name in ("setup.py", "pyproject.toml"):
    shutil.copy(REPO_ROOT / name, src / name)
  subprocess.run(
    [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    + ["--quiet", "--target", str(site), str(src)],
    check=True,
    timeout=300,
  )
  return site


@pytest.mark.slow
def test_non_editable_install_trains_from_another_directory(tmp_path):
  site = _install_non_editable(tmp_path)
  assert (site / "musiclm_jax/gin/models/semantic/tiny.gin").is_file()
  workdir = tmp_path / "elsewhere"
  workdir.mkdir()
  env = {**os.environ, "PYTHONPATH": str(site)}

  def python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
      [sys.executable, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )

  where = python("-c", "import musiclm_jax; print(musiclm_jax.__file__)")
  assert Path(where.stdout.strip()) == site / "musiclm_jax/__init__.py", where.stderr
  model_dir = tmp_path / "model"
  flags = [f"--gin_file={path}" for path in TRAIN_FILES]
  result = python(
    "-m", "musiclm_jax.main.cli", "train", *flags, f"--gin.MODEL_DIR='{model_dir}'",
    "--gin.NUM_STEPS=2",
  )  # fmt: skip
  output = result.stdout + result.stderr
  assert result.returncode == 0, output[-4000:]
  assert "Path not found" not in output
  assert (model_dir / "config.gin").is_file()
