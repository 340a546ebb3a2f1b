"""The Makefile's `musiclm-jax` commands work from a clean clone: every file they name exists and
every flag parses (running them is `make bench`'s job; BENCHMARKS.md has the figures)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from musiclm_jax.main import bench, gin_utils

REPO_ROOT = Path(__file__).resolve().parents[2]


def _commands() -> list[list[str]]:
  """The argv after `musiclm-jax` of each Makefile recipe line that runs it."""
  text = (REPO_ROOT / "Makefile").read_text().replace("\\\n", " ")
  return [shlex.split(line) for line in re.findall(r"\$\(BIN\)/musiclm-jax (.*)", text)]


def test_the_makefile_runs_bench_train_and_decode():
  assert [argv[:2] for argv in _commands() if argv[0] == "bench"] == [
    ["bench", "train"],
    ["bench", "decode"],
  ]


@pytest.mark.parametrize("argv", [a for a in _commands() if a[0] == "bench"], ids=lambda a: a[1])
def test_bench_commands_name_existing_files_and_known_flags(argv):
  files, bindings, rest = gin_utils.split_gin_args(argv[1:])
  for path in files:
    assert (REPO_ROOT / path).is_file(), path
  assert not bindings
  args = bench.parser().parse_args(rest)  # exits 2 on an unknown flag
  assert args.what == argv[1]
