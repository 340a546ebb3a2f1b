"""`musiclm-jax VERB ...`: one console script, one module per verb under musiclm_jax/main/."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = """usage: musiclm-jax VERB [flags]

verbs:
  train       train a model from gin files (--gin_file=... --gin.MODEL_DIR="'dir'")
  compile     ahead-of-time compile a train step for a TPU topology (--topology=v5e:4x4)
  bench       speed and quality figures for BENCHMARKS.md (`musiclm-jax bench SUBCOMMAND --help`):
                train, decode (stage LMs), codec, codec-train, codec-quality (SoundStream),
                semantic (w2v-BERT + k-means), mulan, render, tokenize, input-pipeline, pipeline,
                evaluate (the music metrics)
  quickstart  the whole pipeline on a rendered corpus: tokenizers, token cache, stage LMs, music
  tokenize    cache the token streams of audio datasets (seqio cache job on Apache Beam)
  render      render music21 scores to a captioned 24 kHz corpus (MusicCaps layout)
  build-data  build a TFDS dataset: musiccaps, audio_folder or rendered_music
  spectrogram waveform + log-mel PNGs of audio files
  generate    one piece of music from a text prompt ("TEXT" --seconds=10 --out=out.wav)
  infer       batch decoding of a prompts JSONL file, sharded and resumable (--prompts --out_dir)
  evaluate    FAD_musicnn, KLD, chroma, note F1, MCC of generated music against reference clips
  codec       encode audio files to acoustic tokens with a trained codec, or decode them
  import-weights  a pretrained tokenizer from a transformers checkpoint (--kind=encodec)

`musiclm-jax VERB --help` shows a verb's flags, its gin flags and an example launch command.
exit codes: 0 ok; 1 infer: some prompts not generated (see its errors file); 2 bad usage,
configuration or path; 3 train: preempted, resume by rerunning the same command.
"""


def _train(argv):
  from musiclm_jax.main import train

  return train.main(argv)


def _compile(argv):
  from musiclm_jax.main import compile as compile_verb

  return compile_verb.main(argv)


def _bench(argv):
  from musiclm_jax.main import bench

  return bench.main(argv)


def _quickstart(argv):
  from musiclm_jax.main import quickstart

  return quickstart.main(argv)


def _tokenize(argv):
  from musiclm_jax.main import tokenize

  return tokenize.main(argv)


def _render(argv):
  from musiclm_jax.main import render

  return render.main(argv)


def _build_data(argv):
  from musiclm_jax.main import build_data

  return build_data.main(argv)


def _spectrogram(argv):
  from musiclm_jax.main import spectrogram

  return spectrogram.main(argv)


def _generate(argv):
  from musiclm_jax.main import generate

  return generate.main(argv)


def _infer(argv):
  from musiclm_jax.main import infer

  return infer.main(argv)


def _evaluate(argv):
  from musiclm_jax.main import evaluate

  return evaluate.main(argv)


def _codec(argv):
  from musiclm_jax.main import codec

  return codec.main(argv)


def _import_weights(argv):
  from musiclm_jax.main import import_weights

  return import_weights.main(argv)


VERBS: dict[str, Callable[[Sequence[str]], int]] = {
  "train": _train,
  "compile": _compile,
  "bench": _bench,
  "quickstart": _quickstart,
  "tokenize": _tokenize,
  "render": _render,
  "build-data": _build_data,
  "spectrogram": _spectrogram,
  "generate": _generate,
  "infer": _infer,
  "evaluate": _evaluate,
  "codec": _codec,
  "import-weights": _import_weights,
}


# A training job stopped by SIGTERM saved its step: rerunning the same command resumes it.
EXIT_PREEMPTED = 3


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(USAGE)
    return 0
  verb, rest = argv[0], argv[1:]
  if verb not in VERBS:
    print(f"musiclm-jax: unknown verb {verb!r}\n\n{USAGE}", file=sys.stderr)
    return 2
  from musiclm_jax.checkpoints import CheckpointMismatchError
  from musiclm_jax.data.token_bundle import CacheMismatchError
  from musiclm_jax.main.gin_utils import GinConfigError
  from musiclm_jax.main.paths import PathError
  from musiclm_jax.runtime.distributed import DistributedError
  from musiclm_jax.training.runner import Preempted

  usage_errors = (GinConfigError, PathError, CheckpointMismatchError, CacheMismatchError)
  try:
    return VERBS[verb](rest) or 0
  except (*usage_errors, DistributedError) as e:
    print(f"musiclm-jax {verb}: {type(e).__name__}: {e}", file=sys.stderr)
    return 2
  except Preempted as e:
    print(f"musiclm-jax {verb}: {e}", file=sys.stderr)
    return EXIT_PREEMPTED


if __name__ == "__main__":
  sys.exit(main())
