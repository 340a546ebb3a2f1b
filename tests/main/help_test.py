"""`--help` a new user can read: every verb shows an example launch command, the verbs that read
gin files show the gin flags, and `musiclm-jax --help` names every bench subcommand."""

from __future__ import annotations

import pytest

from musiclm_jax.main import bench, cli

GIN_VERBS = ["train", "infer", "generate", "compile", "tokenize"]
OTHER_VERBS = [
  "quickstart",
  "render",
  "build-data",
  "spectrogram",
  "evaluate",
  "codec",
  "import-weights",
]
BENCH = sorted(bench.parser()._subparsers._group_actions[0].choices)


def _help(capsys, argv: list[str]) -> str:
  with pytest.raises(SystemExit) as exit_info:
    cli.main([*argv, "--help"])
  assert exit_info.value.code == 0
  return capsys.readouterr().out


def _example(text: str) -> str:
  """The command after `example:`."""
  assert "example:" in text, text
  return text.split("example:", 1)[1].strip()


@pytest.mark.parametrize("argv", [[v] for v in GIN_VERBS] + [["bench", s] for s in BENCH])
def test_gin_verbs_help_shows_the_gin_flags_and_an_example(capsys, argv):
  text = _help(capsys, argv)
  for flag in ("--gin_file=FILE", "--gin.KEY=VALUE", "--gin_bindings", "--gin_search_path"):
    if argv[-1] not in ("render", "codec-quality", "evaluate"):  # bench subcommands without gin
      assert flag in text, (flag, text)
  assert _example(text).startswith(f"musiclm-jax {' '.join(argv)} ")


@pytest.mark.parametrize("verb", OTHER_VERBS)
def test_other_verbs_help_shows_an_example(capsys, verb):
  assert _example(_help(capsys, [verb])).startswith(f"musiclm-jax {verb} ")


def test_top_level_help_names_every_bench_subcommand(capsys):
  assert cli.main(["--help"]) == 0
  text = capsys.readouterr().out
  assert len(BENCH) == 12
  for name in BENCH:
    assert f" {name}" in text, name
  assert "exit codes" in text


def test_bench_help_lists_the_subcommands(capsys):
  text = _help(capsys, ["bench"])
  for name in BENCH:
    assert name in text


@pytest.mark.parametrize(
  "argv",
  [
    ["bench"],
    ["bench", "codec-quality"],  # --model_dir is required
    ["bench", "render", "--context_lengths=8"],  # a decode flag
    ["bench", "train", "--size=tiny"],  # a pipeline flag
  ],
  ids=["no_subcommand", "codec_quality_no_model_dir", "render_decode_flag", "train_size"],
)
def test_bench_refuses_a_missing_or_foreign_flag(capsys, argv):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 2
  assert "usage: musiclm-jax bench" in capsys.readouterr().err
