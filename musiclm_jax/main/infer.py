"""`musiclm-jax infer`: offline batch decoding of a prompts file, sharded across hosts, resumable.

  musiclm-jax infer --gin_file=gin/runs/infer.gin --gin.TOKENIZERS_DIR="'runs/tokenizers'" \
    --gin.SEMANTIC_DIR="'runs/semantic'" --gin.COARSE_DIR="'runs/coarse'" \
    --gin.FINE_DIR="'runs/fine'" --prompts=prompts.jsonl --out_dir=out/ \
    [--shard_id=I --num_shards=N] [--batch_size=B] [multi-host flags]

On several hosts (`launch/local_multiprocess.sh`, `launch/tpu_pod.sh`, `launch/gpu_slurm.sbatch`)
every process runs the same command; each decodes its share of the prompts (a hash of the id) on
its own devices. Writes out/<id>.wav and the manifest (one line per finished prompt); bad prompt
lines and failed prompts go to the errors file. Re-running finishes what a killed run left. The prompt format and
the file names are in `musiclm_jax/decoding/batch_inference.py`. Exits 1 when some line or prompt
was not generated (see the errors file), 2 on a configuration error or an unusable path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gin
from musiclm_jax.main import gin_utils, paths
from musiclm_jax.runtime import distributed

if TYPE_CHECKING:
  from musiclm_jax.decoding.pipeline import MusicLMPipeline

# A host that has decoded its share of the prompts waits this long at exit for the others.
SHUTDOWN_TIMEOUT_S = 24 * 3600

INFER_EXAMPLE = """musiclm-jax infer --gin_file=gin/runs/infer.gin \\
    --gin.TOKENIZERS_DIR="'runs/tokenizers'" --gin.SEMANTIC_DIR="'runs/semantic'" \\
    --gin.COARSE_DIR="'runs/coarse'" --gin.FINE_DIR="'runs/fine'" \\
    --prompts=prompts.jsonl --out_dir=out/"""

STAGE_DIRS = {"semantic": "SEMANTIC_DIR", "coarse": "COARSE_DIR", "fine": "FINE_DIR"}


class ModelsError(ValueError):
  """The run file names stage LMs or tokenizers that are missing or do not fit together."""


def load_from_gin() -> tuple[MusicLMPipeline, dict[str, Any]]:
  """(pipeline, manifest info) from the parsed run file's BUNDLE, *_DIR and PIPELINE_CONFIG.

  Raises:
    ModelsError: a checkpoint is missing, or the stage LMs were trained on other tokens.
  """
  from musiclm_jax.decoding import batch_inference

  dirs = {stage: gin_utils.macro(name) for stage, name in STAGE_DIRS.items()}
  try:
    return batch_inference.load_models(
      gin_utils.macro("BUNDLE"), dirs, gin_utils.macro("PIPELINE_CONFIG")
    )
  except (FileNotFoundError, ValueError) as e:
    raise ModelsError(f"{e}\n(stage LMs: {dirs})") from e


def _shard(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[int, int]:
  """--shard_id/--num_shards, or this process's index/count in a multi-host JAX job."""
  if (args.shard_id is None) != (args.num_shards is None):
    parser.error("give both --shard_id and --num_shards, or neither")
  if args.shard_id is None:
    import jax

    return jax.process_index(), jax.process_count()
  if not 0 <= args.shard_id < args.num_shards:
    parser.error(f"need 0 <= --shard_id < --num_shards, got {args.shard_id}, {args.num_shards}")
  return args.shard_id, args.num_shards


def main(argv: Sequence[str]) -> int:
  gin_files, bindings, rest = gin_utils.split_gin_args(argv)
  parser = argparse.ArgumentParser(prog="musiclm-jax infer", description=__doc__)
  parser.add_argument(
    "--prompts", required=True, help="JSONL: id, text, seconds[, seed][, segments]"
  )
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--shard_id", type=int, default=None, help="default: jax.process_index()")
  parser.add_argument("--num_shards", type=int, default=None, help="default: jax.process_count()")
  parser.add_argument("--batch_size", type=int, default=None, help="default: gin BATCH_SIZE")
  gin_utils.add_gin_flags(parser, INFER_EXAMPLE)
  distributed.add_flags(parser)
  args = parser.parse_args(rest)
  if not os.path.isfile(args.prompts):
    print(f"musiclm-jax infer: no prompts file {args.prompts}", file=sys.stderr)
    return 2
  paths.check_output_dir(args.out_dir, "--out_dir")  # before any model loads
  try:
    distributed_config = dataclasses.replace(
      distributed.config_from_flags(args), shutdown_timeout_s=SHUTDOWN_TIMEOUT_S
    )
  except ValueError as e:
    parser.error(str(e))
  distributed.initialize(distributed_config)
  gin_utils.parse(gin_files, bindings, args.gin_search_path)
  distributed.check_agreement(
    "gin configuration and prompts", gin.config_str(), args.prompts, args.out_dir
  )
  shard_id, num_shards = _shard(args, parser)
  batch_size = args.batch_size or gin_utils.macro("BATCH_SIZE", default=8)
  if batch_size < 1:
    parser.error(f"the batch size must be >= 1, got {batch_size}")

  from musiclm_jax.decoding import batch_inference

  try:
    pipeline, info = load_from_gin()
  except ModelsError as e:
    print(f"musiclm-jax infer: {e}", file=sys.stderr)
    return 2
  suffix = "" if num_shards == 1 else f".{shard_id:05d}-of-{num_shards:05d}"
  gin_utils.write_config(args.out_dir, f"config{suffix}.gin")
  report = batch_inference.run_inference(
    pipeline,
    args.prompts,
    args.out_dir,
    shard_id=shard_id,
    num_shards=num_shards,
    batch_size=batch_size,
    sample_rate=pipeline.tokenizers.sample_rate,
    run_info=info,
  )
  print(report.summary())
  print(json.dumps(dataclasses.asdict(report)))
  return 0 if report.complete else 1
