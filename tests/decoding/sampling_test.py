"""Tests for the cached temperature sampler.

The models here are tiny pure-jnp things made in the test (a bigram table, a small recurrent net),
so the sampler is checked against plain Python reference loops, not against our own models.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from musiclm_jax.decoding import sampling

VOCAB = 16
HIDDEN = 8
EOS = 1


class RecurrentModel:
  """A tiny recurrent net: logits depend on the last token and a hidden state in the cache.

  `traces` counts how often the callback is traced (a Python side effect, so it runs only while
  JAX traces, never while the compiled loop runs).
  """

  def __init__(self, seed: int):
    k_emb, k_rec, k_out, k_bigram = jax.random.split(jax.random.key(seed), 4)
    self.emb = jax.random.normal(k_emb, (VOCAB, HIDDEN))
    self.rec = 0.5 * jax.random.normal(k_rec, (HIDDEN, HIDDEN))
    self.out = jax.random.normal(k_out, (HIDDEN, VOCAB))
    self.bigram = 2.0 * jax.random.normal(k_bigram, (VOCAB, VOCAB))
    self.traces = 0

  def init_cache(self, batch: int) -> dict:
    # A nested structure on purpose: the sampler must carry any pytree.
    return {"state": {"h": jnp.zeros((batch, HIDDEN))}, "step": jnp.zeros((), jnp.int32)}

  def __call__(self, tokens: jax.Array, cache: dict) -> tuple[jax.Array, dict]:
    self.traces += 1
    token = tokens[:, 0]
    h = jnp.tanh(cache["state"]["h"] @ self.rec + self.emb[token])
    logits = h @ self.out + self.bigram[token]
    return logits, {"state": {"h": h}, "step": cache["step"] + 1}


class BigramModel:
  """Logits are a fixed table row chosen by the last token; records every call it runs."""

  def __init__(self, table: np.ndarray):
    self.table = jnp.asarray(table, jnp.float32)
    self.steps_run: list[int] = []

  def __call__(self, tokens: jax.Array, cache: jax.Array) -> tuple[jax.Array, jax.Array]:
    # The cache is the step counter; the callback reports each call the compiled loop makes.
    jax.debug.callback(lambda s: self.steps_run.append(int(s)), cache)
    return self.table[tokens[:, 0]], cache + 1


def _first_logits(batch: int, seed: int = 0) -> jax.Array:
  return 2.0 * jax.random.normal(jax.random.key(seed), (batch, VOCAB))


def _mask_range(logits: np.ndarray, ranges: np.ndarray | None, i: int) -> np.ndarray:
  if ranges is None:
    return logits
  ids = np.arange(logits.shape[-1])
  lo, hi = ranges[i]
  return np.where((ids >= lo) & (ids < hi), logits, -np.inf)


def reference_greedy(
  first_logits, cache, model, n, *, eos_id=None, forced=None, mask=None, ranges=None
):
  """Step-by-step Python loop: argmax, forcing, EOS; returns (tokens, lengths)."""
  logits = np.asarray(first_logits)
  batch = logits.shape[0]
  done = np.zeros(batch, bool)
  lengths = np.zeros(batch, int)
  out = np.zeros((batch, n), int)
  for i in range(n):
    token = _mask_range(logits, ranges, i).argmax(-1)
    if mask is not None:
      token = np.where(mask[:, i], forced[:, i], token)
    token = np.where(done, sampling.PAD_ID, token)
    lengths += ~done
    out[:, i] = token
    if eos_id is not None:
      done |= token == eos_id
    if i + 1 < n:
      logits, cache = model(jnp.asarray(token)[:, None], cache)
      logits = np.asarray(logits)
  return out, lengths


def reference_log_probs(tokens, lengths, first_logits, cache, model, temperature, *, mask):
  """Teacher-forces `tokens`; sums log softmax(logits / T) over unforced steps before `lengths`."""
  logits = np.asarray(first_logits, np.float64)
  total = np.zeros(tokens.shape[0])
  for i in range(tokens.shape[1]):
    log_p = np.asarray(jax.nn.log_softmax(jnp.asarray(logits / temperature)))
    picked = log_p[np.arange(len(total)), tokens[:, i]]
    total += np.where(~mask[:, i] & (i < lengths), picked, 0.0)
    logits, cache = model(jnp.asarray(tokens[:, i])[:, None], cache)
    logits = np.asarray(logits, np.float64)
  return total


# Logit processors.


def test_mask_outside_range_per_row():
  logits = jnp.zeros((2, 6))
  out = sampling.mask_outside_range(logits, jnp.array([1, 3]), jnp.array([3, 6]))
  np.testing.assert_array_equal(np.isfinite(out), [[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]])


@pytest.mark.parametrize("k", [1, 3, 7])
def test_top_k_mask_keeps_exactly_the_k_largest(k):
  logits = jax.random.normal(jax.random.key(1), (4, 10))
  out = sampling.top_k_mask(logits, k)
  kept = np.isfinite(np.asarray(out))
  top = np.argsort(-np.asarray(logits), axis=-1)[:, :k]
  expected = np.zeros_like(kept)
  np.put_along_axis(expected, top, True, axis=-1)
  np.testing.assert_array_equal(kept, expected)
  np.testing.assert_array_equal(np.asarray(out)[kept], np.asarray(logits)[kept])


def test_top_k_zero_is_off():
  logits = jax.random.normal(jax.random.key(1), (2, 5))
  np.testing.assert_array_equal(sampling.top_k_mask(logits, 0), logits)


@pytest.mark.parametrize(
  "p, expected_ids",
  [(0.45, [0]), (0.75, [0, 1]), (0.85, [0, 1, 2]), (0.97, [0, 1, 2, 3]), (1.0, [0, 1, 2, 3, 4])],
)
def test_top_p_mask_keeps_smallest_set_reaching_p(p, expected_ids):
  probs = np.array([0.5, 0.3, 0.15, 0.04, 0.01])
  order = np.array([3, 0, 4, 1, 2])  # Shuffle so that the mask must undo its sort.
  logits = jnp.log(jnp.asarray(probs[order]))[None]
  kept = np.isfinite(np.asarray(sampling.top_p_mask(logits, p)))[0]
  np.testing.assert_array_equal(sorted(order[kept]), expected_ids)


def test_top_p_mask_per_row_and_tiny_p_keeps_argmax():
  logits = jnp.log(jnp.array([[0.1, 0.6, 0.3], [0.1, 0.6, 0.3]]))
  kept = np.isfinite(np.asarray(sampling.top_p_mask(logits, jnp.array([1e-6, 0.8]))))
  np.testing.assert_array_equal(kept, [[0, 1, 0], [0, 1, 1]])


def test_apply_temperature_leaves_greedy_rows():
  logits = jnp.array([[2.0, 4.0], [2.0, 4.0]])
  out = sampling.apply_temperature(logits, jnp.array([0.0, 2.0]))
  np.testing.assert_allclose(out, [[2.0, 4.0], [1.0, 2.0]])


# The decoding loop.


def test_greedy_matches_python_reference_loop():
  model = RecurrentModel(seed=0)
  batch, n = 4, 12
  first = _first_logits(batch)
  out = sampling.temperature_sample(
    first, model.init_cache(batch), model, jax.random.key(0), n, temperature=0.0
  )
  ref_tokens, ref_lengths = reference_greedy(first, model.init_cache(batch), model, n)
  np.testing.assert_array_equal(out.tokens, ref_tokens)
  np.testing.assert_array_equal(out.lengths, ref_lengths)
  np.testing.assert_array_equal(out.log_probs, np.zeros(batch))
  # The chain is not trivially constant, so a wrong cache hand-off would show.
  assert len(np.unique(ref_tokens)) > 3


def test_greedy_with_ranges_forcing_and_eos_matches_reference():
  model = RecurrentModel(seed=1)
  batch, n = 6, 10
  first = _first_logits(batch, seed=1)
  rng = np.random.default_rng(0)
  forced = rng.integers(2, VOCAB, (batch, n))
  mask = rng.random((batch, n)) < 0.3
  ranges = np.stack([np.full(n, 1), rng.integers(4, VOCAB + 1, n)], axis=-1)
  kwargs = dict(eos_id=EOS, forced=forced, mask=mask, ranges=ranges)
  ref_tokens, ref_lengths = reference_greedy(first, model.init_cache(batch), model, n, **kwargs)
  out = sampling.temperature_sample(
    first,
    model.init_cache(batch),
    model,
    jax.random.key(0),
    n,
    temperature=0.0,
    eos_id=EOS,
    forced_tokens=jnp.asarray(forced),
    forced_mask=jnp.asarray(mask),
    allowed_id_ranges=jnp.asarray(ranges),
  )
  np.testing.assert_array_equal(out.tokens, ref_tokens)
  np.testing.assert_array_equal(out.lengths, ref_lengths)
  assert (ref_lengths < n).any() and (ref_lengths == n).any()  # Some stop, some run out.


def test_sampling_frequencies_match_softmax_over_temperature():
  batch, vocab, temp = 16384, 6, 2.0
  first_row = jnp.array([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])
  table = np.random.default_rng(0).normal(size=(vocab, vocab)) * 2
  model = BigramModel(table)
  # Half the rows greedy, half at temperature `temp`: checks per-example temperature too.
  temperature = jnp.where(jnp.arange(batch) % 2 == 0, 0.0, temp)
  out = sampling.temperature_sample(
    jnp.tile(first_row, (batch, 1)),
    jnp.zeros((), jnp.int32),
    model,
    jax.random.key(3),
    2,
    temperature=temperature,
  )
  tokens = np.asarray(out.tokens)
  greedy, sampled = tokens[0::2], tokens[1::2]
  np.testing.assert_array_equal(greedy[:, 0], np.argmax(first_row))
  np.testing.assert_array_equal(greedy[:, 1], np.argmax(table[np.argmax(first_row)]))

  def max_error(samples, logits, t):
    freq = np.bincount(samples, minlength=vocab) / len(samples)
    return np.abs(freq - np.asarray(jax.nn.softmax(jnp.asarray(logits) / t))).max()

  # ~8k samples: a frequency's std is <= 0.006, and T=1 would be off by > 0.1.
  assert max_error(sampled[:, 0], first_row, temp) < 0.025
  assert max_error(sampled[:, 0], first_row, 1.0) > 0.1
  # Second step: conditional on the most common first token, through the model callback.
  t0 = np.bincount(sampled[:, 0]).argmax()
  assert max_error(sampled[sampled[:, 0] == t0, 1], table[t0], temp) < 0.04
  assert max_error(sampled[sampled[:, 0] == t0, 1], table[t0], 1.0) > 0.08


def test_log_probs_and_lengths_match_teacher_forced_reference():
  model = RecurrentModel(seed=2)
  batch, n, temp, eos = 16, 8, 1.5, 5
  first = _first_logits(batch, seed=2)
  mask = np.zeros((batch, n), bool)
  mask[:, :2] = True  # A forced prompt-like prefix is not scored.
  forced = np.full((batch, n), 3)
  out = sampling.temperature_sample(
    first,
    model.init_cache(batch),
    model,
    jax.random.key(5),
    n,
    temperature=temp,
    eos_id=eos,
    forced_tokens=jnp.asarray(forced),
    forced_mask=jnp.asarray(mask),
  )
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  np.testing.assert_array_equal(tokens[:, :2], 3)
  stopped = lengths < n
  assert stopped.any() and not stopped.all()  # Both kinds of example are exercised.
  np.testing.assert_array_equal(tokens[stopped, lengths[stopped] - 1], eos)
  after_end = np.arange(n) >= lengths[:, None]
  np.testing.assert_array_equal(tokens[after_end], sampling.PAD_ID)
  ref = reference_log_probs(tokens, lengths, first, model.init_cache(batch), model, temp, mask=mask)
  np.testing.assert_allclose(out.log_probs, ref, rtol=1e-4, atol=1e-4)


def test_top_k_and_top_p_only_sample_inside_their_sets():
  batch, vocab = 2048, 8
  row = jnp.array([0.0, 1.0, 2.0, 3.0, 2.5, -1.0, 0.5, 1.5])
  first = jnp.tile(row, (batch, 1))
  model = BigramModel(np.zeros((vocab, vocab)))

  def sample(**kwargs):
    out = sampling.temperature_sample(
      first, jnp.zeros((), jnp.int32), model, jax.random.key(0), 1, temperature=3.0, **kwargs
    )
    return set(np.asarray(out.tokens)[:, 0].tolist())

  assert sample(top_k=3) == {3, 4, 2}
  # At T=3, probs sorted are ~.20, .17, .14, .14, .12, ...: 0.4 needs the first three.
  scaled_probs = np.sort(np.asarray(jax.nn.softmax(row / 3.0)))[::-1]
  assert scaled_probs[:2].sum() < 0.4 <= scaled_probs[:3].sum()
  assert sample(top_p=0.4) == {3, 4, 2}
  assert len(sample()) == vocab  # Without either, everything shows up.


def test_allowed_ranges_respected_while_sampling():
  model = RecurrentModel(seed=3)
  batch, n = 64, 6
  ranges = jnp.array([[2, 6], [8, 16], [0, 3], [5, 6], [10, 12], [2, 14]])
  out = sampling.temperature_sample(
    _first_logits(batch),
    model.init_cache(batch),
    model,
    jax.random.key(1),
    n,
    temperature=5.0,
    allowed_id_ranges=ranges,
  )
  tokens = np.asarray(out.tokens)
  lo, hi = np.asarray(ranges).T
  assert ((tokens >= lo) & (tokens < hi)).all()
  assert (tokens[:, 5] != tokens[0, 5]).any()  # Actually sampling, not stuck on one id.


def _eos_table() -> np.ndarray:
  """Chains 2→3→4→5→EOS and 6↔7 (never ends), strongly enough to win at any sampling."""
  table = np.random.default_rng(0).normal(size=(8, 8))
  for src, dst in {2: 3, 3: 4, 4: 5, 5: EOS, 6: 7, 7: 6, EOS: 2, 0: 2}.items():
    table[src, dst] = 50.0
  return table


def _one_hot_logits(ids: list[int]) -> jax.Array:
  return 50.0 * jax.nn.one_hot(jnp.array(ids), 8)


def test_eos_stops_each_example_and_pads():
  model = BigramModel(_eos_table())
  out = sampling.temperature_sample(
    _one_hot_logits([2, 4, 6]), jnp.zeros((), jnp.int32), model, jax.random.key(0), 7, eos_id=EOS
  )
  np.testing.assert_array_equal(
    out.tokens, [[2, 3, 4, 5, 1, 0, 0], [4, 5, 1, 0, 0, 0, 0], [6, 7, 6, 7, 6, 7, 6]]
  )
  np.testing.assert_array_equal(out.lengths, [5, 3, 7])


def test_loop_ends_early_when_all_examples_hit_eos():
  model = BigramModel(_eos_table())
  out = sampling.temperature_sample(
    _one_hot_logits([2, 4]), jnp.zeros((), jnp.int32), model, jax.random.key(0), 20, eos_id=EOS
  )
  jax.effects_barrier()
  np.testing.assert_array_equal(out.lengths, [5, 3])
  # Tokens 0..4 need the model only after steps 0..3; it is never called for steps 5..19.
  assert sorted(model.steps_run) == [0, 1, 2, 3]


def test_model_not_called_after_last_step():
  model = BigramModel(_eos_table())
  sampling.temperature_sample(
    _one_hot_logits([6]), jnp.zeros((), jnp.int32), model, jax.random.key(0), 5
  )
  jax.effects_barrier()
  assert sorted(model.steps_run) == [0, 1, 2, 3]


def test_forced_tokens_reach_the_cache():
  model = BigramModel(_eos_table())
  forced = jnp.array([[0, 6, 0, 0, 0], [0, 0, 0, 0, 0]])
  mask = jnp.array([[False, True, False, False, False], [False] * 5])
  out = sampling.temperature_sample(
    _one_hot_logits([2, 2]),
    jnp.zeros((), jnp.int32),
    model,
    jax.random.key(0),
    5,
    forced_tokens=forced,
    forced_mask=mask,
  )
  # Row 0 is forced onto the 6↔7 cycle and continues from it; row 1 follows its own chain.
  np.testing.assert_array_equal(out.tokens, [[2, 6, 7, 6, 7], [2, 3, 4, 5, 1]])


def test_same_key_same_output_different_key_different():
  model = RecurrentModel(seed=4)
  batch, n = 8, 8
  run = functools.partial(
    sampling.temperature_sample, _first_logits(batch), model.init_cache(batch), model
  )
  a = run(jax.random.key(0), n)
  b = run(jax.random.key(0), n)
  c = run(jax.random.key(1), n)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.log_probs, b.log_probs)
  assert (np.asarray(a.tokens) != np.asarray(c.tokens)).any()


def test_step_i_uses_fold_in_of_the_key():
  batch, n, vocab = 32, 4, 8
  model = BigramModel(np.zeros((vocab, vocab)))
  key = jax.random.key(11)
  out = sampling.temperature_sample(
    jnp.zeros((batch, vocab)), jnp.zeros((), jnp.int32), model, key, n
  )
  expected = [
    jax.random.categorical(jax.random.fold_in(key, i), jnp.zeros((batch, vocab))) for i in range(n)
  ]
  np.testing.assert_array_equal(out.tokens, np.stack(expected, axis=1))


def test_jit_traces_model_once():
  model = RecurrentModel(seed=5)
  batch = 4
  decode = jax.jit(
    sampling.temperature_sample,
    static_argnames=("tokens_to_logits", "num_decode_steps", "top_k", "eos_id"),
  )
  kwargs = dict(
    tokens_to_logits=model, num_decode_steps=16, top_k=4, eos_id=EOS, temperature=0.7, top_p=0.9
  )
  out = decode(_first_logits(batch), model.init_cache(batch), rng=jax.random.key(0), **kwargs)
  decode(_first_logits(batch), model.init_cache(batch), rng=jax.random.key(1), **kwargs)
  assert model.traces == 1
  assert out.tokens.shape == (batch, 16) and out.tokens.dtype == jnp.int32
  eager = sampling.temperature_sample(
    _first_logits(batch), model.init_cache(batch), rng=jax.random.key(0), **kwargs
  )
  np.testing.assert_array_equal(out.tokens, eager.tokens)


def test_sharded_cache_and_batch_match_unsharded():
  model = RecurrentModel(seed=6)
  batch, n = 8, 6
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
  first = _first_logits(batch)
  cache = model.init_cache(batch)
  decode = jax.jit(
    functools.partial(
      sampling.temperature_sample, tokens_to_logits=model, num_decode_steps=n, top_k=5
    ),
  )
  rng = jax.random.key(7)
  expected = decode(first, cache, rng=rng, temperature=1.0)
  by_batch = NamedSharding(mesh, P("data"))
  sharded_cache = {
    "state": {"h": jax.device_put(cache["state"]["h"], NamedSharding(mesh, P("data", "model")))},
    "step": jax.device_put(cache["step"], NamedSharding(mesh, P())),
  }
  got = decode(jax.device_put(first, by_batch), sharded_cache, rng=rng, temperature=1.0)
  np.testing.assert_array_equal(got.tokens, expected.tokens)
  np.testing.assert_allclose(got.log_probs, expected.log_probs, rtol=1e-5)


def test_rejects_mask_without_tokens():
  with pytest.raises(ValueError, match="forced_tokens"):
    sampling.temperature_sample(
      jnp.zeros((1, 4)),
      jnp.zeros(()),
      BigramModel(np.zeros((4, 4))),
      jax.random.key(0),
      2,
      forced_mask=jnp.ones((1, 2), bool),
    )
