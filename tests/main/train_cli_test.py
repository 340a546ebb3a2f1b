"""Tests of the `musiclm-jax` command line: verbs, help, and errors in gin files and bindings.

Errors are provoked in-process through `cli.main`, which returns the exit code; none of these
commands gets as far as building a model.
"""

import subprocess
import sys
from pathlib import Path

import pytest

import gin
from musiclm_jax.main import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
SEMANTIC = "--gin_file=gin/models/semantic/tiny.gin"
SYNTHETIC = "--gin_file=gin/runs/synthetic.gin"


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  # Gin file paths in commands are relative to the repository, as in the README.
  monkeypatch.chdir(REPO_ROOT)
  yield
  gin.clear_config()


def _train(capsys, *args: str) -> tuple[int, str]:
  """Runs `musiclm-jax train ARGS` in-process; returns (exit code, stderr)."""
  code = cli.main(["train", *args])
  return code, capsys.readouterr().err


@pytest.mark.parametrize(
  "binding, named",
  [
    ("--gin.train_job.train.bogus_param=3", ["bogus_param", "train_job.train"]),
    ("--gin.nothing.Here.value=3", ["nothing.Here"]),
    ("--gin.NUM_STEPS=3)", ["NUM_STEPS = 3)"]),
    ("--gin.NUM_STEPS='forty", ["NUM_STEPS = 'forty"]),
    ("--gin.NUM_STEPS", ["--gin.NUM_STEPS", "expected --gin.KEY=VALUE"]),
    pytest.param(
      "--gin.NUM_STEPS=(3",
      ["NUM_STEPS = (3"],
      id="unclosed-bracket",
    ),
  ],
)
def test_bad_binding_exits_2_naming_it(capsys, tmp_path, binding, named):
  code, err = _train(capsys, SEMANTIC, SYNTHETIC, f"--gin.MODEL_DIR='{tmp_path}'", binding)
  assert code == 2
  assert err.startswith("musiclm-jax train: ")
  for text in named:
    assert text in err
  assert not (tmp_path / "config.gin").exists()


def test_missing_gin_file_exits_2_naming_it(capsys, tmp_path):
  code, err = _train(
    capsys, "--gin_file=gin/models/semantic/nope.gin", SYNTHETIC, f"--gin.MODEL_DIR='{tmp_path}'"
  )
  assert code == 2
  assert "Unable to open file: gin/models/semantic/nope.gin" in err


def test_no_gin_file_exits_2(capsys, tmp_path):
  code, err = _train(capsys, f"--gin.MODEL_DIR='{tmp_path}'")
  assert code == 2
  assert "No --gin_file given" in err


def test_missing_model_dir_exits_2_naming_it(capsys):
  code, err = _train(capsys, SEMANTIC, SYNTHETIC)
  assert code == 2
  assert "MODEL_DIR" in err


def test_unknown_flag_exits_2(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["train", SEMANTIC, SYNTHETIC, "--bogus"])
  assert exit_info.value.code == 2
  assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"], []])
def test_help_lists_the_verbs(capsys, argv):
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: musiclm-jax VERB")
  for verb in cli.VERBS:
    assert f"\n  {verb} " in out


def test_train_help_exits_0(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["train", "--help"])
  assert exit_info.value.code == 0
  assert "usage: musiclm-jax train" in capsys.readouterr().out


def test_unknown_verb_exits_2(capsys):
  assert cli.main(["trian"]) == 2
  err = capsys.readouterr().err
  assert "musiclm-jax: unknown verb 'trian'" in err
  assert "usage: musiclm-jax VERB" in err


def test_console_script_returns_the_exit_code():
  script = Path(sys.executable).parent / "musiclm-jax"
  result = subprocess.run(
    [str(script), "trian"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 2
  assert "unknown verb 'trian'" in result.stderr
