"""`musiclm-jax bench SUBCOMMAND [flags]`: speed (and codec quality) figures for BENCHMARKS.md.

`musiclm-jax bench --help` lists the subcommands; `musiclm-jax bench SUBCOMMAND --help` shows
one's flags and an example. Each prints a markdown table and, with --out=FILE, writes the rows as
JSON. The subcommands live by topic: bench_lm.py (a stage LM), bench_pipeline.py (feeding the
stage LMs, text → music), bench_audio.py (render, SoundStream) and bench_tokens.py (w2v-BERT,
MuLan, the tokenizer bundle) and bench_music.py (`musiclm-jax evaluate`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from musiclm_jax.main import (
  bench_audio,
  bench_lm,
  bench_music,
  bench_pipeline,
  bench_tokens,
  gin_utils,
  paths,
)


def parser() -> argparse.ArgumentParser:
  """`musiclm-jax bench`'s parser: one subparser per subcommand, in the order of BENCHMARKS.md."""
  bench = argparse.ArgumentParser(
    prog="musiclm-jax bench",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="example:\n  musiclm-jax bench train --gin_file=gin/models/semantic/tiny.gin",
  )
  subparsers = bench.add_subparsers(dest="what", required=True, metavar="SUBCOMMAND")
  for module in (bench_lm, bench_pipeline, bench_audio, bench_tokens, bench_music):
    for add in module.SUBCOMMANDS:
      add(subparsers)
  return bench


def main(argv: Sequence[str]) -> int:
  gin_files, bindings, rest = gin_utils.split_gin_args(argv)
  args = parser().parse_args(rest)
  if args.out:
    paths.check_output_file(args.out, "--out")
  if args.parse_gin:  # the others parse per model size or stage, or take no gin
    gin_utils.parse(gin_files, bindings, args.gin_search_path)
  return args.run(args, gin_files, bindings)
