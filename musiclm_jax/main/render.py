"""`musiclm-jax render --out_dir DIR --num_clips N --clip_seconds S --seed K [...]`.

Renders music21 corpus scores to captioned 24 kHz clips in MusicCaps layout (musiccaps.csv +
audio/{ytid}.wav), with no network: General-MIDI instruments through FluidSynth. See
`musiclm_jax.data.render.corpus.render_corpus`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from musiclm_jax.data.render import corpus, synth
from musiclm_jax.main import paths


def _positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
  return value


def _positive_float(text: str) -> float:
  value = float(text)
  if not value > 0:
    raise argparse.ArgumentTypeError(f"must be positive, got {text}")
  return value


def _fraction(text: str) -> float:
  value = float(text)
  if not 0 <= value < 1:
    raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
  return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """Parses the verb's flags (exits with status 2 on a bad flag, as argparse does)."""
  parser = argparse.ArgumentParser(
    prog="musiclm-jax render",
    description="Render music21 corpus scores to captioned audio clips (MusicCaps layout).",
    epilog="example: musiclm-jax render --out_dir=data/render --num_clips=200 --clip_seconds=10",
  )
  parser.add_argument("--out_dir", required=True, help="output folder")
  parser.add_argument("--num_clips", type=_positive_int, required=True)
  parser.add_argument("--clip_seconds", type=_positive_float, default=10.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--sample_rate", type=_positive_int, default=24_000)
  parser.add_argument("--num_workers", type=_positive_int, default=1)
  parser.add_argument("--soundfont", help="a .sf2 file (default: FluidR3_GM, else TimGM6mb)")
  parser.add_argument("--eval_fraction", type=_fraction, default=0.1, help="of scores")
  parser.add_argument("--group_size", type=_positive_int, default=2, help="renditions per passage")
  parser.add_argument("--max_passages_per_score", type=_positive_int, default=2)
  parser.add_argument("--spectrograms", action="store_true", help="PNGs of the first clips")
  parser.add_argument("--no_progress", action="store_true", help="no progress bar")
  return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
  """Runs the verb; returns the exit status (0 ok, 1 some clips failed, 2 cannot run)."""
  args = parse_args(argv)
  paths.check_output_dir(args.out_dir, "--out_dir")
  try:
    summary = corpus.render_corpus(
      args.out_dir,
      num_clips=args.num_clips,
      clip_seconds=args.clip_seconds,
      seed=args.seed,
      sample_rate=args.sample_rate,
      num_workers=args.num_workers,
      soundfont=args.soundfont,
      eval_fraction=args.eval_fraction,
      group_size=args.group_size,
      progress=not args.no_progress,
      max_passages_per_score=args.max_passages_per_score,
      spectrograms=args.spectrograms,
    )
  except (synth.RenderError, FileNotFoundError, ValueError) as e:
    print(f"musiclm-jax render: {e}", file=sys.stderr)
    return 2
  rate = summary.num_rendered * args.clip_seconds / max(summary.wall_seconds, 1e-9)
  print(
    f"{summary.num_clips} clips ({summary.audio_seconds:.0f} s of audio; {summary.num_rendered} "
    f"rendered, {summary.num_reused} kept) from {summary.num_scores} scores in "
    f"{summary.wall_seconds:.1f} s ({rate:.1f} audio-s/s); soundfont {summary.soundfont}"
  )
  print(f"csv: {summary.csv_path}\nreport: {summary.report_path}")
  if summary.skipped_scores:
    print(f"skipped scores: {summary.skipped_scores}")
  for failure in summary.failures:
    print(f"failed: {failure}", file=sys.stderr)
  if summary.num_clips < args.num_clips:
    print(f"only {summary.num_clips} of {args.num_clips} clips written", file=sys.stderr)
    return 1
  return 0
