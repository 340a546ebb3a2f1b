"""Speed benchmarks behind `musiclm-jax bench`: training throughput and decoding speed.

Decoding is measured both ways in one process: with the KV cache (prefill once, then one token
per step inside `lax.while_loop`) and by full recomputation (the whole sequence through the model
for every new token), so the ratio is measured on the same machine at the same moment.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax.benchmarks import timing
from musiclm_jax.decoding import sampling
from musiclm_jax.models.stage_lm import StageLM, train_flops_per_token
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.runtime import hardware
from musiclm_jax.training.optimizers import OptimizerConfig, make_optimizer
from musiclm_jax.training.trainer import Trainer


def bench_train(
  model: StageLM,
  partitioner: Partitioner,
  *,
  batch_size: int,
  num_steps: int = 10,
  optimizer: OptimizerConfig = OptimizerConfig(),
) -> dict[str, float]:
  """Train-step time, tokens/s and (where the device's peak is known) MFU."""
  trainer = Trainer(model, make_optimizer(optimizer), partitioner, batch_size=batch_size)
  state = trainer.init_state(0)
  key = jax.random.key(0)
  tokens = jax.random.randint(key, (batch_size, model.sequence_length), 2, model.layout.vocab_size)
  batch = dict(
    model.zeros_batch(batch_size),
    decoder_target_tokens=tokens,
    decoder_input_tokens=jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1],
    decoder_loss_weights=jnp.ones_like(tokens),
  )
  batch = partitioner.shard_batch(jax.device_get(batch))
  state, _ = trainer.train_step(state, batch)  # compile
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  step_time = (time.perf_counter() - start) / num_steps
  tokens_per_step = batch_size * model.sequence_length
  out = {
    "batch_size": batch_size,
    "sequence_length": model.sequence_length,
    "num_params": model.num_params(),
    "step_time_s": step_time,
    "tokens_per_s": tokens_per_step / step_time,
  }
  peak = hardware.peak_flops()
  if peak:
    flops = tokens_per_step * train_flops_per_token(
      model.config, model.vocab_size, model.sequence_length
    )
    out["mfu"] = flops / step_time / (peak * jax.device_count())
  return out


def random_params(model: StageLM, seed: int = 0):
  """Unboxed random parameters of `model` (speed does not depend on their values)."""
  init = jax.jit(lambda r: model.get_initial_variables(r)["params"])
  return nn.unbox(init(jax.random.key(seed)))


def _cached_decoder(model: StageLM, context: int, new_tokens: int, cache_length: int = 0):
  """jit(params, prompt, rng) -> tokens: prefill `context` tokens, sample `new_tokens`.

  The cache holds max(cache_length, context + new_tokens) positions.
  """

  def run(params, prompt, rng):
    logits, cache = model.prefill(params, prompt, max(cache_length, context + new_tokens))
    tokens_to_logits = model.tokens_to_logits_fn(params)
    return sampling.temperature_sample(logits, cache, tokens_to_logits, rng, new_tokens).tokens

  return jax.jit(run)


def _uncached_decoder(model: StageLM, context: int, new_tokens: int):
  """jit(params, prompt, rng) -> tokens: every step reruns the whole [batch, context+new] buffer."""
  total = context + new_tokens

  def run(params, prompt, rng):
    buffer = jnp.pad(prompt, ((0, 0), (0, new_tokens)))
    prefix = jnp.broadcast_to(jnp.arange(total) < context, buffer.shape).astype(jnp.int32)

    def step(i, buffer):
      logits = model.module.apply({"params": params}, buffer, prefix)
      position = context + i - 1
      next_logits = jax.lax.dynamic_index_in_dim(logits, position, axis=1, keepdims=False)
      token, _ = sampling.sample_logits(next_logits, jax.random.fold_in(rng, i))
      return buffer.at[:, context + i].set(token)

    return jax.lax.fori_loop(0, new_tokens, step, buffer)[:, context:]

  return jax.jit(run)


def bench_decode(
  model: StageLM,
  *,
  batch_sizes: Sequence[int],
  context_lengths: Sequence[int],
  new_tokens: int = 32,
  uncached_max_context: int = 2048,
  repeats: int = 3,
  cache_length: int = 0,
) -> list[dict[str, float]]:
  """Decode tokens/s with and without the KV cache for each (batch, context).

  `cache_length` preallocates the cache longer than context + new tokens (as a stage's decode
  does: its cache holds the whole sequence), to show that a step's cost follows the filled length;
  each row then also reports `ms_per_step`, a decode step's time without the prefill.
  """
  params = random_params(model)
  rows = []
  for context in context_lengths:
    cached = _cached_decoder(model, context, new_tokens, cache_length)
    uncached = _uncached_decoder(model, context, new_tokens)
    for batch in batch_sizes:
      prompt = jax.random.randint(jax.random.key(1), (batch, context), 2, model.layout.vocab_size)
      rng = jax.random.key(2)
      row = {
        "batch_size": batch,
        "context": context,
        "new_tokens": new_tokens,
        "cache_length": max(cache_length, context + new_tokens),
      }
      seconds = timing.median_seconds(functools.partial(cached, params, prompt, rng), repeats)
      row["cached_tokens_per_s"] = batch * new_tokens / seconds
      if cache_length:
        row["ms_per_step"] = _ms_per_step(
          model, params, prompt, rng, new_tokens, row["cache_length"], repeats
        )
      if context <= uncached_max_context:
        seconds = timing.median_seconds(
          functools.partial(uncached, params, prompt, rng), max(1, repeats // 2)
        )
        row["uncached_tokens_per_s"] = batch * new_tokens / seconds
        row["speedup"] = row["cached_tokens_per_s"] / row["uncached_tokens_per_s"]
      rows.append(row)
  return rows


def _ms_per_step(
  model: StageLM, params, prompt, rng, new_tokens: int, cache_length: int, repeats: int
) -> float:
  """Milliseconds per decode step at this context and cache length, the prefill not timed.

  The prompt is prefilled once; only `temperature_sample`'s loop over the filled cache is timed.
  """
  logits, cache = jax.jit(model.prefill, static_argnums=2)(params, prompt, cache_length)

  @jax.jit
  def sample(params, logits, cache, rng):
    tokens_to_logits = model.tokens_to_logits_fn(params)
    return sampling.temperature_sample(logits, cache, tokens_to_logits, rng, new_tokens).tokens

  seconds = timing.median_seconds(functools.partial(sample, params, logits, cache, rng), repeats)
  return 1000 * seconds / new_tokens
