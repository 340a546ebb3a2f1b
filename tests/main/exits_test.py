"""Honest exits: an unusable output path or a typo'd macro override exits 2 with one line naming
it, before anything is loaded or built (the model dirs of these commands do not even exist)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import gin
from musiclm_jax.main import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
# Stage LM and tokenizer dirs that do not exist: loading them would fail with another message.
NO_MODELS = [
  "--gin_file=gin/runs/infer.gin",
  *(f"--gin.{n}_DIR='/nonexistent/{n.lower()}'" for n in ("TOKENIZERS", "SEMANTIC", "COARSE")),
  "--gin.FINE_DIR='/nonexistent/fine'",
]
TRAIN = ["--gin_file=gin/models/semantic/tiny.gin", "--gin_file=gin/runs/synthetic.gin"]


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)
  yield
  gin.clear_config()


@pytest.fixture
def a_file(tmp_path) -> Path:
  path = tmp_path / "a_file"
  path.write_text("not a folder\n")
  return path


def _run(capsys, argv: list[str]) -> tuple[int, str, float]:
  """(exit code, stderr, seconds) of `musiclm-jax ARGV` in-process."""
  start = time.perf_counter()
  code = cli.main(argv)
  return code, capsys.readouterr().err, time.perf_counter() - start


def _assert_one_line(err: str, *named: str) -> None:
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  for text in named:
    assert text in lines[0], (text, err)


def _prompts(tmp_path: Path) -> str:
  path = tmp_path / "prompts.jsonl"
  path.write_text('{"id": "a", "text": "a calm violin", "seconds": 2}\n')
  return f"--prompts={path}"


@pytest.mark.parametrize("under", ["", "sub"], ids=["is_a_file", "parent_is_a_file"])
def test_infer_out_dir_that_is_a_file_exits_2_before_loading(tmp_path, capsys, a_file, under):
  out_dir = a_file / under if under else a_file
  argv = ["infer", *NO_MODELS, _prompts(tmp_path), f"--out_dir={out_dir}"]
  code, err, seconds = _run(capsys, argv)
  assert code == 2
  _assert_one_line(err, "musiclm-jax infer:", f"--out_dir {out_dir}:", "is a file")
  assert "nonexistent" not in err and seconds < 10


def test_train_model_dir_that_is_a_file_exits_2(capsys, a_file):
  code, err, _ = _run(capsys, ["train", *TRAIN, f"--gin.MODEL_DIR='{a_file}'"])
  assert code == 2
  _assert_one_line(err, "musiclm-jax train:", "MODEL_DIR", str(a_file), "is a file")
  assert a_file.read_text() == "not a folder\n"


def test_build_data_dir_that_is_a_file_exits_2(tmp_path, capsys, a_file):
  argv = ["build-data", "--dataset=audio_folder", f"--manual_dir={tmp_path}"]
  code, err, _ = _run(capsys, [*argv, f"--data_dir={a_file}"])
  assert code == 2
  _assert_one_line(err, "musiclm-jax build-data:", "--data_dir", str(a_file), "is a file")


@pytest.mark.parametrize(
  "argv, flag",
  [
    (["generate", "a tune", *NO_MODELS, "--out={}/out.wav"], "--out"),
    (["render", "--num_clips=1", "--out_dir={}/render"], "--out_dir"),
    (["spectrogram", "x.wav", "--out_dir={}/png"], "--out_dir"),
    (["quickstart", "--out_dir={}/qs"], "--out_dir"),
    (["bench", "render", "--num_clips=1", "--out={}/bench.json"], "--out"),
  ],
  ids=["generate", "render", "spectrogram", "quickstart", "bench"],
)
def test_output_under_a_file_exits_2(capsys, a_file, argv, flag):
  code, err, seconds = _run(capsys, [arg.replace("{}", str(a_file)) for arg in argv])
  assert code == 2
  _assert_one_line(err, f"{flag} {a_file}/", f"{a_file} is a file")
  assert seconds < 10


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_unwritable_out_dir_exits_2(tmp_path, capsys):
  locked = tmp_path / "locked"
  locked.mkdir(mode=0o500)
  argv = ["infer", *NO_MODELS, _prompts(tmp_path), f"--out_dir={locked}/out"]
  code, err, _ = _run(capsys, argv)
  assert code == 2
  _assert_one_line(err, "--out_dir", "cannot write in", str(locked))


@pytest.mark.parametrize(
  "override",
  ["--gin.NUM_STEPZ=5", "--gin_bindings=NUM_STEPZ = 5"],
  ids=["gin_dot", "gin_bindings"],
)
def test_typo_in_a_macro_override_exits_2_naming_the_closest(tmp_path, capsys, override):
  argv = ["train", *TRAIN, f"--gin.MODEL_DIR='{tmp_path}/run'", override]
  code, err, seconds = _run(capsys, argv)
  assert code == 2
  _assert_one_line(err, "musiclm-jax train:", "NUM_STEPZ", "did you mean NUM_STEPS")
  assert not (tmp_path / "run").exists() and seconds < 10


def test_typo_in_an_infer_macro_exits_2_before_loading(tmp_path, capsys):
  argv = ["infer", *NO_MODELS, "--gin.BATCH_SIZ=2", _prompts(tmp_path), f"--out_dir={tmp_path}"]
  code, err, _ = _run(capsys, argv)
  assert code == 2
  _assert_one_line(err, "BATCH_SIZ", "BATCH_SIZE")
