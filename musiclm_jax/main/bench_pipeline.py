"""`musiclm-jax bench input-pipeline|pipeline`: feeding the stage LMs, and text → music."""

from __future__ import annotations

import argparse
import os
import tempfile

import jax

from musiclm_jax import partitioning
from musiclm_jax.main import gin_utils
from musiclm_jax.main.bench_report import add_shared, print_rows_3g, subcommand, write_json
from musiclm_jax.training import optimizers


def _device() -> str:
  return jax.devices()[0].device_kind


def _input_pipeline(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  from musiclm_jax.benchmarks import tokens as token_benchmarks

  print(
    f"input-pipeline: {_device()} × {jax.device_count()}, {os.cpu_count()} "
    f"CPU cores; {args.size} stage LMs; {args.cache_clips} random clips × "
    f"{args.cache_clip_seconds:g} s; pipeline batch {args.pipeline_batch_size}, train batch "
    f"{args.train_batch_size}"
  )
  rows = []
  with tempfile.TemporaryDirectory() as work_dir:
    for stage in args.stages.split(","):
      files = [f"gin/models/{stage}/{args.size}.gin", *gin_files]
      gin_utils.parse(files, bindings, args.gin_search_path)
      rows.append(
        token_benchmarks.bench_input_pipeline(
          gin_utils.macro("MODEL"),
          gin_utils.configured(partitioning.Partitioner)(),
          work_dir=work_dir,
          num_clips=args.cache_clips,
          clip_seconds=args.cache_clip_seconds,
          batch_size=args.pipeline_batch_size,
          num_batches=args.pipeline_batches,
          train_batch_size=args.train_batch_size,
          train_steps=args.train_steps,
          optimizer=gin_utils.configured(optimizers.OptimizerConfig)(),
        )
      )
  print_rows_3g(rows)
  write_json(args.out, _device(), rows)
  return 0


def add_input_pipeline(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "input-pipeline",
    "the cached stage input pipeline against the train step it feeds",
    "musiclm-jax bench input-pipeline --size=base --train_batch_size=1 --train_steps=2",
    gin=True,
  )
  add_shared(p, "size")
  p.add_argument("--stages", default="semantic,coarse,fine")
  p.add_argument("--cache_clips", type=int, default=64, help="random clips")
  p.add_argument("--cache_clip_seconds", type=float, default=30.0)
  p.add_argument("--pipeline_batch_size", type=int, default=16)
  p.add_argument("--pipeline_batches", type=int, default=50, help="batches timed")
  p.add_argument("--train_batch_size", type=int, default=4)
  p.add_argument("--train_steps", type=int, default=1, help="timed train steps")
  p.set_defaults(run=_input_pipeline, parse_gin=False)


def _pipeline(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  from musiclm_jax.benchmarks import pipeline as pipeline_benchmarks
  from musiclm_jax.benchmarks import tokens as token_benchmarks
  from musiclm_jax.stages import STAGES

  files = [f"gin/models/{m}/{args.size}.gin" for m in ("soundstream", "w2v_bert", "mulan")]
  gin_utils.parse(files + gin_files, bindings, args.gin_search_path)
  configs = [gin_utils.macro(n) for n in ("CODEC_CONFIG", "W2V_BERT_CONFIG", "MULAN_CONFIG")]
  clusters = args.num_clusters or (32 if args.size == "tiny" else 1024)
  bundle = token_benchmarks.random_bundle(*configs, num_clusters=clusters)
  models = {}
  for stage in STAGES:  # architecture and crop of the size; the tokens are the bundle's
    gin_utils.parse(
      [f"gin/models/{stage}/{args.size}.gin", *gin_files], bindings, args.gin_search_path
    )
    models[stage] = gin_utils.macro("MODEL")
  tokens = bundle.token_spec(models["coarse"].layout.tokens.num_coarse_levels)
  stages = pipeline_benchmarks.random_stages(models, tokens)
  sizes = ", ".join(f"{n} {m.num_params() / 1e6:.1f}M" for n, (m, _) in stages.items())
  print(
    f"pipeline: {_device()} × {jax.device_count()}, {os.cpu_count()} CPU "
    f"cores, jax {jax.__version__}; {args.size} (random init): {sizes}, SoundStream "
    f"{bundle.codec.num_params / 1e6:.1f}M; {args.seconds:g} s per request"
  )
  rows = pipeline_benchmarks.bench_pipeline(
    bundle, stages, seconds=args.seconds, batch_sizes=args.batch_sizes, repeats=args.repeats
  )
  rows = [{"size": args.size, **row} for row in rows]
  print_rows_3g(rows)
  write_json(args.out, _device(), rows)
  return 0


def add_pipeline(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "pipeline",
    "text → music with random weights, timed stage by stage",
    "musiclm-jax bench pipeline --size=tiny --seconds=10 --batch_sizes=1,16",
    gin=True,
  )
  add_shared(p, "size", "batch_sizes", "num_clusters")
  add_shared(
    p,
    "seconds",
    "repeats",
    seconds={"help": "seconds of music per request"},
    repeats={"default": 1, "help": "timed runs (median; a whole generate is long)"},
  )
  p.set_defaults(run=_pipeline, parse_gin=False)


SUBCOMMANDS = (add_input_pipeline, add_pipeline)
