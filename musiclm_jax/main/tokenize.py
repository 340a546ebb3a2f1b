"""`musiclm-jax tokenize`: seqio's cache job for the tokens tasks, on Apache Beam.

  musiclm-jax tokenize --gin_file=gin/runs/tokenize_rendered.gin \
    --gin.TOKENIZERS_DIR="'runs/tokenizers'" --gin.DATA_DIR="'data/tfds'" \
    --tasks=musiclm_tokens_rendered_music --output_cache_dir=data/token_cache \
    [--pipeline_options=--runner=DirectRunner] [--splits=train,eval] [--max_shards=N] [--overwrite]

The gin file defines TOKENS_TASKS (registered tokens tasks, name → spec); `--tasks` picks some by
regular expression (seqio_cache_tasks' convention). Re-running skips finished shards.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence

from musiclm_jax.main import gin_utils, paths

TOKENIZE_EXAMPLE = """musiclm-jax tokenize --gin_file=gin/runs/tokenize_rendered.gin \\
    --gin.TOKENIZERS_DIR="'runs/tokenizers'" --gin.DATA_DIR="'data/tfds'" \\
    --tasks=musiclm_tokens_rendered_music --output_cache_dir=data/token_cache"""


def _selected(specs: dict, patterns: Sequence[str]) -> dict:
  """Specs whose name fully matches one of the patterns (all of them when none is given)."""
  if not patterns:
    return specs
  chosen = {n: s for n, s in specs.items() if any(re.fullmatch(p, n) for p in patterns)}
  if not chosen:
    raise SystemExit(f"--tasks={','.join(patterns)} matches none of {sorted(specs)}")
  return chosen


def _summary(name: str, report: dict) -> str:
  lines = [f"{name}:"]
  for split, stats in report.items():
    line = (
      f"  {split}: {stats['finished_shards']}/{stats['num_shards']} shards, "
      f"{stats['examples']} clips, {stats['audio_seconds']:.1f} audio-s"
    )
    usage = stats["code_usage"]
    if usage:
      line += (
        "; codes used: "
        + ", ".join(
          f"{family} {usage[family]['used_codes'][0]}"
          for family in ("semantic", "acoustic", "mulan")
        )
        + " (first level)"
      )
    lines.append(line)
  return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
  gin_files, bindings, rest = gin_utils.split_gin_args(argv)
  parser = argparse.ArgumentParser(prog="musiclm-jax tokenize", description=__doc__)
  parser.add_argument("--tasks", default="", help="comma-separated regexes of tokens task names")
  parser.add_argument("--output_cache_dir", required=True)
  parser.add_argument("--splits", default="", help="comma-separated splits (default: all)")
  parser.add_argument(
    "--pipeline_options", default="--runner=DirectRunner", help="comma-separated Beam flags"
  )
  parser.add_argument("--max_shards", type=int, default=None, help="stop after N shards")
  parser.add_argument(
    "--overwrite", action="store_true", help="replace a cache of other tokenizers"
  )
  gin_utils.add_gin_flags(parser, TOKENIZE_EXAMPLE)
  args = parser.parse_args(rest)
  paths.check_output_dir(args.output_cache_dir, "--output_cache_dir")
  gin_utils.parse(gin_files, bindings, args.gin_search_path)

  from musiclm_jax.data import token_cache

  specs = _selected(gin_utils.macro("TOKENS_TASKS"), [p for p in args.tasks.split(",") if p])
  for name, spec in specs.items():
    report = token_cache.cache_tokens_task(
      spec,
      args.output_cache_dir,
      splits=[s for s in args.splits.split(",") if s] or None,
      pipeline_options=[o for o in args.pipeline_options.split(",") if o],
      overwrite=args.overwrite,
      max_shards=args.max_shards,
    )
    print(_summary(name, report))
    print(json.dumps({name: report}))
  return 0
