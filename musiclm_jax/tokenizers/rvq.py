"""Residual vector quantizer (SoundStream §3.3), shared by SoundStream, MuLan and the melody model.

Level q quantizes what levels 1..q-1 left over, so the first n levels of a code stack decode to a
coarse-to-fine approximation. Codebooks are not gradient parameters: they live in the mutable
`quantizer` collection and follow an exponential moving average (EMA) of the residuals assigned to
each code (VQ-VAE-2 style), with k-means initialisation from the first training batch and restarts
of codes that fall out of use. Quantizer dropout trains each example with a random number of
levels, so every prefix of levels learns to decode on its own.

Every statistic is a plain sum over all frames of the batch; under `jax.jit` with a batch sharded
over devices GSPMD makes those sums global, so the update does not depend on the sharding.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

# Name of the mutable variable collection holding the codebooks, and of the rng stream used for
# k-means seeding, dead-code restarts and quantizer dropout.
QUANTIZER = "quantizer"

# Codebook search decides discrete codes: never let a bf16 matmul pass flip an argmin.
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class RVQConfig:
  """Residual vector quantizer settings (paper: 12 levels × 1024 codes).

  Attributes:
    num_levels: quantizer levels (codebooks) in the stack.
    codebook_size: codes per level.
    dim: dimension of the vectors being quantized (quantization happens in this space).
    ema_decay: decay of the EMA of cluster sizes and sums.
    epsilon: Laplace smoothing of the cluster sizes (avoids dividing by zero).
    commitment_weight: scale of the returned commitment loss.
    dead_code_threshold: a code whose EMA cluster size falls below this is restarted from a random
      residual of the current batch; 0 turns restarts off.
    kmeans_init: initialise each level by k-means on its residuals of the first training batch.
    kmeans_iters: Lloyd iterations of that k-means.
    quantizer_dropout: train each example with a random number of levels in
      [min_levels, num_levels].
    min_levels: the fewest levels quantizer dropout keeps.
  """

  num_levels: int = 12
  codebook_size: int = 1024
  dim: int = 128
  ema_decay: float = 0.99
  epsilon: float = 1e-5
  commitment_weight: float = 1.0
  dead_code_threshold: float = 2.0
  kmeans_init: bool = True
  kmeans_iters: int = 10
  quantizer_dropout: bool = True
  min_levels: int = 1

  def __post_init__(self):
    if self.num_levels < 1 or self.codebook_size < 1 or self.dim < 1:
      raise ValueError(f"RVQConfig needs positive num_levels, codebook_size and dim: {self}.")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"RVQConfig.ema_decay={self.ema_decay} must be in [0, 1).")
    if not 1 <= self.min_levels <= self.num_levels:
      raise ValueError(f"RVQConfig.min_levels={self.min_levels} must be in [1, num_levels].")


class RVQOutput(NamedTuple):
  """What the quantizer returns.

  Attributes:
    quantized: [batch, ..., dim] sum of the used levels' code vectors; its gradient w.r.t. the
      input is the identity (straight-through).
    codes: [batch, ..., levels] int32 in [0, codebook_size); -1 where quantizer dropout dropped
      the level for that example (train mode only).
    commitment_loss: scalar, commitment_weight × mean over used (frame, level) pairs of
      mean_d (residual - stop_gradient(code vector))².
    metrics: code usage of this batch: `perplexity` and `used_code_fraction` (scalars, mean over
      levels), `perplexity_per_level` and `used_code_fraction_per_level` ([levels]); in train mode
      also `restarted_code_fraction` (scalar, codes restarted this step / all codes).
  """

  quantized: jax.Array
  codes: jax.Array
  commitment_loss: jax.Array
  metrics: dict[str, jax.Array]


class CodebookState(NamedTuple):
  """EMA state of a stack of codebooks; arrays lead with [levels] (or none, for one level).

  Attributes:
    codebooks: [levels, codes, dim] code vectors, embed_sum / smoothed cluster_size.
    cluster_size: [levels, codes] EMA of how many residuals each code was assigned per batch.
    embed_sum: [levels, codes, dim] EMA of the sum of the residuals assigned to each code.
  """

  codebooks: jax.Array
  cluster_size: jax.Array
  embed_sum: jax.Array


def squared_distances(x: jax.Array, codebook: jax.Array) -> jax.Array:
  """||x||² - 2 x·c + ||c||² in fp32.

  Args:
    x: [n, dim] vectors.
    codebook: [codes, dim] code vectors.
  Returns:
    [n, codes] squared Euclidean distances.
  """
  x = x.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  cross = jnp.dot(x, codebook.T, precision=_HIGHEST)
  return jnp.sum(x * x, -1, keepdims=True) - 2.0 * cross + jnp.sum(codebook * codebook, -1)


def nearest_codes(x: jax.Array, codebook: jax.Array) -> jax.Array:
  """[n, dim], [codes, dim] -> [n] int32 index of the nearest code."""
  return jnp.argmin(squared_distances(x, codebook), axis=-1).astype(jnp.int32)


def greedy_codes(codebooks: jax.Array, latents: jax.Array, levels: int) -> jax.Array:
  """[..., dim] -> [..., levels] int32 codes of the first `levels` codebooks, level by level.

  Each level codes the residual the levels before it left (inference of a fitted RVQ).
  """
  flat = latents.reshape(-1, latents.shape[-1])

  def level(residual, codebook):
    codes = nearest_codes(residual, codebook)
    return residual - jnp.take(codebook, codes, axis=0), codes

  _, codes = jax.lax.scan(level, flat, codebooks[:levels])
  return codes.T.reshape(latents.shape[:-1] + (levels,))


def sum_code_vectors(codebooks: jax.Array, codes: jax.Array) -> jax.Array:
  """[..., levels'] codes (-1: level absent) -> [..., dim], the sum of their code vectors."""
  levels = codes.shape[-1]
  vectors = codebooks[jnp.arange(levels), jnp.maximum(codes, 0)]  # [..., levels, dim]
  return jnp.sum(jnp.where(codes[..., None] >= 0, vectors, 0.0), axis=-2)


def _cluster_stats(
  x: jax.Array, codes: jax.Array, weight: jax.Array, num_codes: int
) -> tuple[jax.Array, jax.Array]:
  """Weighted assignment counts [codes] and sums [codes, dim] of x [n, dim] under codes [n]."""
  onehot = jax.nn.one_hot(codes, num_codes, dtype=jnp.float32) * weight[:, None]
  return onehot.sum(0), jnp.dot(onehot.T, x, precision=_HIGHEST)


def kmeans(
  x: jax.Array, key: jax.Array, num_clusters: int, iters: int
) -> tuple[jax.Array, jax.Array]:
  """Lloyd's k-means seeded with random samples of x.

  Args:
    x: [n, dim] points (fp32).
    key: PRNG key for the seeding.
    num_clusters: k.
    iters: Lloyd iterations.
  Returns:
    (centroids [k, dim], counts [k] of points assigned to each centroid). A cluster that ends
    empty keeps its seed and has count 0.
  """
  n = x.shape[0]
  seeds = jax.random.choice(key, n, (num_clusters,), replace=n < num_clusters)
  ones = jnp.ones((n,), jnp.float32)

  def lloyd_step(_, centroids):
    counts, sums = _cluster_stats(x, nearest_codes(x, centroids), ones, num_clusters)
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    return jnp.where(counts[:, None] > 0, means, centroids)

  centroids = jax.lax.fori_loop(0, iters, lloyd_step, x[seeds])
  counts, _ = _cluster_stats(x, nearest_codes(x, centroids), ones, num_clusters)
  return centroids, counts


def _kmeans_level(x: jax.Array, key: jax.Array, config: RVQConfig) -> CodebookState:
  """One level's state fitted by k-means to its residuals x [n, dim]."""
  centroids, counts = kmeans(x, key, config.codebook_size, config.kmeans_iters)
  return CodebookState(centroids, counts, centroids * counts[:, None])


def _ema_update(
  level: CodebookState, counts: jax.Array, sums: jax.Array, config: RVQConfig
) -> CodebookState:
  """Moves one level's EMA statistics towards this batch's counts [codes] and sums [codes, dim]."""
  decay = config.ema_decay
  cluster_size = decay * level.cluster_size + (1.0 - decay) * counts
  embed_sum = decay * level.embed_sum + (1.0 - decay) * sums
  total = jnp.sum(cluster_size)
  # Laplace smoothing: every code keeps a tiny share, so unused codes never divide by zero.
  eps = config.epsilon
  smoothed = (cluster_size + eps) / (total + config.codebook_size * eps) * total
  codebooks = embed_sum / jnp.maximum(smoothed, eps)[:, None]
  return CodebookState(codebooks, cluster_size, embed_sum)


def _restart_dead_codes(
  level: CodebookState, x: jax.Array, weight: jax.Array, key: jax.Array, config: RVQConfig
) -> tuple[CodebookState, jax.Array]:
  """Replaces codes whose EMA cluster size is below the threshold by random residuals.

  Args:
    level: one level's state (after this step's EMA update).
    x: [n, dim] this level's residuals of the batch.
    weight: [n] 1 where the frame uses this level (residuals to sample from), else 0.
    key: PRNG key.
    config: settings.
  Returns:
    (new state, fraction of this level's codes restarted).
  """
  threshold = config.dead_code_threshold
  dead = level.cluster_size < threshold
  total = jnp.sum(weight)
  probs = jnp.where(total > 0, weight / jnp.maximum(total, 1.0), 1.0 / weight.shape[0])
  samples = x[jax.random.choice(key, x.shape[0], (config.codebook_size,), p=probs)]
  # A restarted code starts as a cluster of `threshold` copies of its sample.
  restarted = CodebookState(
    jnp.where(dead[:, None], samples, level.codebooks),
    jnp.where(dead, threshold, level.cluster_size),
    jnp.where(dead[:, None], samples * threshold, level.embed_sum),
  )
  return restarted, jnp.mean(dead.astype(jnp.float32))


def _train_level(
  level: CodebookState,
  residual: jax.Array,
  weight: jax.Array,
  key: jax.Array,
  initialized: jax.Array,
  config: RVQConfig,
) -> tuple[CodebookState, jax.Array, jax.Array, jax.Array, jax.Array]:
  """Quantizes one level's residuals and updates that level's codebook.

  Args:
    level: the level's state before this step.
    residual: [n, dim] fp32 residuals reaching this level.
    weight: [n] 1 where the frame's example uses this level (quantizer dropout), else 0.
    key: PRNG key.
    initialized: scalar bool; False on the first training call (k-means runs then).
    config: settings.
  Returns:
    (new state, codes [n], code vectors [n, dim] of the state before the EMA update,
    weighted counts [codes], fraction of codes restarted).
  """
  kmeans_key, restart_key = jax.random.split(key)
  residual = jax.lax.stop_gradient(residual)
  if config.kmeans_init:
    level = jax.lax.cond(
      initialized, lambda: level, lambda: _kmeans_level(residual, kmeans_key, config)
    )
  codes = nearest_codes(residual, level.codebooks)
  vectors = jnp.take(level.codebooks, codes, axis=0)
  counts, sums = _cluster_stats(residual, codes, weight, config.codebook_size)
  updated = _ema_update(level, counts, sums, config)
  restarted = jnp.zeros((), jnp.float32)
  if config.dead_code_threshold > 0:
    updated, restarted = _restart_dead_codes(updated, residual, weight, restart_key, config)
  # A level that no example of the batch uses keeps its statistics instead of decaying them.
  has_data = jnp.sum(weight) > 0
  updated = jax.tree.map(lambda new, old: jnp.where(has_data, new, old), updated, level)
  return updated, codes, vectors, counts, jnp.where(has_data, restarted, 0.0)


def _quantize_train(
  state: CodebookState,
  x: jax.Array,
  frame_levels: jax.Array,
  key: jax.Array,
  initialized: jax.Array,
  config: RVQConfig,
) -> tuple[CodebookState, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
  """Runs every level of `state` over x with EMA updates (a scan over levels).

  Args:
    state: [levels, ...] codebook state of the levels to run.
    x: [n, dim] fp32 input vectors.
    frame_levels: [n] int32 number of levels each frame uses (quantizer dropout).
    key: PRNG key.
    initialized: scalar bool, False before the first training step.
    config: settings.
  Returns:
    (new state, quantized [n, dim], codes [n, levels] (-1 where dropped),
    summed squared commitment error (scalar), counts [levels, codes], restarted [levels]).
  """
  num_levels = state.codebooks.shape[0]

  def body(carry, xs):
    residual, quantized = carry
    level, level_key, index = xs
    weight = (frame_levels > index).astype(jnp.float32)
    level, codes, vectors, counts, restarted = _train_level(
      level, residual, weight, level_key, initialized, config
    )
    error = jnp.sum(weight * jnp.mean(jnp.square(residual - vectors), -1))
    codes = jnp.where(weight > 0, codes, -1)
    carry = (residual - vectors, quantized + weight[:, None] * vectors)
    return carry, (level, codes, error, counts, restarted)

  xs = (state, jax.random.split(key, num_levels), jnp.arange(num_levels))
  (_, quantized), ys = jax.lax.scan(body, (x, jnp.zeros_like(x)), xs)
  new_state, codes, errors, counts, restarted = ys
  new_state = jax.lax.stop_gradient(new_state)
  return new_state, quantized, codes.T, jnp.sum(errors), counts, restarted


def _quantize_eval(
  codebooks: jax.Array, x: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Quantizes x [n, dim] with codebooks [levels, codes, dim]; no state change.

  Returns:
    (quantized [n, dim], codes [n, levels], summed squared commitment error (scalar),
    counts [levels, codes]).
  """
  num_codes = codebooks.shape[1]
  ones = jnp.ones(x.shape[:1], jnp.float32)

  def body(carry, codebook):
    residual, quantized = carry
    codes = nearest_codes(residual, codebook)
    vectors = jnp.take(codebook, codes, axis=0)
    error = jnp.sum(jnp.mean(jnp.square(residual - vectors), -1))
    counts = jnp.zeros((num_codes,), jnp.float32).at[codes].add(ones)
    return (residual - vectors, quantized + vectors), (codes, error, counts)

  (_, quantized), (codes, errors, counts) = jax.lax.scan(
    body, (x, jnp.zeros_like(x)), jax.lax.stop_gradient(codebooks)
  )
  return quantized, codes.T, jnp.sum(errors), counts


def usage_metrics(counts: jax.Array) -> dict[str, jax.Array]:
  """Code usage of a batch from per-level assignment counts [levels, codes].

  Returns:
    perplexity (exp of the entropy of each level's code distribution) and the fraction of codes
    used at least once, per level ([levels]) and averaged over levels (scalars).
  """
  total = jnp.sum(counts, -1, keepdims=True)
  probs = counts / jnp.maximum(total, 1e-9)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.maximum(probs, 1e-30)), 0.0), -1)
  perplexity = jnp.exp(entropy)
  used = jnp.mean((counts > 0).astype(jnp.float32), -1)
  return {
    "perplexity": jnp.mean(perplexity),
    "used_code_fraction": jnp.mean(used),
    "perplexity_per_level": perplexity,
    "used_code_fraction_per_level": used,
  }


class ResidualVectorQuantizer(nn.Module):
  """Residual vector quantizer with EMA codebooks in the `quantizer` collection.

  Variables (collection `quantizer`): `codebooks` [levels, codes, dim], `cluster_size`
  [levels, codes], `embed_sum` [levels, codes, dim], `initialized` scalar bool. Create them with
  `init(..., train=False)` (rng `params` draws the random initial codebooks); train with
  `apply(..., train=True, rngs={"quantizer": key}, mutable=["quantizer"])`.

  Attributes:
    config: quantizer settings.
  """

  config: RVQConfig

  def setup(self):
    cfg = self.config
    shape = (cfg.num_levels, cfg.codebook_size, cfg.dim)
    self.codebooks = self.variable(
      QUANTIZER, "codebooks", lambda: jax.random.normal(self.make_rng("params"), shape)
    )
    # Consistent with codebooks = embed_sum / cluster_size: each code starts as one vector.
    self.cluster_size = self.variable(QUANTIZER, "cluster_size", jnp.ones, shape[:2])
    self.embed_sum = self.variable(QUANTIZER, "embed_sum", lambda: self.codebooks.value)
    self.initialized = self.variable(QUANTIZER, "initialized", lambda: jnp.array(False))

  def _levels(self, num_levels: int | None) -> int:
    levels = self.config.num_levels if num_levels is None else int(num_levels)
    if not 1 <= levels <= self.config.num_levels:
      raise ValueError(f"num_levels={num_levels} must be in [1, {self.config.num_levels}].")
    return levels

  def _flatten(self, x: jax.Array) -> jax.Array:
    if x.ndim < 2 or x.shape[-1] != self.config.dim:
      raise ValueError(
        f"Expected input [batch, ..., {self.config.dim}], got shape {tuple(x.shape)}."
      )
    return x.reshape(-1, x.shape[-1]).astype(jnp.float32)

  def __call__(self, x: jax.Array, *, train: bool, num_levels: int | None = None) -> RVQOutput:
    """Quantizes x; in train mode also updates the codebooks.

    Args:
      x: [batch, ..., dim] vectors (e.g. [batch, frames, dim]).
      train: update the codebooks (k-means on the first call, EMA, dead-code restarts) and apply
        quantizer dropout. Needs rng `quantizer` and the `quantizer` collection mutable. During
        `init` nothing is updated.
      num_levels: use only the first levels (default: all); dropout samples within them.
    Returns:
      RVQOutput with quantized [batch, ..., dim] (x's dtype), codes [batch, ..., levels].
    """
    levels = self._levels(num_levels)
    flat = self._flatten(x)
    if train and not self.is_initializing():
      if not self.is_mutable_collection(QUANTIZER):
        raise ValueError(
          f"train=True updates the codebooks: pass mutable=[{QUANTIZER!r}] to apply()."
        )
      quantized, codes, error, count, metrics = self._train_step(flat, x.shape[0], levels)
    else:
      quantized, codes, error, metrics = self._eval_step(flat, levels)
      count = flat.shape[0] * levels
    commitment = self.config.commitment_weight * error / jnp.maximum(count, 1)
    # Straight-through: forward value is the quantized vector, gradient w.r.t. x is identity.
    quantized = flat + jax.lax.stop_gradient(quantized - flat)
    return RVQOutput(
      quantized=quantized.reshape(x.shape).astype(x.dtype),
      codes=codes.reshape(x.shape[:-1] + (levels,)),
      commitment_loss=commitment,
      metrics=metrics,
    )

  def _eval_step(
    self, flat: jax.Array, levels: int
  ) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
    """[n, dim] -> (quantized [n, dim], codes [n, levels], summed error, metrics)."""
    quantized, codes, error, counts = _quantize_eval(self.codebooks.value[:levels], flat)
    return quantized, codes, error, usage_metrics(counts)

  def _sample_levels(self, key: jax.Array, batch: int, levels: int) -> jax.Array:
    """[batch] int32 number of levels each example uses (quantizer dropout)."""
    if not self.config.quantizer_dropout:
      return jnp.full((batch,), levels, jnp.int32)
    low = min(self.config.min_levels, levels)
    return jax.random.randint(key, (batch,), low, levels + 1, dtype=jnp.int32)

  def _train_step(
    self, flat: jax.Array, batch: int, levels: int
  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
    """[n, dim] -> (quantized, codes [n, levels], summed error, used (frame, level) count,
    metrics), updating the `quantizer` collection."""
    dropout_key, level_key = jax.random.split(self.make_rng(QUANTIZER))
    example_levels = self._sample_levels(dropout_key, batch, levels)
    frame_levels = jnp.repeat(example_levels, flat.shape[0] // batch)
    state = CodebookState(
      self.codebooks.value[:levels], self.cluster_size.value[:levels], self.embed_sum.value[:levels]
    )
    new, quantized, codes, error, counts, restarted = _quantize_train(
      state, flat, frame_levels, level_key, self.initialized.value, self.config
    )
    self.codebooks.value = self.codebooks.value.at[:levels].set(new.codebooks)
    self.cluster_size.value = self.cluster_size.value.at[:levels].set(new.cluster_size)
    self.embed_sum.value = self.embed_sum.value.at[:levels].set(new.embed_sum)
    self.initialized.value = jnp.array(True)
    metrics = usage_metrics(counts)
    metrics["restarted_code_fraction"] = jnp.mean(restarted)
    return quantized, codes, error, jnp.sum(frame_levels), metrics

  def encode(self, x: jax.Array, num_levels: int | None = None) -> jax.Array:
    """Codes of x without changing any state.

    Args:
      x: [batch, ..., dim] vectors.
      num_levels: how many levels to encode (default: all).
    Returns:
      [batch, ..., levels] int32 codes in [0, codebook_size).
    """
    levels = self._levels(num_levels)
    _, codes, _, _ = self._eval_step(self._flatten(x), levels)
    return codes.reshape(x.shape[:-1] + (levels,))

  def decode(self, codes: jax.Array) -> jax.Array:
    """Sum of the code vectors of the first levels' codebooks.

    Args:
      codes: [batch, ..., levels'] int32 codes of any prefix of levels (levels' ≤ num_levels);
        negative codes (dropped levels) contribute nothing.
    Returns:
      [batch, ..., dim] float32 vectors.
    """
    levels = self._levels(codes.shape[-1])
    flat = codes.reshape(-1, levels)
    vectors = self.codebooks.value[jnp.arange(levels)[None, :], jnp.maximum(flat, 0)]
    vectors = jnp.where(flat[..., None] >= 0, vectors, 0.0)
    return jnp.sum(vectors, axis=1).reshape(codes.shape[:-1] + (self.config.dim,))
