"""`musiclm-jax quickstart --out_dir runs/quickstart`: the largest real job on an embedded default.

Until the audio tokenizers exist (issues 3–7), this trains the three tiny stage LMs (semantic,
coarse, fine) on the structured synthetic token source with the same gin files and `train` verb
a user runs at scale, then samples each stage's held-out targets with the KV-cached sampler.
Rerunning resumes: finished stages are restored from their checkpoints, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence

from musiclm_jax import stage_eval
from musiclm_jax.main import gin_utils
from musiclm_jax.main import train as train_verb

STAGES = ("semantic", "coarse", "fine")


def _train_command(stage: str, model_dir: str, num_steps: int) -> list[str]:
  return [
    f"--gin_file=gin/models/{stage}/tiny.gin",
    "--gin_file=gin/runs/synthetic.gin",
    f"--gin.MODEL_DIR='{model_dir}'",
    f"--gin.NUM_STEPS={num_steps}",
  ]


def _run_stage(stage: str, out_dir: str, num_steps: int) -> dict:
  model_dir = os.path.join(out_dir, stage)
  command = _train_command(stage, model_dir, num_steps)
  print(f"\n== {stage} stage LM ==\n$ musiclm-jax train {' '.join(command)}", flush=True)
  start = time.perf_counter()
  train_verb.main(command)  # resumes from model_dir; a finished run only re-evaluates
  model = gin_utils.macro("MODEL")
  with open(os.path.join(model_dir, "final_metrics.json")) as f:
    metrics = json.load(f)
  params = stage_eval.restore_params(model, model_dir)
  # gin's run file registered this stage's task under this name while training.
  sampled = stage_eval.sample_heldout(model, params, "musiclm_synthetic_stage")
  return {
    "stage": stage,
    "params": model.num_params(),
    "steps": metrics["step"],
    "train_loss": metrics["loss"],
    "eval_loss": metrics.get("eval/loss", float("nan")),
    "eval_accuracy": metrics.get("eval/accuracy", float("nan")),
    "seconds": time.perf_counter() - start,
    **sampled,
  }


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(prog="musiclm-jax quickstart")
  parser.add_argument("--out_dir", default="runs/quickstart")
  parser.add_argument("--num_steps", type=int, default=300)
  args = parser.parse_args(argv)
  rows = [_run_stage(stage, args.out_dir, args.num_steps) for stage in STAGES]
  print("\n| stage | params | steps | train loss | eval loss | eval acc | free-run match | s |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(
      f"| {r['stage']} | {r['params']:,} | {r['steps']} | {r['train_loss']:.3f} | "
      f"{r['eval_loss']:.3f} | {r['eval_accuracy']:.3f} | {r['sampled_token_accuracy']:.3f} "
      f"| {r['seconds']:.0f} |"
    )
  with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
    json.dump(rows, f, indent=2)
  print(
    f"\nWrote {args.out_dir}/summary.json. What ran: three tiny stage LMs trained on structured "
    "synthetic token streams (stand-ins for SoundStream / w2v-BERT / MuLan tokens, which later "
    "issues add), then KV-cached sampling of held-out targets at the paper's temperatures."
  )
  return 0
