"""One prepared accelerator benchmark: paper-size training, decoding and codec speed in a budget.

  python -m musiclm_jax.benchmarks.gpu [--out=DIR] [--budget_s=420] [--size=paper|tiny]
      [--remat_policy=dots_with_no_batch_dims] [--attention_impl=xla|dot_product_attention]

A lent accelerator's image has jax, flax, optax, orbax and numpy, but not gin, seqio,
TensorFlow, TFDS or Beam, and nothing can be installed there. So this module builds its configs
in Python (equal to the gin size files: `tests/benchmarks/gpu_test.py` checks it), makes its
tokens and audio synthetically, and imports only code paths that need nothing else (tested in
a subprocess where those imports fail).

Parts, each with a share of `--budget_s` (compiles count against the budget but not in the
figures; a part whose share is spent before it starts is skipped, one that fails, e.g. out of
memory, is recorded with its error, and the others go on):
- train: the semantic and coarse stage LMs on one device, bf16 compute and fp32 params, steady
  step time, tokens/s and MFU (model FLOPs over the device's bf16 peak);
- decode: the coarse stage LM (its 262-token prompt, 1,024 new tokens, KV cache) at batch 1 and
  64, tokens/s and the fraction of the HBM roofline (weights + mean filled KV bytes per step over
  the copy bandwidth measured here);
- codec: SoundStream encode/decode real-time factor on 10 s at batch 1 and 16.
After every part, DIR/gpu_benchmark.json and DIR/gpu_benchmark.md (tables for BENCHMARKS.md)
are rewritten, so whatever finished survives a later failure or a kill.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from musiclm_jax.benchmarks import codec as codec_benchmarks
from musiclm_jax.benchmarks import stage_lm as stage_lm_benchmarks
from musiclm_jax.decoding import sampling
from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.models.stage_lm import StageLM, train_flops_per_token
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.runtime import hardware
from musiclm_jax.stages import StageLayout, TokenSpec
from musiclm_jax.tokenizers.rvq import RVQConfig
from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig
from musiclm_jax.training.optimizers import OptimizerConfig, make_optimizer
from musiclm_jax.training.trainer import Trainer

# gin/models/transformer_{paper,tiny}.gin, gin/models/tokens/{paper,tiny}.gin and the stages'
# CROP_SECONDS, in Python.
TRANSFORMERS = {
  "paper": TransformerConfig(
    num_layers=24,
    num_heads=16,
    head_dim=64,
    d_model=1024,
    d_ff=4096,
    dropout_rate=0.1,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dtype="bfloat16",
    param_dtype="float32",
    scan_layers=True,
    remat_policy="dots_with_no_batch_dims",
  ),
  "tiny": TransformerConfig(
    num_layers=2,
    num_heads=2,
    head_dim=16,
    d_model=32,
    d_ff=64,
    dropout_rate=0.0,
    relative_attention_num_buckets=16,
    relative_attention_max_distance=64,
    scan_layers=True,
  ),
}
TOKENS = {
  "paper": TokenSpec(),
  "tiny": TokenSpec.tiny(),
}
CROP_SECONDS = {
  "paper": {"semantic": 30.0, "coarse": 10.0, "fine": 3.0},
  "tiny": {"semantic": 4.0, "coarse": 2.0, "fine": 1.0},
}
# gin/models/soundstream/paper.gin is SoundStreamConfig's defaults; tiny is a small SEANet.
CODECS = {
  "paper": SoundStreamConfig(),
  "tiny": SoundStreamConfig(
    channels=4,
    channel_mults=(1, 2),
    strides=(4, 5),
    embedding_dim=8,
    rvq=RVQConfig(num_levels=2, codebook_size=16, dim=8),
  ),
}
# Per size: (train batch, decode batch sizes, decode new tokens, codec seconds, codec batches).
WORKLOADS = {
  "paper": dict(train_batch=16, decode_batches=(1, 64), new_tokens=1024, codec=(10.0, (1, 16))),
  "tiny": dict(train_batch=4, decode_batches=(1, 4), new_tokens=16, codec=(0.5, (1, 2))),
}
# Shares of the budget, in order.
PARTS = (("train_semantic", 0.3), ("train_coarse", 0.3), ("decode", 0.3), ("codec", 0.1))


def stage_model(size: str, stage: str, **overrides: Any) -> StageLM:
  """The `size` stage LM of `stage`, as gin/models/<stage>/<size>.gin builds it."""
  config = dataclasses.replace(TRANSFORMERS[size], **overrides)
  layout = StageLayout(stage, TOKENS[size], CROP_SECONDS[size][stage])
  return StageLM(config, layout, codebook_softmax=True)


class Budget:
  """Wall-clock budget split into consecutive shares (what a part leaves goes to the next)."""

  def __init__(self, total_s: float):
    self.start = time.perf_counter()
    self.total_s = total_s
    self.deadline = self.start

  def begin(self, share: float) -> float:
    """Starts a part: its deadline is now + its share of the budget, capped by the end."""
    end = self.start + self.total_s
    self.deadline = min(end, max(self.deadline, time.perf_counter()) + share * self.total_s)
    return self.deadline - time.perf_counter()

  def left(self) -> float:
    return self.deadline - time.perf_counter()


def _timed_steps(step: Callable[[], Any], budget: Budget, max_steps: int) -> list[float]:
  """Runs `step` (blocked until ready) until `max_steps` or the part's deadline; wall seconds each."""
  times = []
  while len(times) < max_steps and (not times or budget.left() > times[-1]):
    start = time.perf_counter()
    jax.block_until_ready(step())
    times.append(time.perf_counter() - start)
  return times


def bench_train(size: str, stage: str, budget: Budget, **overrides: Any) -> dict[str, Any]:
  """Steady-state train step of one stage LM on one device."""
  model = stage_model(size, stage, **overrides)
  batch_size = WORKLOADS[size]["train_batch"]
  partitioner = Partitioner(MeshConfig(num_devices=1))
  trainer = Trainer(model, make_optimizer(OptimizerConfig()), partitioner, batch_size=batch_size)
  compile_start = time.perf_counter()
  state = trainer.init_state(0)
  batch = partitioner.shard_batch(jax.device_get(_random_batch(model, batch_size)))
  holder = {"state": state}

  def step():
    holder["state"], metrics = trainer.train_step(holder["state"], batch)
    return metrics

  jax.block_until_ready(step())  # compile (and one step)
  compile_s = time.perf_counter() - compile_start
  times = _timed_steps(step, budget, max_steps=20)
  step_s = statistics.median(times)
  tokens = batch_size * model.sequence_length
  flops = tokens * train_flops_per_token(model.config, model.vocab_size, model.sequence_length)
  peak = hardware.peak_flops()
  return {
    "stage": stage,
    "params": model.num_params(),
    "batch": batch_size,
    "sequence_length": model.sequence_length,
    "remat_policy": model.config.remat_policy,
    "attention_impl": model.config.attention_impl,
    "compile_and_first_step_s": compile_s,
    "timed_steps": len(times),
    "step_s": step_s,
    "tokens_per_s": tokens / step_s,
    "mfu": flops / step_s / peak if peak else None,
  }


def _random_batch(model: StageLM, batch_size: int) -> dict[str, jax.Array]:
  """Random ids in the stage's vocabulary, the prefix marked as the layout marks it."""
  tokens = jax.random.randint(
    jax.random.key(0), (batch_size, model.sequence_length), 2, model.layout.vocab_size
  )
  prefix = jnp.arange(model.sequence_length) <= model.layout.inputs_length
  return dict(
    model.zeros_batch(batch_size),
    decoder_target_tokens=tokens,
    decoder_input_tokens=jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1],
    decoder_loss_weights=jnp.broadcast_to(~prefix, tokens.shape).astype(jnp.int32),
    decoder_causal_attention=jnp.broadcast_to(prefix, tokens.shape).astype(jnp.int32),
  )


def copy_bandwidth(num_bytes: int, repeats: int = 5) -> float:
  """Device memory bytes/s of an elementwise pass (one read and one write of every byte)."""
  x = jnp.ones((num_bytes // 4,), jnp.float32)
  double = jax.jit(lambda x: x * 2.0)
  jax.block_until_ready(double(x))  # compile
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(double(x))
    best = min(best, time.perf_counter() - start)
  return 2 * x.nbytes / best


def bench_decode(size: str, budget: Budget, **overrides: Any) -> list[dict[str, Any]]:
  """Cached sampling of the coarse stage after its own prompt length, at each batch size."""
  model = stage_model(size, "coarse", **overrides)
  workload = WORKLOADS[size]
  context = model.layout.inputs_length + 1  # BOS + MuLan + semantic tokens
  new_tokens = min(workload["new_tokens"], model.sequence_length - context)
  params = stage_lm_benchmarks.random_params(model)
  param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  bandwidth = copy_bandwidth(2**30 if size == "paper" else 2**24)
  cfg = model.config
  rows = []
  for batch in workload["decode_batches"]:
    if budget.left() <= 0:
      break
    prompt = jax.random.randint(jax.random.key(1), (batch, context), 2, model.layout.vocab_size)
    logits, cache = jax.jit(model.prefill, static_argnums=2)(params, prompt, context + new_tokens)

    @jax.jit
    def sample(params, logits, cache, rng):
      tokens_to_logits = model.tokens_to_logits_fn(params)
      return sampling.temperature_sample(logits, cache, tokens_to_logits, rng, new_tokens).tokens

    def run(params=params, logits=logits, cache=cache):
      return sample(params, logits, cache, jax.random.key(2))

    jax.block_until_ready(run())  # compile
    times = _timed_steps(run, budget, max_steps=3)
    seconds = statistics.median(times)
    mean_filled = context + new_tokens / 2
    kv_bytes = 2 * cfg.num_layers * batch * cfg.num_heads * cfg.head_dim * mean_filled
    kv_bytes *= jnp.dtype(cfg.compute_dtype).itemsize
    step_s = seconds / new_tokens
    rows.append(
      {
        "stage": "coarse",
        "batch": batch,
        "context": context,
        "new_tokens": new_tokens,
        "tokens_per_s": batch * new_tokens / seconds,
        "ms_per_step": 1000 * step_s,
        "bytes_per_step": param_bytes + kv_bytes,
        "measured_bandwidth": bandwidth,
        "roofline_fraction": (param_bytes + kv_bytes) / step_s / bandwidth,
      }
    )
  return rows


def bench_codec(size: str, budget: Budget) -> list[dict[str, Any]]:
  """SoundStream encode/decode speed (random weights) on the workload's audio length."""
  del budget  # one call per batch size; the share only decides whether the part starts
  seconds, batches = WORKLOADS[size]["codec"]
  return codec_benchmarks.bench_codec(CODECS[size], seconds=seconds, batch_sizes=batches)


def _markdown(report: dict[str, Any]) -> str:
  """The report as markdown tables, ready for BENCHMARKS.md."""
  lines = [f"Device: {report['device']} (jax {report['jax']}), size {report['size']}.", ""]
  for name, part in report["parts"].items():
    lines.append(f"**{name}**" + (f": {part['status']}" if part["status"] != "ok" else ""))
    rows = part.get("rows", [])
    if rows:
      keys = list(rows[0])
      lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
      for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k)) for k in keys) + " |")
    lines.append("")
  return "\n".join(lines)


def _cell(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return "—" if value is None else str(value)


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Runs every part in its share of the budget, rewriting the report after each."""
  overrides = {k: v for k, v in (("remat_policy", args.remat_policy),) if v}
  if args.attention_impl:
    overrides["attention_impl"] = args.attention_impl
  parts: dict[str, Callable[[Budget], Any]] = {
    "train_semantic": lambda b: [bench_train(args.size, "semantic", b, **overrides)],
    "train_coarse": lambda b: [bench_train(args.size, "coarse", b, **overrides)],
    "decode": lambda b: bench_decode(args.size, b, **overrides),
    "codec": lambda b: bench_codec(args.size, b),
  }
  report = {
    "device": jax.devices()[0].device_kind,
    "jax": jax.__version__,
    "size": args.size,
    "budget_s": args.budget_s,
    "parts": {},
  }
  budget = Budget(args.budget_s)
  os.makedirs(args.out, exist_ok=True)
  for name, share in PARTS:
    if budget.begin(share) <= 0:
      report["parts"][name] = {"status": "skipped: the budget was spent"}
    else:
      start = time.perf_counter()
      try:
        report["parts"][name] = {"status": "ok", "rows": parts[name](budget)}
      except Exception as e:  # noqa: BLE001 -- out of memory and the like: record, go on
        traceback.print_exc()
        report["parts"][name] = {"status": f"failed: {type(e).__name__}: {str(e)[:300]}"}
      report["parts"][name]["wall_s"] = time.perf_counter() - start
    _write(args.out, report)
    print(f"{name}: {report['parts'][name]['status']}", flush=True)
  return report


def _write(out: str, report: dict[str, Any]) -> None:
  with open(os.path.join(out, "gpu_benchmark.json"), "w") as f:
    json.dump(report, f, indent=2, default=float)
  with open(os.path.join(out, "gpu_benchmark.md"), "w") as f:
    f.write(_markdown(report))


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="gpu_benchmark")
  p.add_argument("--budget_s", type=float, default=420.0)
  p.add_argument("--size", choices=sorted(TRANSFORMERS), default="paper")
  p.add_argument("--remat_policy", default=None, help="override the size's remat policy")
  p.add_argument("--attention_impl", default=None, help="xla or dot_product_attention")
  args = p.parse_args(argv)
  report = run(args)
  print(_markdown(report))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
