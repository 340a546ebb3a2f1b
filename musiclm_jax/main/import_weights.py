"""`musiclm-jax import-weights`: a public pretrained tokenizer as a checkpoint of ours.

    musiclm-jax import-weights --kind=encodec --checkpoint_dir=encodec_24khz --out_dir=O
        [--bandwidth=6.0]
    musiclm-jax import-weights --kind=hubert|mert --checkpoint_dir=hubert-base-ls960 --out_dir=O

reads a transformers checkpoint directory (`config.json` + `model.safetensors`, as
`save_pretrained` writes them; nothing is downloaded and torch is not needed) and writes
`O/checkpoints/0` with the architecture and the source (directory, sha256 of the weights) in its
metadata. For EnCodec, `O` is then a `--codec_dir` for `musiclm-jax codec` and a codec for the
tokenizer bundle; `--bandwidth` (kbps, one of the model's target bandwidths) keeps that many
codebooks (24 kHz model: 1.5 → 2, 3 → 4, 6 → 8, 12 → 16, 24 → 32 levels). For HuBERT and MERT,
`tokenizers.hubert.load_hubert(O)` gives any layer's hidden states of audio at any rate.

A checkpoint of another kind, an unsupported config (e.g. the 48 kHz stereo EnCodec) or a
missing, misshapen or truncated tensor exits 2 with one line naming what is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Sequence

from musiclm_jax.main import paths

KINDS = ("encodec", "hubert", "mert")


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _import_encodec(checkpoint_dir: str, out_dir: str, bandwidth: float | None) -> str:
  from musiclm_jax.tokenizers.encodec import load_hf_encodec, save_encodec
  from musiclm_jax.tokenizers.hf_checkpoint import WEIGHTS_FILE

  config, variables = load_hf_encodec(checkpoint_dir, bandwidth)
  source = {
    "kind": "encodec",
    "checkpoint_dir": os.path.abspath(checkpoint_dir),
    "weights_sha256": _sha256(os.path.join(checkpoint_dir, WEIGHTS_FILE)),
    "bandwidth_kbps": bandwidth,
  }
  save_encodec(out_dir, config, variables, source)
  return (
    f"imported EnCodec: {config.sample_rate} Hz, {config.frame_rate} frames/s, "
    f"{config.num_levels} of {config.num_quantizers} levels × {config.codebook_size} codes -> "
    f"{out_dir} (musiclm-jax codec encode --codec_dir={out_dir} ...)"
  )


def _import_hubert(kind: str, checkpoint_dir: str, out_dir: str) -> str:
  from musiclm_jax.tokenizers.hf_checkpoint import WEIGHTS_FILE
  from musiclm_jax.tokenizers.hubert import load_hf_hubert, save_hubert

  config, params = load_hf_hubert(checkpoint_dir)
  expected = "mert_model" if kind == "mert" else "hubert"
  if config.model_type != expected:
    raise ValueError(
      f"{checkpoint_dir}: --kind={kind} but its config.json says model_type "
      f"{config.model_type!r} (expected {expected!r})."
    )
  source = {
    "kind": kind,
    "checkpoint_dir": os.path.abspath(checkpoint_dir),
    "weights_sha256": _sha256(os.path.join(checkpoint_dir, WEIGHTS_FILE)),
  }
  save_hubert(out_dir, config, params, source)
  return (
    f"imported {kind}: {config.sample_rate} Hz, {config.frame_rate:g} frames/s, "
    f"{config.num_layers} layers of {config.hidden_size} -> {out_dir}"
  )


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="musiclm-jax import-weights",
    description="Import a pretrained tokenizer from a transformers checkpoint directory.",
    epilog="example: musiclm-jax import-weights --kind=encodec "
    "--checkpoint_dir=encodec_24khz --out_dir=runs/encodec --bandwidth=6.0",
  )
  parser.add_argument("--kind", required=True, choices=KINDS)
  parser.add_argument(
    "--checkpoint_dir", required=True, help="holds config.json and model.safetensors"
  )
  parser.add_argument("--out_dir", required=True, help="the model dir to write (must be new)")
  parser.add_argument(
    "--bandwidth", type=float, help="encodec: kbps, one of the model's target_bandwidths"
  )
  return parser


def main(argv: Sequence[str]) -> int:
  args = _parser().parse_args(argv)
  paths.check_input_dir(args.checkpoint_dir, "--checkpoint_dir")
  paths.check_output_dir(args.out_dir, "--out_dir")
  if args.bandwidth is not None and args.kind != "encodec":
    raise paths.PathError(f"--bandwidth is an EnCodec setting; --kind={args.kind} has none.")
  if os.path.isdir(args.out_dir) and os.listdir(args.out_dir):
    raise paths.PathError(f"--out_dir={args.out_dir} is not empty: import into a new directory.")
  try:
    if args.kind == "encodec":
      print(_import_encodec(args.checkpoint_dir, args.out_dir, args.bandwidth))
    else:
      print(_import_hubert(args.kind, args.checkpoint_dir, args.out_dir))
  except (ValueError, FileNotFoundError) as e:
    print(f"musiclm-jax import-weights: {e}", file=sys.stderr)
    return 2
  return 0
