"""The fitted k-means model (`KMeansModel`) and the k-means file format.

A model directory holds `kmeans.npz` (authoritative: the arrays plus a JSON header naming the
format and version) and `kmeans.json` (the header, for people). A fit's `progress.npz` (see
`fit.py`) uses the same container with its own format name. Files are replaced atomically.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.runtime.atomic import atomic_write_bytes, atomic_write_text
from musiclm_jax.tokenizers.kmeans.algorithm import CHUNK_ROWS, NORMALIZATIONS, assign, normalize

MODEL_FILE = "kmeans.npz"
MODEL_JSON = "kmeans.json"
PROGRESS_FILE = "progress.npz"
MODEL_FORMAT = "musiclm_jax.kmeans"
PROGRESS_FORMAT = "musiclm_jax.kmeans.progress"
FORMAT_VERSION = 1


@functools.partial(jax.jit, static_argnames=("normalization",))
def _chunk_inertia(centroids, mean, std, x, normalization: str) -> jax.Array:
  return jnp.sum(assign(centroids, normalize(x, normalization, mean, std))[1])


@dataclasses.dataclass(frozen=True, eq=False)
class KMeansModel:
  """Fitted centroids and the normalisation they expect.

  Attributes:
    centroids: [k, dim] float32, in the normalised space.
    mean, std: [dim] float32 'standardize' statistics (0 and 1 for 'none' and 'l2').
    normalization: one of `NORMALIZATIONS`.
    metadata: JSON-able facts about the embeddings, e.g. {"layer": 7, "module": "mlm"}, plus
      `kmeans_fit` (config and vectors seen) when produced by `fit_kmeans`.
  """

  centroids: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  normalization: str
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    centroids = np.asarray(self.centroids, np.float32)
    if centroids.ndim != 2:
      raise ValueError(f"KMeansModel.centroids must be [k, dim], got {centroids.shape}.")
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f"KMeansModel.normalization={self.normalization!r}: use {NORMALIZATIONS}.")
    object.__setattr__(self, "centroids", centroids)
    for name in ("mean", "std"):
      value = np.asarray(getattr(self, name), np.float32)
      if value.shape != (centroids.shape[1],):
        raise ValueError(f"KMeansModel.{name} must be [{centroids.shape[1]}], got {value.shape}.")
      object.__setattr__(self, name, value)
    object.__setattr__(self, "metadata", to_json(self.metadata, "KMeansModel.metadata"))

  @property
  def num_clusters(self) -> int:
    return self.centroids.shape[0]

  @property
  def dim(self) -> int:
    return self.centroids.shape[1]

  def normalize(self, x: jax.Array) -> jax.Array:
    """[..., dim] raw vectors -> [..., dim] vectors in the centroids' space."""
    return normalize(x, self.normalization, self.mean, self.std)

  def assign(self, x: jax.Array) -> jax.Array:
    """[..., dim] raw vectors -> [...] int32 cluster ids; pure jnp, usable inside `jax.jit`."""
    return assign(jnp.asarray(self.centroids), self.normalize(x))[0]

  def inertia(self, x: np.ndarray | jax.Array) -> float:
    """Sum over x [n, dim] (raw) of squared distances to the nearest centroid, normalised space."""
    x = np.asarray(x, np.float32).reshape(-1, self.dim)
    total = 0.0
    for i in range(0, len(x), CHUNK_ROWS):
      chunk = x[i : i + CHUNK_ROWS]
      total += float(_chunk_inertia(self.centroids, self.mean, self.std, chunk, self.normalization))
    return total

  def save(self, directory: str) -> None:
    """Writes `kmeans.npz` (authoritative, replaced atomically) and a readable `kmeans.json`."""
    os.makedirs(directory, exist_ok=True)
    header = {
      "format": MODEL_FORMAT,
      "version": FORMAT_VERSION,
      "normalization": self.normalization,
      "num_clusters": self.num_clusters,
      "dim": self.dim,
      "metadata": self.metadata,
    }
    arrays = {"centroids": self.centroids, "mean": self.mean, "std": self.std}
    save_npz(os.path.join(directory, MODEL_FILE), header, arrays)
    atomic_write_text(os.path.join(directory, MODEL_JSON), json.dumps(header, indent=2))

  @classmethod
  def load(cls, directory: str) -> KMeansModel:
    """Reads a model written by `save`.

    Raises:
      FileNotFoundError: `directory` does not exist.
      ValueError: it is not a k-means model checkpoint.
    """
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"No k-means checkpoint at {directory!r}: no such directory.")
    path = os.path.join(directory, MODEL_FILE)
    if not os.path.isfile(path):
      hint = ""
      if os.path.isfile(os.path.join(directory, PROGRESS_FILE)):
        hint = " It holds fit progress: finish it with fit_kmeans and save the returned model."
      raise ValueError(f"{directory!r} is not a k-means checkpoint: it has no {MODEL_FILE}.{hint}")
    header, arrays = read_npz(path, MODEL_FORMAT, ("centroids", "mean", "std"))
    return cls(
      centroids=arrays["centroids"],
      mean=arrays["mean"],
      std=arrays["std"],
      normalization=header["normalization"],
      metadata=header.get("metadata", {}),
    )


# Files: atomic writes and checked reads.


def to_json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
  """Round-trips through JSON, so a bad value fails now rather than at the end of a long fit."""
  try:
    return json.loads(json.dumps(dict(value)))
  except (TypeError, ValueError) as e:
    raise ValueError(f"{what} must be JSON-serialisable: {e}") from e


def save_npz(path: str, header: Mapping[str, Any], arrays: Mapping[str, Any]) -> None:
  """One .npz holding `arrays` and the JSON `header`, written atomically."""
  buffer = io.BytesIO()
  np.savez(buffer, header=np.asarray(json.dumps(header)), **arrays)
  atomic_write_bytes(path, buffer.getvalue())


def read_npz(path: str, fmt: str, names: tuple[str, ...]) -> tuple[dict, dict[str, np.ndarray]]:
  """(header, arrays) of a file written by `save_npz`; ValueError naming `path` if not."""
  try:
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
      raise ValueError("a single array, not an .npz archive")
    with data:
      header = json.loads(str(data["header"]))
      arrays = {name: np.asarray(data[name]) for name in names}
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path!r} is not a readable k-means file ({fmt}): {e}") from e
  if not isinstance(header, dict) or header.get("format") != fmt:
    raise ValueError(f"{path!r} is not a k-means file of format {fmt!r}.")
  if header.get("version") != FORMAT_VERSION:
    raise ValueError(
      f"{path!r} has format version {header.get('version')}; expected {FORMAT_VERSION}."
    )
  return header, arrays
