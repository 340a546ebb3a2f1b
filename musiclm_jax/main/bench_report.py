"""What the `musiclm-jax bench` subcommands share: their common flags and how results are shown."""

from __future__ import annotations

import argparse
import json
from typing import Any

from musiclm_jax.main import gin_utils


def ints(text: str) -> list[int]:
  """'1,8' -> [1, 8]."""
  return [int(x) for x in text.split(",") if x]


# Flags several subcommands take; a subcommand may change the default or the help.
SHARED_FLAGS: dict[str, dict[str, Any]] = {
  "batch_sizes": {"type": ints, "default": [1, 8], "help": "batch sizes timed, comma-separated"},
  "repeats": {"type": int, "default": 3, "help": "timed runs (the median is reported)"},
  "seconds": {"type": float, "default": 10.0, "help": "seconds of audio per example"},
  "num_clusters": {"type": int, "help": "k-means size (default 1024; tiny: 32)"},
  "size": {
    "choices": ["tiny", "base", "paper"],
    "default": "base",
    "help": "the model size: gin/models/<model>/<size>.gin",
  },
}


def subcommand(
  subparsers: argparse._SubParsersAction, name: str, help_text: str, example: str, gin: bool
) -> argparse.ArgumentParser:
  """A subcommand's parser with --out/--json, and its example (and the gin flags) in --help.

  Args:
    subparsers: `musiclm-jax bench`'s subparsers.
    name: the subcommand, e.g. 'codec-train'.
    help_text: one line for `musiclm-jax bench --help`.
    example: a launch command, shown by `musiclm-jax bench NAME --help`.
    gin: the subcommand reads gin files (adds --gin_search_path and the gin flags' help).
  """
  parser = subparsers.add_parser(name, help=help_text, description=help_text)
  parser.add_argument("--out", "--json", help="write the results as JSON here")
  if gin:
    gin_utils.add_gin_flags(parser, example)
  else:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = f"example:\n  {example}"
  return parser


def add_shared(parser: argparse.ArgumentParser, *names: str, **overrides: dict[str, Any]) -> None:
  """Adds SHARED_FLAGS `names`; `overrides[name]` replaces parts of a flag's spec."""
  for name in names:
    parser.add_argument(f"--{name}", **{**SHARED_FLAGS[name], **overrides.get(name, {})})


def print_rows(rows: list[dict]) -> None:
  """A markdown table of `rows` (floats with one decimal)."""
  keys = list(rows[0])
  print("| " + " | ".join(keys) + " |")
  print("|" + "---|" * len(keys))
  for row in rows:
    cells = [
      f"{row.get(k, float('nan')):,.1f}" if isinstance(row.get(k), float) else str(row.get(k, ""))
      for k in keys
    ]
    print("| " + " | ".join(cells) + " |")


def print_rows_3g(rows: list[dict]) -> None:
  """`print_rows` with three significant digits (real-time factors are often < 0.1)."""
  print_rows([{k: f"{v:.3g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])


def write_json(path: str | None, device: str, rows: list[dict]) -> None:
  """Writes {'device', 'rows'} to `path` if given; full floats."""
  if path:
    with open(path, "w") as f:
      json.dump({"device": device, "rows": rows}, f, indent=2)
