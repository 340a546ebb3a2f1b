"""Temperature sampling with a KV cache, inside one `lax.while_loop`.

The sampler knows nothing of models or stages. The model wrapper has already run the prompt
through the network once (prefill) and hands over the resulting cache plus the logits that predict
the first new token; after that the sampler drives a `tokens_to_logits(token, cache)` callback one
token at a time. Step 0 is decoded before the loop from the prefill logits, so the loop body is
"feed the previous token, then decode one step" and the model is never called after the last step
nor once every example has stopped.

Logit processing (allowed id range, temperature, top-k, top-p) is split into small public functions
so that each can be tested and reused (e.g. by a scorer that wants the same distribution).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax import lax

PyTree = Any

PAD_ID = 0
# -inf rather than a large finite value: masked ids then get exactly zero probability whatever the
# temperature, and log-probs of sampled ids stay finite because a sampled id is never masked.
NEG_INF = -jnp.inf


class TokensToLogits(Protocol):
  """Model callback for one decoding step."""

  def __call__(self, tokens: jax.Array, cache: PyTree) -> tuple[jax.Array, PyTree]:
    """Feeds the token just chosen and predicts the next one.

    Args:
      tokens: [batch, 1] int32, the token emitted at the previous step (PAD for finished examples).
      cache: the model's decoding state; it tracks its own write position.

    Returns:
      (logits [batch, vocab] float32 for the next position, new cache). The new cache must have
      the same tree structure, shapes and dtypes as the old one (it is a while-loop carry).
    """
    ...


class SamplingOutput(NamedTuple):
  """Result of `temperature_sample`.

  Attributes:
    tokens: [batch, num_decode_steps] int32; PAD (0) after an example stopped.
    log_probs: [batch] float32 sum of the log-probs, under the processed distribution, of sampled
      (non-forced) tokens up to and including EOS. Greedy (temperature 0) tokens add 0, the
      log-prob of a point mass.
    lengths: [batch] int32 number of tokens produced before and including EOS.
  """

  tokens: jax.Array
  log_probs: jax.Array
  lengths: jax.Array


def mask_outside_range(logits: jax.Array, lo: jax.Array | int, hi: jax.Array | int) -> jax.Array:
  """Masks every id outside the half-open range [lo, hi).

  Args:
    logits: [..., vocab].
    lo: int scalar or array of shape logits.shape[:-1]; first allowed id.
    hi: like `lo`; one past the last allowed id.

  Returns:
    [..., vocab] logits with -inf outside [lo, hi).
  """
  ids = jnp.arange(logits.shape[-1], dtype=jnp.int32)
  lo = jnp.asarray(lo, jnp.int32)[..., None]
  hi = jnp.asarray(hi, jnp.int32)[..., None]
  return jnp.where((ids >= lo) & (ids < hi), logits, NEG_INF)


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest logits of each row and masks the rest.

  Ids tied with the k-th largest logit are all kept: a threshold compare, unlike a scatter of the
  top-k indices, needs no gather across a vocab axis that may be sharded.

  Args:
    logits: [..., vocab].
    k: static; 0 (or k >= vocab) disables the mask.

  Returns:
    [..., vocab] logits with -inf below the k-th largest value.
  """
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth_largest = lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits >= kth_largest, logits, NEG_INF)


def top_p_mask(logits: jax.Array, p: float | jax.Array) -> jax.Array:
  """Nucleus mask: keeps the smallest set of most likely ids whose probability reaches p.

  An id is kept when the probability of all strictly more likely ids is below p, so the most
  likely id is always kept and p >= 1 keeps everything.

  Args:
    logits: [..., vocab].
    p: scalar or array of shape logits.shape[:-1], in (0, 1].

  Returns:
    [..., vocab] logits with -inf outside the nucleus.
  """
  p = jnp.asarray(p, jnp.float32)[..., None]
  sorted_logits = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)
  probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
  # Exclusive cumsum by shifting, not `cumsum - probs`, which loses the small tail to rounding.
  mass_before = jnp.cumsum(probs, axis=-1)[..., :-1]
  mass_before = jnp.concatenate([jnp.zeros_like(mass_before[..., :1]), mass_before], axis=-1)
  is_first = jnp.arange(logits.shape[-1]) == 0
  keep_sorted = (mass_before < p) | is_first
  threshold = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
  keep = (logits >= threshold) | (p >= 1.0)
  return jnp.where(keep, logits, NEG_INF)


def apply_temperature(logits: jax.Array, temperature: float | jax.Array) -> jax.Array:
  """Divides logits by the temperature; rows with temperature 0 are left unscaled.

  Args:
    logits: [batch, vocab].
    temperature: scalar or [batch]; 0 marks a greedy row, whose argmax scaling would not change.

  Returns:
    [batch, vocab] scaled logits.
  """
  t = jnp.asarray(temperature, jnp.float32)[..., None]
  return logits / jnp.where(t == 0, 1.0, t)


def process_logits(
  logits: jax.Array,
  *,
  temperature: float | jax.Array = 1.0,
  top_k: int = 0,
  top_p: float | jax.Array = 1.0,
  allowed_range: jax.Array | None = None,
) -> jax.Array:
  """Applies, in order, the allowed-range mask, temperature, top-k and top-p.

  Args:
    logits: [batch, vocab].
    temperature: scalar or [batch]; rows at 0 are not scaled (see `apply_temperature`).
    top_k: static; 0 = off.
    top_p: scalar or [batch]; a Python value >= 1 skips the sort entirely.
    allowed_range: [2] or [batch, 2] int32 half-open [lo, hi), or None for all ids.

  Returns:
    [batch, vocab] float32 logits of the distribution to sample from.
  """
  logits = logits.astype(jnp.float32)
  if allowed_range is not None:
    logits = mask_outside_range(logits, allowed_range[..., 0], allowed_range[..., 1])
  logits = apply_temperature(logits, temperature)
  logits = top_k_mask(logits, top_k)
  if not (isinstance(top_p, int | float) and top_p >= 1.0):
    logits = top_p_mask(logits, top_p)
  return logits


def _per_row(rng: jax.Array) -> bool:
  """Whether `rng` holds one key per row: a typed key array [batch] or raw keys [batch, 2]."""
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return rng.ndim == 1
  return rng.ndim == 2


def _fold_in(rng: jax.Array, i: jax.Array) -> jax.Array:
  """`fold_in(rng, i)`, per row for per-row keys."""
  if _per_row(rng):
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(rng, i)
  return jax.random.fold_in(rng, i)


def sample_logits(
  logits: jax.Array,
  rng: jax.Array,
  *,
  temperature: float | jax.Array = 1.0,
  top_k: int = 0,
  top_p: float | jax.Array = 1.0,
  allowed_range: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Draws one token per row; rows with temperature 0 take the argmax.

  Args:
    logits: [batch, vocab] raw model logits.
    rng: a PRNG key (every row gets its own noise from it), or one key per row ([batch]).
    temperature, top_k, top_p, allowed_range: as in `process_logits`.

  Returns:
    tokens: [batch] int32.
    log_probs: [batch] float32 log-prob of each token under the processed distribution (0 for
      greedy rows).
  """
  processed = process_logits(
    logits, temperature=temperature, top_k=top_k, top_p=top_p, allowed_range=allowed_range
  )
  if _per_row(rng):
    sampled = jax.vmap(lambda key, row: jax.random.categorical(key, row))(rng, processed)
  else:
    sampled = jax.random.categorical(rng, processed, axis=-1)
  log_probs = jnp.take_along_axis(jax.nn.log_softmax(processed), sampled[:, None], axis=-1)[:, 0]
  # Range/top-k/top-p never drop the argmax of the range-masked logits, so greedy is just that.
  greedy = jnp.asarray(temperature, jnp.float32) == 0
  tokens = jnp.where(greedy, jnp.argmax(processed, axis=-1), sampled)
  log_probs = jnp.where(greedy, 0.0, log_probs)
  return tokens.astype(jnp.int32), log_probs


class _Options(NamedTuple):
  """Per-call settings shared by every step (closed over, not carried by the loop)."""

  rng: jax.Array
  temperature: float | jax.Array
  top_k: int
  top_p: float | jax.Array
  eos_id: int | None
  forced_tokens: jax.Array | None
  forced_mask: jax.Array | None
  allowed_id_ranges: jax.Array | None


class _LoopState(NamedTuple):
  step: jax.Array  # [] int32, the next step to decode.
  cache: PyTree
  tokens: jax.Array  # [batch, num_decode_steps] int32
  done: jax.Array  # [batch] bool, example has emitted EOS.
  log_probs: jax.Array  # [batch] float32
  lengths: jax.Array  # [batch] int32


def _decode_step(state: _LoopState, logits: jax.Array, opts: _Options) -> _LoopState:
  """Chooses token `state.step` from `logits` [batch, vocab] and records it."""
  i = state.step
  allowed = None if opts.allowed_id_ranges is None else opts.allowed_id_ranges[..., i, :]
  token, log_prob = sample_logits(
    logits,
    _fold_in(opts.rng, i),
    temperature=opts.temperature,
    top_k=opts.top_k,
    top_p=opts.top_p,
    allowed_range=allowed,
  )
  scored = ~state.done
  if opts.forced_mask is not None:
    forced = opts.forced_mask[:, i]
    token = jnp.where(forced, opts.forced_tokens[:, i].astype(jnp.int32), token)
    scored &= ~forced
  token = jnp.where(state.done, PAD_ID, token)
  done = state.done if opts.eos_id is None else state.done | (token == opts.eos_id)
  return _LoopState(
    step=i + 1,
    cache=state.cache,
    tokens=lax.dynamic_update_index_in_dim(state.tokens, token, i, axis=1),
    done=done,
    log_probs=state.log_probs + jnp.where(scored, log_prob, 0.0),
    lengths=state.lengths + (~state.done).astype(jnp.int32),
  )


def _decode_loop(
  first_logits: jax.Array,
  cache: PyTree,
  tokens_to_logits: TokensToLogits,
  num_decode_steps: int,
  opts: _Options,
) -> _LoopState:
  """Decodes step 0 from the prefill logits, then the rest in one while loop."""
  batch = first_logits.shape[0]
  state = _LoopState(
    step=jnp.zeros((), jnp.int32),
    cache=cache,
    tokens=jnp.full((batch, num_decode_steps), PAD_ID, jnp.int32),
    done=jnp.zeros((batch,), bool),
    log_probs=jnp.zeros((batch,), jnp.float32),
    lengths=jnp.zeros((batch,), jnp.int32),
  )
  state = _decode_step(state, first_logits, opts)

  def cond_fn(s: _LoopState) -> jax.Array:
    return (s.step < num_decode_steps) & ~jnp.all(s.done)

  def body_fn(s: _LoopState) -> _LoopState:
    previous = lax.dynamic_index_in_dim(s.tokens, s.step - 1, axis=1)  # [batch, 1]
    logits, cache = tokens_to_logits(previous, s.cache)
    return _decode_step(s._replace(cache=cache), logits, opts)

  return lax.while_loop(cond_fn, body_fn, state)


def temperature_sample(
  first_logits: jax.Array,
  cache: PyTree,
  tokens_to_logits: TokensToLogits,
  rng: jax.Array,
  num_decode_steps: int,
  *,
  temperature: float | jax.Array = 1.0,
  top_k: int = 0,
  top_p: float | jax.Array = 1.0,
  eos_id: int | None = None,
  forced_tokens: jax.Array | None = None,
  forced_mask: jax.Array | None = None,
  allowed_id_ranges: jax.Array | None = None,
) -> SamplingOutput:
  """Samples `num_decode_steps` tokens after a prefilled prompt.

  Step i processes its logits (allowed range, temperature, top-k, top-p), samples with
  `fold_in(rng, i)`, replaces the sample by the forced token where `forced_mask` is set, writes
  PAD for examples already done, and, if steps remain and some example is still running, feeds
  the token to `tokens_to_logits`. An emitted EOS, sampled or forced, ends its example.

  Args:
    first_logits: [batch, vocab] logits predicting the first decoded position (from prefill).
    cache: decoding state after prefill, any pytree (arrays may be sharded).
    tokens_to_logits: model callback, see `TokensToLogits`.
    rng: PRNG key; the same key gives the same output. One key per example ([batch]) makes each
      example's tokens a function of its own key, whatever its batch-mates.
    num_decode_steps: static number of tokens to decode, >= 1.
    temperature: scalar or [batch]; 0 means greedy (per example for an array).
    top_k: static; 0 = off.
    top_p: scalar or [batch] nucleus mass; 1.0 = off.
    eos_id: static; None never stops early.
    forced_tokens: [batch, num_decode_steps] int32 tokens to emit instead of samples.
    forced_mask: [batch, num_decode_steps] bool, where to force; defaults to everywhere when
      only `forced_tokens` is given.
    allowed_id_ranges: [num_decode_steps, 2] (or [batch, num_decode_steps, 2]) int32 half-open
      [lo, hi) of ids allowed at each step.

  Returns:
    `SamplingOutput` with tokens [batch, num_decode_steps], log_probs [batch], lengths [batch].
  """
  if num_decode_steps < 1:
    raise ValueError(f"num_decode_steps must be >= 1, got {num_decode_steps}")
  if forced_mask is not None and forced_tokens is None:
    raise ValueError("forced_mask needs forced_tokens")
  if forced_tokens is not None and forced_mask is None:
    forced_mask = jnp.ones(forced_tokens.shape, bool)
  opts = _Options(
    rng=rng,
    temperature=temperature,
    top_k=top_k,
    top_p=top_p,
    eos_id=eos_id,
    forced_tokens=forced_tokens,
    forced_mask=forced_mask,
    allowed_id_ranges=allowed_id_ranges,
  )
  state = _decode_loop(first_logits, cache, tokens_to_logits, num_decode_steps, opts)
  return SamplingOutput(tokens=state.tokens, log_probs=state.log_probs, lengths=state.lengths)
