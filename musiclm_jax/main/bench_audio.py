"""`musiclm-jax bench render|codec|codec-train|codec-quality`: the corpus render and SoundStream."""

from __future__ import annotations

import argparse
import os

from musiclm_jax.main import gin_utils, paths
from musiclm_jax.main.bench_report import (
  add_shared,
  ints,
  print_rows,
  print_rows_3g,
  subcommand,
  write_json,
)


def _render(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  from musiclm_jax.data.render import throughput  # no JAX involved: FluidSynth on CPU cores

  print(f"render: {args.num_clips} clips × {args.clip_seconds:g} s on {os.cpu_count()} CPU cores")
  rows = throughput.bench_render(
    num_clips=args.num_clips, clip_seconds=args.clip_seconds, worker_counts=args.worker_counts
  )
  print_rows(rows)
  write_json(args.out, f"{os.cpu_count()} CPU cores", rows)
  return 0


def add_render(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "render",
    "rendering the music21 corpus through FluidSynth: audio seconds per second",
    "musiclm-jax bench render --num_clips=64 --clip_seconds=5 --worker_counts=1,2",
    gin=False,
  )
  p.add_argument("--num_clips", type=int, default=32)
  p.add_argument("--clip_seconds", type=float, default=5.0)
  p.add_argument("--worker_counts", type=ints, default=[1, 2], help="comma-separated")
  p.set_defaults(run=_render, parse_gin=False)


def _codec(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  import jax

  from musiclm_jax.benchmarks import codec as codec_benchmarks

  config = gin_utils.macro("CODEC_CONFIG")
  print(
    f"codec: {jax.devices()[0].device_kind} × {jax.device_count()}, {os.cpu_count()} CPU cores; "
    f"{args.seconds:g} s of {config.sample_rate} Hz audio per example"
  )
  rows = codec_benchmarks.bench_codec(
    config, seconds=args.seconds, batch_sizes=args.batch_sizes, repeats=args.repeats
  )
  print_rows_3g(rows)
  write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def add_codec(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "codec",
    "SoundStream encode and decode speed (random weights)",
    "musiclm-jax bench codec --gin_file=gin/models/soundstream/base.gin --batch_sizes=1,8",
    gin=True,
  )
  add_shared(p, "seconds", "batch_sizes", "repeats")
  p.set_defaults(run=_codec, parse_gin=True)


def _codec_train(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  import jax

  from musiclm_jax import partitioning
  from musiclm_jax.benchmarks import codec as codec_benchmarks

  config = gin_utils.macro("CODEC_CONFIG")
  partitioner = gin_utils.configured(partitioning.Partitioner)()
  print(
    f"codec training step: {jax.devices()[0].device_kind} × {jax.device_count()}, "
    f"{os.cpu_count()} CPU cores; batch {args.batch_size} × {args.seconds:g} s crops"
  )
  rows = codec_benchmarks.bench_codec_train(
    config, partitioner, batch_size=args.batch_size, seconds=args.seconds, repeats=args.repeats
  )
  print_rows_3g(rows)
  write_json(args.out, jax.devices()[0].device_kind, rows)
  return 0


def add_codec_train(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "codec-train",
    "the SoundStream GAN train step: reconstruction and adversarial phases",
    "musiclm-jax bench codec-train --gin_file=gin/models/soundstream/tiny.gin "
    "--gin_file=gin/mesh/single_device.gin --batch_size=8 --seconds=0.5",
    gin=True,
  )
  p.add_argument("--batch_size", type=int, default=8)
  add_shared(p, "seconds", "repeats", seconds={"help": "seconds per training crop"})
  p.set_defaults(run=_codec_train, parse_gin=True)


def _codec_quality(args: argparse.Namespace, gin_files: list[str], bindings: list[str]) -> int:
  from musiclm_jax.data.audio_batches import AudioSource
  from musiclm_jax.evaluation import codec_quality
  from musiclm_jax.tokenizers.codec_api import load_codec

  if not os.path.isdir(args.model_dir):
    raise paths.PathError(f"--model_dir {args.model_dir}: no such folder (a codec training run)")
  codec = load_codec(args.model_dir)
  reference_notes = None
  if args.corpus_dir:
    clips, reference_notes = codec_quality.corpus_clips_with_notes(
      args.corpus_dir, args.split, args.num_clips, args.seconds, codec.sample_rate
    )
    where = f"{args.corpus_dir} (note F1 against their MIDI)"
  else:
    source = AudioSource(args.dataset, args.data_dir, codec.sample_rate)
    clips = codec_quality.held_out_clips(source, args.split, args.num_clips, args.seconds)
    where = args.dataset
  print(
    f"codec-quality: {args.model_dir} ({codec.num_levels} levels × {codec.codebook_size} codes) "
    f"vs Opus on {len(clips)} {args.split} clips × {args.seconds:g} s of {where}"
  )
  rows = codec_quality.compare_with_opus(codec, clips, reference_notes=reference_notes)
  cells = [{k: f"{v:.3f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows]
  print_rows([{k: "-" if v is None else v for k, v in r.items()} for r in cells])
  write_json(args.out, f"{os.cpu_count()} CPU cores", rows)
  return 0


def add_codec_quality(subparsers: argparse._SubParsersAction) -> None:
  p = subcommand(
    subparsers,
    "codec-quality",
    "a trained codec against Opus on held-out clips (mel distance, chroma, note F1 by bitrate)",
    "musiclm-jax bench codec-quality --model_dir=runs/soundstream_tiny "
    "--data_dir=data/tfds --num_clips=12",
    gin=False,
  )
  p.add_argument("--model_dir", required=True, help="the codec's training run")
  p.add_argument("--data_dir", help="TFDS data dir of the held-out clips")
  p.add_argument(
    "--corpus_dir",
    help="instead of TFDS: a rendered corpus (musiccaps.csv + audio/ with MIDI): adds note F1",
  )
  p.add_argument("--dataset", default="rendered_music/24khz")
  p.add_argument("--split", default="eval", help="the held-out split")
  p.add_argument("--num_clips", type=int, default=32)
  add_shared(p, "seconds", seconds={"help": "seconds per clip"})
  p.set_defaults(run=_codec_quality, parse_gin=False)


SUBCOMMANDS = (add_codec, add_codec_train, add_codec_quality, add_render)
