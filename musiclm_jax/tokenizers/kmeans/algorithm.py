"""k-means arithmetic: normalisation, distances, nearest-centroid assignment, k-means++ seeding
and the jitted Lloyd and mini-batch (Sculley) steps. Functions of arrays only: no files, no
streams (`fit.py` drives them; `model.py` holds their result).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NORMALIZATIONS = ("none", "l2", "standardize")

# Nearest-centroid search makes discrete decisions: never let a bf16 matmul pass flip an argmin.
_HIGHEST = jax.lax.Precision.HIGHEST
# A feature whose spread is below this is constant in the buffer; dividing by it would blow up
# later frames, so it is only centred.
_MIN_STD = 1e-6
_MIN_NORM = 1e-12
# Rows per chunk when computing statistics or inertia over many vectors (bounds memory).
CHUNK_ROWS = 65536


def normalize(x: jax.Array, normalization: str, mean: jax.Array, std: jax.Array) -> jax.Array:
  """Maps raw vectors into the space the centroids live in.

  Args:
    x: [..., dim] raw vectors.
    normalization: one of `NORMALIZATIONS`.
    mean, std: [dim] statistics ('standardize' only; ignored otherwise).
  Returns:
    [..., dim] float32 normalised vectors.
  """
  x = jnp.asarray(x, jnp.float32)
  if normalization == "none":
    return x
  if normalization == "l2":
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, _MIN_NORM)
  if normalization == "standardize":
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  raise ValueError(f"Unknown normalization {normalization!r}; use {NORMALIZATIONS}.")


def normalization_stats(x: np.ndarray, normalization: str) -> tuple[np.ndarray, np.ndarray]:
  """Per-dimension (mean [dim], std [dim]) float32 for 'standardize'; (0, 1) otherwise.

  Accumulated in float64, chunk by chunk, so a large buffer is never copied whole.
  """
  dim = x.shape[-1]
  if normalization != "standardize":
    return np.zeros(dim, np.float32), np.ones(dim, np.float32)
  chunks = range(0, len(x), CHUNK_ROWS)
  mean = sum(x[i : i + CHUNK_ROWS].sum(0, dtype=np.float64) for i in chunks) / len(x)
  sq = sum(np.square(x[i : i + CHUNK_ROWS] - mean).sum(0) for i in chunks)
  std = np.sqrt(sq / len(x))
  std = np.where(std < _MIN_STD, 1.0, std)
  return mean.astype(np.float32), std.astype(np.float32)


def squared_distances(x: jax.Array, centroids: jax.Array) -> jax.Array:
  """||x||² - 2 x·c + ||c||² in float32 with HIGHEST-precision matmuls, clipped at 0.

  Args:
    x: [n, dim] vectors.
    centroids: [k, dim].
  Returns:
    [n, k] squared Euclidean distances.
  """
  x = x.astype(jnp.float32)
  centroids = centroids.astype(jnp.float32)
  cross = jnp.dot(x, centroids.T, precision=_HIGHEST)
  sq = jnp.sum(x * x, -1, keepdims=True) - 2.0 * cross + jnp.sum(centroids * centroids, -1)
  return jnp.maximum(sq, 0.0)


def assign(centroids: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Nearest centroid of each (already normalised) vector; ties go to the lower id.

  Args:
    centroids: [k, dim].
    x: [..., dim] vectors in the centroids' space.
  Returns:
    (ids [...] int32, squared distances to that centroid [...] float32).
  """
  lead = x.shape[:-1]
  sq = squared_distances(x.reshape(-1, x.shape[-1]), centroids)
  ids = jnp.argmin(sq, axis=-1).astype(jnp.int32)
  return ids.reshape(lead), jnp.min(sq, axis=-1).reshape(lead)


def _sample_proportional(key: jax.Array, weights: jax.Array, num: int) -> jax.Array:
  """[num] indices drawn with replacement with probability ∝ weights [n] (uniform if all 0)."""
  weights = jnp.where(jnp.sum(weights) > 0, weights, jnp.ones_like(weights))
  cdf = jnp.cumsum(weights)
  targets = jax.random.uniform(key, (num,)) * cdf[-1]
  # side='right' never lands on a zero-weight index (one whose cdf step is empty).
  return jnp.minimum(jnp.searchsorted(cdf, targets, side="right"), weights.shape[0] - 1)


@functools.partial(jax.jit, static_argnames=("k", "num_local_trials"))
def kmeans_plus_plus(
  key: jax.Array, x: jax.Array, k: int, num_local_trials: int | None = None
) -> jax.Array:
  """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's variant).

  The first centre is a uniform sample; each next one is the best, by resulting potential, of
  `num_local_trials` candidates sampled with probability ∝ squared distance to the chosen ones.

  Args:
    key: PRNG key; the result is a deterministic function of it.
    x: [n, dim] points.
    k: number of centres.
    num_local_trials: candidates per step (default 2 + floor(ln k), as scikit-learn).
  Returns:
    [k, dim] float32 centres, each a row of x.
  """
  x = x.astype(jnp.float32)
  x_sq = jnp.sum(x * x, axis=-1)  # once, not once per step: the loop is memory-bound

  def distances_to(rows: jax.Array) -> jax.Array:  # [m] row indices -> [n, m]
    cross = jnp.dot(x, x[rows].T, precision=_HIGHEST)
    return jnp.maximum(x_sq[:, None] - 2.0 * cross + x_sq[rows], 0.0)

  trials = num_local_trials or 2 + int(math.log(k))
  first_key, rest_key = jax.random.split(key)
  first = jax.random.randint(first_key, (1,), 0, x.shape[0])
  centres = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(x[first[0]])
  closest = distances_to(first)[:, 0]

  def add_centre(i, carry):
    centres, closest = carry
    candidates = _sample_proportional(jax.random.fold_in(rest_key, i), closest, trials)
    new_closest = jnp.minimum(closest[:, None], distances_to(candidates))  # [n, trials]
    best = jnp.argmin(jnp.sum(new_closest, axis=0))
    return centres.at[i].set(x[candidates[best]]), new_closest[:, best]

  centres, _ = jax.lax.fori_loop(1, k, add_centre, (centres, closest))
  return centres


# Jitted fitting steps.


class Steps(NamedTuple):
  """Jitted steps of one (normalisation, sharding) combination."""

  normalize: Callable[..., jax.Array]
  lloyd: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
  minibatch: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]


def _cluster_stats(centroids, x, weight) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Weighted counts [k], sums [k, dim] and inertia (scalar) of x [n, dim] under centroids."""
  ids, sq = assign(centroids, x)
  onehot = jax.nn.one_hot(ids, centroids.shape[0], dtype=jnp.float32) * weight[:, None]
  return onehot.sum(0), jnp.dot(onehot.T, x, precision=_HIGHEST), jnp.sum(sq * weight)


def _lloyd_step(centroids, mean, std, x, weight, *, normalization):
  """One Lloyd iteration: (centroids [k, dim], counts [k] int32, inertia before the move)."""
  counts, sums, inertia = _cluster_stats(centroids, normalize(x, normalization, mean, std), weight)
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  # A centre nobody chose keeps its place rather than collapsing to the origin.
  return jnp.where(counts[:, None] > 0, means, centroids), counts.astype(jnp.int32), inertia


def _minibatch_step(centroids, counts, mean, std, x, weight, *, normalization):
  """Sculley's update for one batch: (centroids, counts [k] int32, batch inertia)."""
  batch_counts, sums, inertia = _cluster_stats(
    centroids, normalize(x, normalization, mean, std), weight
  )
  # Per-centre rate 1/count applied to the whole batch at once: each centre becomes the running
  # mean of every point ever assigned to it. Counts are integers so they stay exact past 2^24.
  new_counts = counts + batch_counts.astype(jnp.int32)
  rate = 1.0 / jnp.maximum(new_counts, 1).astype(jnp.float32)
  return centroids + (sums - batch_counts[:, None] * centroids) * rate[:, None], new_counts, inertia


@functools.cache
def jitted_steps(normalization: str, replicated, rows, row_weights) -> Steps:
  """Builds (once per combination, so compilations are shared across fits) the jitted steps."""
  rep = replicated

  def normalize_fn(x, mean, std):
    return normalize(x, normalization, mean, std)

  return Steps(
    normalize=jax.jit(
      normalize_fn,
      in_shardings=(rep, rep, rep),
      out_shardings=rep,
    ),
    lloyd=jax.jit(
      functools.partial(_lloyd_step, normalization=normalization),
      in_shardings=(rep, rep, rep, rows, row_weights),
      out_shardings=(rep, rep, rep),
    ),
    minibatch=jax.jit(
      functools.partial(_minibatch_step, normalization=normalization),
      in_shardings=(rep, rep, rep, rep, rows, row_weights),
      out_shardings=(rep, rep, rep),
      donate_argnums=(0, 1),
    ),
  )
