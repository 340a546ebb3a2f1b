"""`musiclm-jax codec encode|decode`: a trained codec on any audio files, and back.

    musiclm-jax codec encode --codec_dir=D --out_dir=O A.wav B.flac ...   # O/A.npz, O/B.npz
    musiclm-jax codec decode --codec_dir=D [--levels=N] --out_dir=O O/A.npz ...   # O/A.wav

`encode` reads each file at the codec's rate (other rates resampled, channels downmixed) and
writes `<stem>.npz` holding int32 `codes` [frames, levels], the clip's `num_samples` and the codec's
`sample_rate`. `decode` writes `<stem>.wav` at the codec's rate from the first `--levels` levels
(default: all the file holds), cut to the encoded clip's length. A file that cannot be read or
decoded is reported on stderr with its reason and the rest go on; the verb then exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

from musiclm_jax.main import paths

MAX_SECONDS = 600.0  # one file is encoded in one call: bound the memory it can take


def _encode_one(codec, path: str, out_dir: str) -> str:
  from musiclm_jax.data import audio_io
  from musiclm_jax.runtime.atomic import atomic_path

  audio = audio_io.load_audio(path, codec.sample_rate, max_seconds=MAX_SECONDS, allow_silent=True)
  codes = np.asarray(codec.encode(audio[None]))[0].astype(np.int32)
  out = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".npz")
  with atomic_path(out) as tmp, open(tmp, "wb") as f:
    np.savez(
      f, codes=codes, num_samples=np.int64(len(audio)), sample_rate=np.int64(codec.sample_rate)
    )
  return out


def _read_codes(path: str, codec, levels: int | None) -> tuple[np.ndarray, int | None]:
  """(codes [frames, levels'] to decode, the encoded clip's length or None)."""
  try:
    with np.load(path) as data:
      codes = np.asarray(data["codes"])
      num_samples = int(data["num_samples"]) if "num_samples" in data else None
      rate = int(data["sample_rate"]) if "sample_rate" in data else codec.sample_rate
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"not a codes file (an .npz with an int32 'codes' array): {e}") from e
  if rate != codec.sample_rate:
    raise ValueError(f"encoded by a {rate} Hz codec; this codec runs at {codec.sample_rate} Hz")
  if codes.ndim != 2:
    raise ValueError(f"codes must be [frames, levels], got shape {codes.shape}")
  if levels is not None:
    if levels > codes.shape[1]:
      raise ValueError(f"--levels={levels} but the file holds {codes.shape[1]} levels")
    codes = codes[:, :levels]
  return codes, num_samples


def _decode_one(codec, path: str, out_dir: str, levels: int | None) -> str:
  from musiclm_jax.data import audio_io

  codes, num_samples = _read_codes(path, codec, levels)
  audio = np.asarray(codec.decode(codes[None]))[0]
  if num_samples is not None:
    audio = audio[:num_samples]
  out = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".wav")
  audio_io.write_wav(out, np.clip(audio, -1.0, 1.0), codec.sample_rate)
  return out


def _each(files: Sequence[str], work: Callable[[str], str]) -> int:
  """Runs `work` on every file; failures are reported and counted, never fatal."""
  from musiclm_jax.data.audio_io import AudioError

  failures = 0
  for path in files:
    try:
      print(work(path))
    except (AudioError, ValueError, TypeError, OSError) as e:
      print(f"skipped {path}: {e}", file=sys.stderr)
      failures += 1
  if failures:
    print(f"{failures} of {len(files)} files failed", file=sys.stderr)
  return 1 if failures else 0


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="musiclm-jax codec",
    description="Encode audio files to acoustic tokens with a trained codec, or decode them.",
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="example: musiclm-jax codec encode --codec_dir=runs/quickstart/tokenizers/codec "
    "--out_dir=codes a.wav b.wav\n  then: musiclm-jax codec decode --codec_dir=... --levels=2 "
    "--out_dir=decoded codes/a.npz",
  )
  parser.add_argument("action", choices=["encode", "decode"])
  parser.add_argument("files", nargs="+", help="audio files (encode) or .npz codes (decode)")
  parser.add_argument("--codec_dir", required=True, help="a codec training run's model dir")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--levels", type=int, help="decode: the first N RVQ levels (default all)")
  return parser


def main(argv: Sequence[str]) -> int:
  args = _parser().parse_args(argv)
  paths.check_input_dir(args.codec_dir, "--codec_dir")
  paths.check_output_dir(args.out_dir, "--out_dir")
  from musiclm_jax.tokenizers.codec_api import load_codec

  codec = load_codec(args.codec_dir)
  if args.levels is not None and not 1 <= args.levels <= codec.num_levels:
    raise paths.PathError(f"--levels={args.levels}: this codec has 1 to {codec.num_levels} levels")
  os.makedirs(args.out_dir, exist_ok=True)
  if args.action == "encode":
    return _each(args.files, lambda path: _encode_one(codec, path, args.out_dir))
  return _each(args.files, lambda path: _decode_one(codec, path, args.out_dir, args.levels))
