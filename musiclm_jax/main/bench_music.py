"""`musiclm-jax bench evaluate`: the time `musiclm-jax evaluate` takes over rendered clips."""

from __future__ import annotations

import argparse
import os

from musiclm_jax.main.bench_report import print_rows, subcommand, write_json


def _evaluate(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  from musiclm_jax.benchmarks.evaluation import bench_evaluate
  from musiclm_jax.main.evaluate import format_report

  print(
    f"evaluate: {args.num_clips} generated + {args.num_clips} reference clips × "
    f"{args.seconds:g} s on {os.cpu_count()} CPU cores"
  )
  rows, report = bench_evaluate(args.num_clips, args.seconds)
  print_rows(rows)
  print("\nThe report (one rendered set against another, names paired):\n")
  print(format_report(report))
  write_json(args.out, f"{os.cpu_count()} CPU cores", rows)
  return 0


def add_evaluate(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "evaluate",
    "`musiclm-jax evaluate` over rendered clips: seconds per model and for the whole report",
    "musiclm-jax bench evaluate --num_clips=100 --seconds=10",
    gin=False,
  )
  p.add_argument("--num_clips", type=int, default=100, help="clips in each of the two folders")
  p.add_argument("--seconds", type=float, default=10.0, help="seconds per clip")
  p.set_defaults(run=_evaluate, parse_gin=False)


SUBCOMMANDS = (add_evaluate,)
