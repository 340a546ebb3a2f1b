"""`musiclm-jax build-data --dataset=NAME --manual_dir=DIR --data_dir=DIR`: TFDS audio datasets.

  musiclm-jax build-data --dataset=musiccaps --manual_dir=~/musiccaps --data_dir=~/tfds
  musiclm-jax build-data --dataset=audio_folder --manual_dir=my_clips --data_dir=data \
    --sample_rate=16000 --max_seconds=10
  musiclm-jax build-data --dataset=rendered_music --manual_dir=render --data_dir=data \
    --render_num_clips=200 --render_clip_seconds=10 --beam_runner=DirectRunner \
    --beam_option=--direct_num_workers=2

Then `import musiclm_jax.data.builders; tfds.load("NAME/CONFIG", data_dir=DIR, split="train")`.
Bad inputs are skipped and counted in `<dataset dir>/skip_report.json`; its summary is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from musiclm_jax.data.builders import build
from musiclm_jax.data.builders.base import BuildError
from musiclm_jax.main import paths

# Flags passed on as overrides only when given, so the registered config stays the default.
_OVERRIDE_FLAGS = (
  "sample_rate",
  "max_seconds",
  "min_seconds",
  "normalization",
  "manifest",
  "render_num_clips",
  "render_clip_seconds",
  "render_seed",
  "render_num_workers",
  "soundfont",
)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="musiclm-jax build-data",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="example:\n  musiclm-jax build-data --dataset=musiccaps --manual_dir=~/musiccaps "
    "--data_dir=~/tfds",
  )
  parser.add_argument("--dataset", required=True, choices=sorted(build.BUILDERS))
  parser.add_argument("--manual_dir", required=True, help="the user's audio and captions")
  parser.add_argument("--data_dir", required=True, help="the TFDS data dir to write")
  parser.add_argument("--config", help="config name (default: 24khz, or named by the overrides)")
  parser.add_argument("--sample_rate", type=int, help="Hz (default 24000)")
  parser.add_argument("--max_seconds", type=float, help="cut clips to this (default 30)")
  parser.add_argument("--min_seconds", type=float, help="skip shorter clips (default 0.5)")
  parser.add_argument("--normalization", choices=["none", "peak", "loudness"])
  parser.add_argument("--manifest", help="the CSV/JSONL file name in manual_dir")
  parser.add_argument("--beam_runner", help="e.g. DirectRunner: build with Apache Beam")
  parser.add_argument(
    "--beam_option", action="append", default=[], help="a Beam pipeline flag (repeatable)"
  )
  parser.add_argument("--render_num_clips", type=int, help="rendered_music: render if absent")
  parser.add_argument("--render_clip_seconds", type=float, help="rendered_music")
  parser.add_argument("--render_seed", type=int, help="rendered_music")
  parser.add_argument("--render_num_workers", type=int, help="rendered_music")
  parser.add_argument("--soundfont", help="rendered_music: a .sf2 file for the render")
  parser.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
  return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
  return {k: getattr(args, k) for k in _OVERRIDE_FLAGS if getattr(args, k) is not None}


def _print_result(result: build.BuildResult) -> None:
  state = "already built" if result.reused else "built"
  print(f"build-data: {result.tfds_name} {result.version} {state} at {result.dataset_dir}")
  for split, count in result.splits.items():
    print(f"  {split}: {count} examples")
  print(f"skip report: {result.report.summary_line()} ({result.report_path})")
  for what, name in result.report.files.items():  # e.g. every missing clip, to download
    print(f"{what.replace('_', ' ')}: {os.path.join(os.path.dirname(result.report_path), name)}")
  print(
    f'load: import musiclm_jax.data.builders; tfds.load("{result.tfds_name}", '
    f'data_dir="{result.data_dir}", split="{next(iter(result.splits), "train")}")'
  )


def main(argv: Sequence[str]) -> int:
  args = _parser().parse_args(list(argv))
  paths.check_output_dir(args.data_dir, "--data_dir")
  try:
    result = build.build_dataset(
      args.dataset,
      data_dir=args.data_dir,
      manual_dir=args.manual_dir,
      config=args.config,
      beam_runner=args.beam_runner,
      beam_options=args.beam_option or None,
      overrides=_overrides(args),
      overwrite=args.overwrite,
    )
  except BuildError as e:
    print(f"musiclm-jax build-data: {e}", file=sys.stderr)
    if e.report is not None:
      print(f"skip report: {e.report.summary_line()}", file=sys.stderr)
      for reason, items in e.report.to_dict()["examples"].items():
        for item in items[:3]:
          print(f"  {reason}: {item['where']}: {item['detail']}", file=sys.stderr)
    return 2
  _print_result(result)
  return 0
