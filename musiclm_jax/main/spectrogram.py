"""`musiclm-jax spectrogram AUDIO [AUDIO ...] --out_dir DIR`: PNG pictures of audio files."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from musiclm_jax.data import audio_io, spectrogram
from musiclm_jax.main import paths


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(
    prog="musiclm-jax spectrogram",
    description="Writes <out_dir>/<stem>.png: waveform and log-mel spectrogram of each file.",
    epilog="example: musiclm-jax spectrogram out/a.wav out/b.wav --out_dir=out/png",
  )
  parser.add_argument("audio", nargs="+", help="WAV/FLAC/OGG/MP3 files")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--sample_rate", type=int, default=audio_io.DEFAULT_SAMPLE_RATE)
  parser.add_argument("--max_seconds", type=float, default=60.0, help="plot at most this much")
  args = parser.parse_args(argv)
  paths.check_output_dir(args.out_dir, "--out_dir")
  failures = 0
  for path in args.audio:
    try:
      seconds = min(audio_io.probe(path).duration_s, args.max_seconds)
      audio = audio_io.load_audio(path, args.sample_rate, duration_s=seconds, allow_silent=True)
    except audio_io.AudioError as e:
      print(f"skipped: {e}", file=sys.stderr)
      failures += 1
      continue
    stem = os.path.splitext(os.path.basename(path))[0]
    out_path = os.path.join(args.out_dir, f"{stem}.png")
    spectrogram.save_spectrogram_png(
      audio, args.sample_rate, out_path, title=os.path.basename(path)
    )
    print(out_path)
  return 1 if failures else 0
