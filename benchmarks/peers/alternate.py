"""Runs our benchmark and the PyTorch peer alternately, then prints the medians side by side.

  python benchmarks/peers/alternate.py --rounds=3 --peer_python=/tmp/peer/bin/python decode \
      --gin_file=gin/models/semantic/base.gin --batch_sizes=1,8 --context=128 --new_tokens=256

Each round runs `musiclm-jax bench decode|train` (this checkout's venv) and then
`benchmarks/peers/hf_llama.py` (the peer's venv) as separate processes with the same shape, read
from the gin file, so neither side warms the other's caches and machine noise falls on both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _shape(gin_file: str, gin_flags: list[str]) -> dict[str, int]:
  """The peer's flags for the stage LM that `gin_file` (and our extra flags) configure."""
  from musiclm_jax.main import gin_utils

  files, bindings, _ = gin_utils.split_gin_args(gin_flags)
  gin_utils.parse([gin_file, *files], bindings)
  model = gin_utils.macro("MODEL")
  c = model.config
  return dict(
    layers=c.num_layers,
    d_model=c.d_model,
    heads=c.num_heads,
    head_dim=c.head_dim,
    d_ff=c.d_ff,
    vocab=model.vocab_size,
    length=model.sequence_length,
  )


def _ours(args: argparse.Namespace, out: str) -> list[dict]:
  if args.kind == "decode":
    flags = [
      f"--batch_sizes={args.batch_sizes}",
      f"--context_lengths={args.context}",
      f"--new_tokens={args.new_tokens}",
      "--uncached_max_context=0",
      f"--repeats={args.repeats}",
    ]
  else:
    flags = [f"--batch_size={args.batch_size}", f"--num_steps={args.repeats}"]
  cmd = [
    sys.executable,
    "-m",
    "musiclm_jax.main.cli",
    "bench",
    args.kind,
    f"--gin_file={args.gin_file}",
    *flags,
    f"--out={out}",
  ]
  subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
  with open(out) as f:
    return json.load(f)["rows"]


def _peer(args: argparse.Namespace, shape: dict[str, int]) -> list[dict]:
  flags = [f"--{k}={v}" for k, v in shape.items()]
  if args.kind == "decode":
    flags += [
      f"--batch_sizes={args.batch_sizes}",
      f"--context={args.context}",
      f"--new_tokens={args.new_tokens}",
    ]
  else:
    flags += [f"--batch_size={args.batch_size}"]
  cmd = [
    args.peer_python,
    os.path.join(HERE, "hf_llama.py"),
    args.kind,
    *flags,
    f"--repeats={args.repeats}",
    f"--threads={args.threads}",
  ]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--peer_python", required=True, help="python of a venv with torch + transformers")
  p.add_argument("--threads", type=int, default=2, help="torch threads (ours: all the CPU's)")
  p.add_argument("kind", choices=("decode", "train"))
  p.add_argument("--gin_file", required=True)
  p.add_argument(
    "--ours_flag",
    action="append",
    default=[],
    help="an extra flag for our side, e.g. --ours_flag=--gin.stage_lm.StageLM.codebook_softmax=False",
  )
  p.add_argument("--batch_sizes", default="1,8")
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--context", type=int, default=128)
  p.add_argument("--new_tokens", type=int, default=256)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  shape = _shape(args.gin_file, args.ours_flag)
  ours: dict[int, list[float]] = {}
  peer: dict[int, list[float]] = {}
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
      for row in _ours(args, os.path.join(tmp, f"ours{r}.json")):
        tps = row["cached_tokens_per_s"] if args.kind == "decode" else row["tokens_per_s"]
        ours.setdefault(row["batch_size"], []).append(tps)
      for row in _peer(args, shape):
        peer.setdefault(row["batch_size"], []).append(row["tokens_per_s"])
      print(f"round {r + 1}: ours {ours} peer {peer}", file=sys.stderr, flush=True)
  print(f"{args.kind} {args.gin_file} {shape}")
  print("| batch | ours tokens/s | peer tokens/s | ours / peer |")
  print("|---|---|---|---|")
  for batch in sorted(ours):
    o, q = statistics.median(ours[batch]), statistics.median(peer[batch])
    print(f"| {batch} | {o:,.1f} | {q:,.1f} | {o / q:.2f}× |")


if __name__ == "__main__":
  main()
