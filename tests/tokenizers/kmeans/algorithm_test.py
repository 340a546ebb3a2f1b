"""k-means arithmetic (`kmeans/algorithm.py`): k-means++ seeding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.tokenizers import kmeans
from tests.tokenizers.kmeans.streams import (
  blobs,
  mixture,
)


def test_kmeans_plus_plus_seeds_one_point_per_blob():
  x, labels = blobs(k=8, per_blob=30)
  for seed in range(3):
    centres = np.asarray(kmeans.kmeans_plus_plus(jax.random.key(seed), jnp.asarray(x), 8))
    rows = [int(np.flatnonzero((x == c).all(-1))[0]) for c in centres]  # each centre is a point
    assert sorted(labels[rows].tolist()) == list(range(8))


def test_kmeans_plus_plus_beats_random_choice():
  x = jnp.asarray(mixture(n=1000))

  def inertia(centres: jax.Array) -> float:
    return float(jnp.sum(kmeans.assign(centres, x)[1]))

  keys = [jax.random.key(seed) for seed in range(5)]
  plus_plus = np.mean([inertia(kmeans.kmeans_plus_plus(key, x, 32)) for key in keys])
  random = np.mean([inertia(x[jax.random.choice(key, 1000, (32,), replace=False)]) for key in keys])
  assert plus_plus < 0.85 * random, f"k-means++ {plus_plus:.1f}, random choice {random:.1f}"
