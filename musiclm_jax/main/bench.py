"""`musiclm-jax bench train|decode --gin_file=MODEL.gin [...]`, `bench codec|codec-train
--gin_file=gin/models/soundstream/paper.gin [...]`, `bench semantic
--gin_file=gin/models/w2v_bert/paper.gin [...]`, `bench mulan --gin_file=gin/models/mulan/paper.gin`
`bench render`, `bench tokenize --size=base` (the whole tokenizer bundle) and `bench
input-pipeline --size=base` (the cached stage input pipeline against the train step), `bench
pipeline --size=base` (text → music, stage by stage): speed figures for BENCHMARKS.md; `bench
codec-quality --model_dir=... --data_dir=...`: a trained codec against Opus on held-out clips."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Sequence

import jax

from musiclm_jax import partitioning
from musiclm_jax.benchmarks import codec as codec_benchmarks
from musiclm_jax.benchmarks import stage_lm as benchmarks
from musiclm_jax.main import gin_utils
from musiclm_jax.training import optimizers


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]


def _print_rows(rows: list[dict]) -> None:
  keys = list(rows[0])
  print("| " + " | ".join(keys) + " |")
  print("|" + "---|" * len(keys))
  for row in rows:
    cells = [
      f"{row.get(k, float('nan')):,.1f}" if isinstance(row.get(k), float) else str(row.get(k, ""))
      for k in keys
    ]
    print("| " + " | ".join(cells) + " |")


def _write_json(path: str | None, device: str, rows: list[dict]) -> None:
  if path:
    with open(path, "w") as f:
      json.dump({"device": device, "rows": rows}, f, indent=2)


def _bench_render(args: argparse.Namespace) -> int:
  from musiclm_jax.data.render import throughput  # no JAX involved: FluidSynth on CPU cores

  print(f"render: {args.num_clips} clips × {args.clip_seconds:g} s on {os.cpu_count()} CPU cores")
  rows = throughput.bench_render(
    num_clips=args.num_clips, clip_seconds=args.clip_seconds, worker_counts=args.worker_counts
  )
  _print_rows(rows)
  _write_json(args.out, f"{os.cpu_count()} CPU cores", rows)
  return 0


def _bench_codec(args: argparse.Namespace) -> int:
  config = gin_utils.macro("CODEC_CONFIG")
  print(
    f"codec: {jax.devices()[0].device_kind} × {jax.device_count()}, {os.cpu_count()} CPU cores; "
    f"{args.seconds:g} s of {config.sample_rate} Hz audio per example"
  )
  rows = codec_benchmarks.bench_codec(
    config, seconds=args.seconds, batch_sizes=args.batch_sizes, repeats=args.repeats
  )
  # Three significant digits on screen (real-time factors are often < 0.1); full floats in JSON.
  _print_rows([{k: f"{v:.3g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])
  _write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def _bench_codec_train(args: argparse.Namespace) -> int:
  config = gin_utils.macro("CODEC_CONFIG")
  partitioner = gin_utils.configured(partitioning.Partitioner)()
  print(
    f"codec training step: {jax.devices()[0].device_kind} × {jax.device_count()}, "
    f"{os.cpu_count()} CPU cores; batch {args.batch_size} × {args.seconds:g} s crops"
  )
  rows = codec_benchmarks.bench_codec_train(
    config, partitioner, batch_size=args.batch_size, seconds=args.seconds, repeats=args.repeats
  )
  _print_rows([{k: f"{v:.3g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])
  _write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def _bench_semantic(args: argparse.Namespace) -> int:
  from musiclm_jax.benchmarks import semantic as semantic_benchmarks

  config = gin_utils.macro("W2V_BERT_CONFIG")
  clusters = args.num_clusters or 1024
  print(
    f"semantic: {jax.devices()[0].device_kind} × {jax.device_count()}, {os.cpu_count()} CPU "
    f"cores; w2v-BERT {config.num_params() / 1e6:.1f}M params, MLM layer {config.kmeans_layer}, "
    f"{clusters} clusters; {args.seconds:g} s of {config.sample_rate} Hz audio each"
  )
  rows = semantic_benchmarks.bench_semantic(
    config,
    seconds=args.seconds,
    batch_sizes=args.batch_sizes,
    num_clusters=clusters,
    repeats=args.repeats,
  )
  _print_rows([{k: f"{v:.3g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])
  _write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def _bench_mulan(args: argparse.Namespace) -> int:
  from musiclm_jax.benchmarks import mulan as mulan_benchmarks

  config = gin_utils.macro("MULAN_CONFIG")
  print(
    f"mulan: {jax.devices()[0].device_kind} × {jax.device_count()}, {os.cpu_count()} CPU cores; "
    f"{config.audio.window_seconds:g} s windows, {config.text.max_length}-token captions"
  )
  rows = mulan_benchmarks.bench_mulan(config, batch_sizes=args.batch_sizes, repeats=args.repeats)
  _print_rows([{k: f"{v:.3g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])
  _write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def _bench_tokenize(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
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
  _print_rows([{k: f"{v:.3g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])
  _write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def _bench_input_pipeline(
  args: argparse.Namespace, gin_files: list[str], bindings: list[str]
) -> int:
  from musiclm_jax.benchmarks import tokens as token_benchmarks

  print(
    f"input-pipeline: {jax.devices()[0].device_kind} × {jax.device_count()}, {os.cpu_count()} "
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
  _print_rows([{k: f"{v:.3g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])
  _write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def _bench_pipeline(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
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
    f"pipeline: {jax.devices()[0].device_kind} × {jax.device_count()}, {os.cpu_count()} CPU "
    f"cores, jax {jax.__version__}; {args.size} (random init): {sizes}, SoundStream "
    f"{bundle.codec.num_params / 1e6:.1f}M; {args.seconds:g} s per request"
  )
  rows = pipeline_benchmarks.bench_pipeline(
    bundle, stages, seconds=args.seconds, batch_sizes=args.batch_sizes, repeats=args.repeats
  )
  rows = [{"size": args.size, **row} for row in rows]
  _print_rows([{k: f"{v:.3g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])
  _write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def _bench_codec_quality(args: argparse.Namespace) -> int:
  from musiclm_jax.data.audio_batches import AudioSource
  from musiclm_jax.evaluation import codec_quality
  from musiclm_jax.jobs import codec as codec_train_job

  if not args.model_dir:
    raise SystemExit("bench codec-quality needs --model_dir (a codec training run).")
  codec = codec_train_job.load_codec(args.model_dir)
  source = AudioSource(args.dataset, args.data_dir, codec.sample_rate)
  clips = codec_quality.held_out_clips(source, args.split, args.num_clips, args.seconds)
  print(
    f"codec-quality: {args.model_dir} ({codec.num_levels} levels × {codec.codebook_size} codes) "
    f"vs Opus on {len(clips)} {args.split} clips × {args.seconds:g} s of {args.dataset}"
  )
  rows = codec_quality.compare_with_opus(codec, clips)
  cells = [{k: f"{v:.3f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows]
  _print_rows([{k: "-" if v is None else v for k, v in r.items()} for r in cells])
  _write_json(args.out, f"{os.cpu_count()} CPU cores", rows)
  return 0


def main(argv: Sequence[str]) -> int:
  gin_files, bindings, rest = gin_utils.split_gin_args(argv)
  parser = argparse.ArgumentParser(prog="musiclm-jax bench")
  parser.add_argument(
    "what",
    choices=[
      "train",
      "decode",
      "codec",
      "codec-train",
      "codec-quality",
      "semantic",
      "mulan",
      "render",
      "tokenize",
      "input-pipeline",
      "pipeline",
    ],
  )
  parser.add_argument("--batch_size", type=int, default=8, help="train, codec-train")
  parser.add_argument("--num_steps", type=int, default=10, help="train")
  parser.add_argument(
    "--batch_sizes", type=_ints, default=[1, 8], help="decode, codec, tokenize, pipeline"
  )
  parser.add_argument("--context_lengths", type=_ints, default=[128, 512, 2048], help="decode")
  parser.add_argument("--new_tokens", type=int, default=32, help="decode")
  parser.add_argument("--uncached_max_context", type=int, default=2048, help="decode")
  parser.add_argument(
    "--repeats",
    type=int,
    help="decode, codec, codec-train, tokenize, pipeline: timed runs (median; 3, pipeline 1)",
  )
  parser.add_argument(
    "--seconds",
    type=float,
    default=10.0,
    help="codec, tokenize: audio per example; codec-train: per crop; codec-quality: per clip; "
    "pipeline: per request",
  )
  parser.add_argument("--num_clips", type=int, default=32, help="render, codec-quality")
  parser.add_argument("--model_dir", help="codec-quality: the codec's training run")
  parser.add_argument("--data_dir", help="codec-quality: TFDS data dir of the held-out clips")
  parser.add_argument("--dataset", default="rendered_music/24khz", help="codec-quality")
  parser.add_argument("--split", default="eval", help="codec-quality: held-out split")
  parser.add_argument(
    "--num_clusters", type=int, help="semantic, tokenize: k-means size (1024; tokenize tiny: 32)"
  )
  parser.add_argument("--clip_seconds", type=float, default=5.0, help="render")
  parser.add_argument("--worker_counts", type=_ints, default=[1, 2], help="render")
  parser.add_argument(
    "--size",
    choices=["tiny", "base", "paper"],
    default="base",
    help="tokenize, input-pipeline, pipeline",
  )
  parser.add_argument("--stages", default="semantic,coarse,fine", help="input-pipeline")
  parser.add_argument("--cache_clips", type=int, default=64, help="input-pipeline: random clips")
  parser.add_argument("--cache_clip_seconds", type=float, default=30.0, help="input-pipeline")
  parser.add_argument("--pipeline_batch_size", type=int, default=16, help="input-pipeline")
  parser.add_argument(
    "--pipeline_batches", type=int, default=50, help="input-pipeline: batches timed"
  )
  parser.add_argument("--train_batch_size", type=int, default=4, help="input-pipeline")
  parser.add_argument(
    "--train_steps", type=int, default=1, help="input-pipeline: timed train steps"
  )
  parser.add_argument("--out", "--json", help="write the results as JSON here")
  parser.add_argument("--gin_search_path", action="append", default=[])
  args = parser.parse_args(rest)
  if args.repeats is None:  # a whole generate is long: one timed run unless asked
    args.repeats = 1 if args.what == "pipeline" else 3
  if args.what == "render":
    return _bench_render(args)
  if args.what == "codec-quality":
    return _bench_codec_quality(args)
  if args.what == "tokenize":
    return _bench_tokenize(args, gin_files, bindings)
  if args.what == "input-pipeline":
    return _bench_input_pipeline(args, gin_files, bindings)
  if args.what == "pipeline":
    return _bench_pipeline(args, gin_files, bindings)
  gin_utils.parse(gin_files, bindings, args.gin_search_path)
  if args.what == "codec":
    return _bench_codec(args)
  if args.what == "codec-train":
    return _bench_codec_train(args)
  if args.what == "semantic":
    return _bench_semantic(args)
  if args.what == "mulan":
    return _bench_mulan(args)
  model = gin_utils.macro("MODEL")
  print(
    f"device: {jax.devices()[0].device_kind} × {jax.device_count()}; model {model.name}, "
    f"{model.num_params() / 1e6:.2f}M params"
  )
  if args.what == "train":
    partitioner = gin_utils.configured(partitioning.Partitioner)()
    rows = [
      benchmarks.bench_train(
        model,
        partitioner,
        batch_size=args.batch_size,
        num_steps=args.num_steps,
        optimizer=gin_utils.configured(optimizers.OptimizerConfig)(),
      )
    ]
  else:
    rows = benchmarks.bench_decode(
      model,
      batch_sizes=args.batch_sizes,
      context_lengths=args.context_lengths,
      new_tokens=args.new_tokens,
      uncached_max_context=args.uncached_max_context,
      repeats=args.repeats,
    )
  _print_rows(rows)
  _write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0
