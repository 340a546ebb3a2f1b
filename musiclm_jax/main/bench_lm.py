"""`musiclm-jax bench train|decode`: a stage LM's train step and its sampling."""

from __future__ import annotations

import argparse

import jax

from musiclm_jax import partitioning
from musiclm_jax.main import gin_utils
from musiclm_jax.main.bench_report import (
  add_shared,
  ints,
  print_rows,
  subcommand,
  write_json,
)
from musiclm_jax.training import optimizers


def _device() -> str:
  return jax.devices()[0].device_kind


def _print_model(model) -> None:
  print(
    f"device: {_device()} × {jax.device_count()}; model {model.name}, "
    f"{model.num_params() / 1e6:.2f}M params"
  )


def _train(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  from musiclm_jax.benchmarks import stage_lm as benchmarks

  model = gin_utils.macro("MODEL")
  _print_model(model)
  row = benchmarks.bench_train(
    model,
    gin_utils.configured(partitioning.Partitioner)(),
    batch_size=args.batch_size,
    num_steps=args.num_steps,
    optimizer=gin_utils.configured(optimizers.OptimizerConfig)(),
  )
  print_rows([row])
  write_json(args.out, _device(), [row])
  return 0


def add_train(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "train",
    "stage LM train step: tokens/s, step time and MFU",
    "musiclm-jax bench train --gin_file=gin/models/semantic/tiny.gin --batch_size=8 --num_steps=5",
    gin=True,
  )
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--num_steps", type=int, default=10, help="timed steps")
  p.set_defaults(run=_train, parse_gin=True)


def _decode(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  from musiclm_jax.benchmarks import stage_lm as benchmarks

  model = gin_utils.macro("MODEL")
  _print_model(model)
  rows = benchmarks.bench_decode(
    model,
    batch_sizes=args.batch_sizes,
    context_lengths=args.context_lengths,
    new_tokens=args.new_tokens,
    uncached_max_context=args.uncached_max_context,
    repeats=args.repeats,
    cache_length=args.cache_length,
  )
  print_rows(rows)
  write_json(args.out, _device(), rows)
  return 0


def add_decode(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "decode",
    "stage LM sampling: tokens/s with the KV cache and with full recomputation",
    "musiclm-jax bench decode --gin_file=gin/models/semantic/tiny.gin --batch_sizes=1,8 "
    "--context_lengths=128,512",
    gin=True,
  )
  add_shared(p, "batch_sizes", "repeats")
  p.add_argument("--context_lengths", type=ints, default=[128, 512, 2048])
  p.add_argument("--new_tokens", type=int, default=32)
  p.add_argument(
    "--uncached_max_context", type=int, default=2048, help="longest context timed uncached"
  )
  p.add_argument(
    "--cache_length",
    type=int,
    default=0,
    help="preallocate the KV cache this long (0: context + new tokens); adds ms_per_step",
  )
  p.set_defaults(run=_decode, parse_gin=True)


SUBCOMMANDS = (add_train, add_decode)
