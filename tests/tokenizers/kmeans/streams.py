"""Test data for the k-means tests: mixtures, separated blobs and batch streams over them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

from musiclm_jax.tokenizers.kmeans import KMeansConfig

DIM = 16
QUIET = {"log_fn": lambda _: None}


def mixture(num_components: int = 24, n: int = 3000, dim: int = DIM, seed: int = 0) -> np.ndarray:
  """[n, dim] float32 Gaussian mixture with unequal spreads and weights."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_components, dim)) * 4.0
  spreads = rng.lognormal(0.0, 0.5, size=num_components)
  labels = rng.choice(num_components, n, p=rng.dirichlet(np.full(num_components, 3.0)))
  points = centres[labels] + rng.normal(size=(n, dim)) * spreads[labels, None]
  return points.astype(np.float32)


def blobs(k: int, per_blob: int, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Well-separated blobs, shuffled: ([k * per_blob, dim] float32, [k * per_blob] labels)."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, dim)) * 20.0
  labels = rng.permutation(np.repeat(np.arange(k), per_blob))
  return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def stream(x: np.ndarray, batch_size: int) -> Callable[[int], Iterator[np.ndarray]]:
  """batches_fn over x in order: batches_fn(skip) yields the batches after the first `skip`."""
  return lambda skip: (x[i : i + batch_size] for i in range(skip * batch_size, len(x), batch_size))


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
  """Whether two labelings split the points identically (up to renaming the labels)."""
  pairs = set(zip(a.tolist(), b.tolist()))
  return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def small_config(**overrides) -> KMeansConfig:
  base = KMeansConfig(num_clusters=8, normalization="none", init_samples=256, num_epochs=2)
  return dataclasses.replace(base, **overrides)
