"""`musiclm-jax generate TEXT --seconds S --out OUT.wav`: one piece of music from a text prompt.

  musiclm-jax generate "a calm violin melody over soft piano" --seconds=10 --out=out.wav \
    [--spectrogram=out.png] [--seed=N] --gin_file=gin/runs/infer.gin \
    --gin.TOKENIZERS_DIR="'runs/tokenizers'" --gin.SEMANTIC_DIR="'runs/semantic'" \
    --gin.COARSE_DIR="'runs/coarse'" --gin.FINE_DIR="'runs/fine'"

A bar per stage (semantic, coarse, fine windows) on stderr; for many prompts use `infer`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from musiclm_jax.main import gin_utils, paths

GENERATE_EXAMPLE = """musiclm-jax generate "a calm violin melody over soft piano" --seconds=10 \\
    --gin_file=gin/runs/infer.gin --gin.TOKENIZERS_DIR="'runs/tokenizers'" \\
    --gin.SEMANTIC_DIR="'runs/semantic'" --gin.COARSE_DIR="'runs/coarse'" \\
    --gin.FINE_DIR="'runs/fine'" --out=out.wav"""


def main(argv: Sequence[str]) -> int:
  gin_files, bindings, rest = gin_utils.split_gin_args(argv)
  parser = argparse.ArgumentParser(prog="musiclm-jax generate", description=__doc__)
  parser.add_argument("text", help="what the music should be")
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--out", required=True, help="the WAV to write (24 kHz)")
  parser.add_argument("--spectrogram", default=None, help="also write this PNG")
  parser.add_argument("--seed", type=int, default=0)
  gin_utils.add_gin_flags(parser, GENERATE_EXAMPLE)
  args = parser.parse_args(rest)
  paths.check_output_file(args.out, "--out")  # before any model loads
  if args.spectrogram:
    paths.check_output_file(args.spectrogram, "--spectrogram")

  from musiclm_jax.data import audio_io, spectrogram
  from musiclm_jax.decoding import batch_inference, prompts
  from musiclm_jax.main import infer

  fields = {"id": "generate", "text": args.text, "seconds": args.seconds, "seed": args.seed}
  try:
    prompt = prompts.parse_prompt(fields, "command line")
  except ValueError as e:
    print(f"musiclm-jax generate: {e}", file=sys.stderr)
    return 2
  gin_utils.parse(gin_files, bindings, args.gin_search_path)
  try:
    pipeline, _ = infer.load_from_gin()
  except infer.ModelsError as e:
    print(f"musiclm-jax generate: {e}", file=sys.stderr)
    return 2
  print(f"generating {prompt.seconds:g} s, seed {prompt.seed}: {args.text}", file=sys.stderr)
  (generation,) = pipeline.generate([prompt.request()], progress=batch_inference.StageProgress())
  sample_rate = pipeline.tokenizers.sample_rate
  audio_io.write_wav(args.out, generation.audio, sample_rate)
  if args.spectrogram:
    spectrogram.save_spectrogram_png(generation.audio, sample_rate, args.spectrogram, args.text)
  summary = {"out": args.out, "samples": len(generation.audio), "sample_rate": sample_rate}
  summary.update(seed=prompt.seed, spectrogram=args.spectrogram, windows=generation.windows)
  print(json.dumps(summary))
  return 0
