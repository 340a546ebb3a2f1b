"""`musiclm-jax bench semantic|mulan|tokenize`: the semantic and MuLan tokenizers, and the bundle."""

from __future__ import annotations

import argparse
import os

import jax

from musiclm_jax.main import gin_utils
from musiclm_jax.main.bench_report import add_shared, print_rows_3g, subcommand, write_json


def _semantic(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  from musiclm_jax.benchmarks import semantic as semantic_benchmarks

  config = gin_utils.macro("HUBERT_CONFIG", None) or gin_utils.macro("W2V_BERT_CONFIG")
  clusters = args.num_clusters or 1024
  machine = f"{jax.devices()[0].device_kind} × {jax.device_count()}, {os.cpu_count()} CPU cores"
  if hasattr(config, "kmeans_layer"):
    model = f"w2v-BERT {config.num_params() / 1e6:.1f}M params, MLM layer {config.kmeans_layer}"
  else:
    model = (
      f"imported {config.model_type} ({config.sample_rate} Hz), layer {config.num_layers // 2}"
    )
  print(
    f"semantic: {machine}; {model}, {clusters} clusters; {args.seconds:g} s of 24 kHz audio each"
  )
  rows = semantic_benchmarks.bench_semantic(
    config,
    seconds=args.seconds,
    batch_sizes=args.batch_sizes,
    num_clusters=clusters,
    repeats=args.repeats,
  )
  print_rows_3g(rows)
  write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def add_semantic(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "semantic",
    "semantic tokens: w2v-BERT (or imported HuBERT / MERT: gin/models/hubert) features + "
    "k-means assignment (random weights)",
    "musiclm-jax bench semantic --gin_file=gin/models/w2v_bert/base.gin --batch_sizes=1,8",
    gin=True,
  )
  add_shared(p, "seconds", "batch_sizes", "repeats", "num_clusters")
  p.set_defaults(run=_semantic, parse_gin=True)


def _mulan(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  from musiclm_jax.benchmarks import mulan as mulan_benchmarks

  config = gin_utils.macro("MULAN_CONFIG")
  print(
    f"mulan: {jax.devices()[0].device_kind} × {jax.device_count()}, {os.cpu_count()} CPU cores; "
    f"{config.audio.window_seconds:g} s windows, {config.text.max_length}-token captions"
  )
  rows = mulan_benchmarks.bench_mulan(config, batch_sizes=args.batch_sizes, repeats=args.repeats)
  print_rows_3g(rows)
  write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def add_mulan(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "mulan",
    "MuLan audio and text towers: embeddings per second (random weights)",
    "musiclm-jax bench mulan --gin_file=gin/models/mulan/base.gin --batch_sizes=1,8",
    gin=True,
  )
  add_shared(p, "batch_sizes", "repeats")
  p.set_defaults(run=_mulan, parse_gin=True)


def _tokenize(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  from musiclm_jax.benchmarks import tokens as token_benchmarks

  models = ("soundstream", "w2v_bert", "mulan")
  files = [f"gin/models/{model}/{args.size}.gin" for model in models] + gin_files
  gin_utils.parse(files, bindings, args.gin_search_path)
  codec, w2v_bert, mulan = (
    gin_utils.macro(name) for name in ("CODEC_CONFIG", "W2V_BERT_CONFIG", "MULAN_CONFIG")
  )
  clusters = args.num_clusters or (32 if args.size == "tiny" else 1024)
  bundle = token_benchmarks.random_bundle(codec, w2v_bert, mulan, num_clusters=clusters)
  print(
    f"tokenize: {jax.devices()[0].device_kind} × {jax.device_count()}, {os.cpu_count()} CPU "
    f"cores; {args.size} tokenizers (random init): SoundStream {bundle.codec.num_params / 1e6:.1f}M"
    f", w2v-BERT {w2v_bert.num_params() / 1e6:.1f}M + {clusters}-means, MuLan audio "
    f"{mulan.audio.num_params() / 1e6:.1f}M + 12 × 1024 RVQ; {args.seconds:g} s clips"
  )
  rows = token_benchmarks.bench_tokenize(
    bundle, seconds=[args.seconds], batch_sizes=args.batch_sizes, repeats=args.repeats
  )
  rows = [{"size": args.size, **row} for row in rows]
  print_rows_3g(rows)
  write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def add_tokenize(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "tokenize",
    "the whole tokenizer bundle (SoundStream, w2v-BERT + k-means, MuLan + RVQ) on clips",
    "musiclm-jax bench tokenize --size=base --seconds=10 --batch_sizes=1,8 --repeats=3",
    gin=True,
  )
  add_shared(p, "size", "seconds", "batch_sizes", "repeats", "num_clusters")
  p.set_defaults(run=_tokenize, parse_gin=False)


SUBCOMMANDS = (add_semantic, add_mulan, add_tokenize)
