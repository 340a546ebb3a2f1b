"""`musiclm-jax evaluate`: scores a folder of generated music against held-out clips.

    musiclm-jax evaluate --generated_dir=G --reference_dir=R [--prompts=P.jsonl]
      [--tokenizers_dir=T] [--melody_dir=M] [--reference_split=eval] --out=report.json

Prints a table (each metric beside its scale: the reference's two halves, white noise, a shuffled
pairing; for the instrument AUC, whose shuffled mean is 0.5, the 95th percentile over shuffled
pairings) and writes the report JSON (`musiclm_jax/evaluation/music_report.py` says what each key
means). Files that cannot be scored are listed in the report's `skipped` with their reason; a
folder without one usable clip exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from musiclm_jax.main import paths

# (report key, label, which way is better) in table order.
ROWS = (
  ("fad_musicnn", "FAD_musicnn", "lower"),
  ("kld_musicnn", "KLD_musicnn of same-named pairs", "lower"),
  ("kld_musicnn_sets", "KLD_musicnn of the sets' mean tags", "lower"),
  ("chroma_cosine", "chroma cosine vs reference", "higher"),
  ("chroma_correlation", "chroma correlation vs reference", "higher"),
  ("chroma_cosine_melody", "chroma cosine vs melody", "higher"),
  ("chroma_correlation_melody", "chroma correlation vs melody", "higher"),
  ("note_f1", "note F1 vs MIDI (basic-pitch)", "higher"),
  ("mcc", "MCC (MuLan)", "higher"),
  ("instrument_auc", "instrument AUC (musicnn tags)", "higher"),
)
SCALES = ("reference_halves", "white_noise", "shuffled_pairing")
STATISTIC_ROWS = (
  ("chroma_change_per_s", "chroma change per s"),
  ("onset_rate_per_s", "onsets per s"),
  ("tonal_fraction", "tonal fraction"),
)


def _fmt(value: Any) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "—"
  return f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def format_report(report: Mapping[str, Any]) -> str:
  """The report as markdown tables: metrics beside their scales, then the statistics."""
  scale = report.get("scale", {})
  rows = []
  for key, label, better in ROWS:
    if key not in report or (key == "kld_musicnn" and not report.get("num_paired")):
      continue  # without pairs kld_musicnn is the sets' row
    chance = {
      "mcc": report.get("mcc_chance"),
      # the AUC's chance mean is 0.5; its spread over shuffled pairings is the bar to clear
      "instrument_auc": report.get("instrument_auc_shuffled_p95"),
    }.get(key, scale.get("shuffled_pairing", {}).get(key))
    values = [scale.get(s, {}).get(key) for s in SCALES[:2]] + [chance]
    rows.append([f"{label} ({better} is better)", _fmt(report[key]), *map(_fmt, values)])
  metrics = _table(["metric", "generated", "reference halves", "white noise", "shuffled"], rows)
  stats = report.get("statistics", {})
  noise = scale.get("white_noise", {})
  stat_rows = [
    [label, _fmt(stats.get("generated", {}).get(key)), _fmt(stats.get("reference", {}).get(key)),
     _fmt(noise.get(key))]
    for key, label in STATISTIC_ROWS
  ]  # fmt: skip
  statistics = _table(["statistic", "generated", "reference", "white noise"], stat_rows)
  counts = (
    f"{report['num_generated']} generated, {report['num_reference']} reference, "
    f"{report['num_paired']} paired by name, {len(report.get('skipped', []))} skipped"
  )
  return "\n\n".join([counts, metrics, statistics])


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="musiclm-jax evaluate",
    description="FAD_musicnn, KLD, chroma, note F1, MCC and instrument adherence of generated "
    "music against reference clips, each beside its scale.",
    epilog="example: musiclm-jax evaluate --generated_dir=runs/quickstart/music "
    "--reference_dir=runs/quickstart/data/rendered --reference_split=eval --prompts=runs/quickstart/prompts.jsonl "
    "--tokenizers_dir=runs/quickstart/tokenizers --out=runs/quickstart/evaluation.json",
  )
  parser.add_argument("--generated_dir", required=True, help="folder of generated clips")
  parser.add_argument("--reference_dir", required=True, help="folder of reference clips (+ .mid)")
  parser.add_argument(
    "--reference_split",
    help="the reference is a rendered corpus (musiccaps.csv + audio/): read this split, e.g. eval",
  )
  parser.add_argument("--prompts", help="the prompts JSONL the clips were generated from")
  parser.add_argument("--tokenizers_dir", help="tokenizer bundle whose MuLan scores MCC")
  parser.add_argument("--melody_dir", help="melody prompts (same names as the generated clips)")
  parser.add_argument("--out", required=True, help="the report JSON to write")
  parser.add_argument("--max_seconds", type=float, default=30.0, help="clips are cut here")
  return parser


def main(argv: Sequence[str]) -> int:
  args = _parser().parse_args(argv)
  from musiclm_jax.evaluation.clip_folders import EmptyFolderError
  from musiclm_jax.evaluation.music_report import EvaluationSettings, evaluate_folders
  from musiclm_jax.runtime.atomic import atomic_write_json

  for flag in ("generated_dir", "reference_dir", "melody_dir", "tokenizers_dir"):
    if getattr(args, flag) is not None:
      paths.check_input_dir(getattr(args, flag), f"--{flag}")
  if args.prompts is not None:
    paths.check_input_file(args.prompts, "--prompts")
  paths.check_output_file(args.out, "--out")
  try:
    report = evaluate_folders(
      args.generated_dir,
      args.reference_dir,
      prompts_path=args.prompts,
      tokenizers_dir=args.tokenizers_dir,
      melody_dir=args.melody_dir,
      reference_split=args.reference_split,
      settings=EvaluationSettings(max_seconds=args.max_seconds),
      log=lambda message: print(f"evaluate: {message}", file=sys.stderr),
    )
  except EmptyFolderError as e:
    print(f"musiclm-jax evaluate: {e}", file=sys.stderr)
    return 2
  atomic_write_json(args.out, report)
  print(format_report(report))
  for skipped in report["skipped"]:
    print(f"skipped {skipped['path']}: {skipped['reason']}: {skipped['detail']}", file=sys.stderr)
  print(f"report: {args.out}")
  return 0


def read_report(path: str) -> dict[str, Any]:
  with open(path) as f:
    return json.load(f)
