"""Mini-batch k-means over a stream of embeddings: the codebook of the semantic tokens.

MusicLM (§3.2) turns w2v-BERT activations into semantic tokens by k-means: embeddings from the
7th layer of the MLM module are normalised and clustered into 1024 centroids, and a frame's token
is the id of its nearest centroid. The dataset is far larger than memory, so the fit streams:

1. Init: buffer the first `init_samples` vectors of the stream, take the normalisation statistics
   from them, seed the centroids by greedy k-means++ and optionally refine them by Lloyd
   iterations on the buffer.
2. Mini-batch passes (Sculley, 2010): each batch is assigned to the current centroids and every
   centre moves to the running mean of all points ever assigned to it (per-centre learning rate
   1 / count).

Assignment and per-cluster sums run under `jax.jit` with the batch rows sharded over the data
axes; the sums are plain global sums, so GSPMD makes them the same whatever the sharding. Progress
(centroids, counts, statistics, position in the stream) is saved atomically every few batches,
and a rerun with the same checkpoint directory continues from the last save, so a killed job
neither loses nor repeats work and ends with the same centroids as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import os
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from musiclm_jax import partitioning

NORMALIZATIONS = ("none", "l2", "standardize")

# Nearest-centroid search makes discrete decisions: never let a bf16 matmul pass flip an argmin.
_HIGHEST = jax.lax.Precision.HIGHEST
# A feature whose spread is below this is constant in the buffer; dividing by it would blow up
# later frames, so it is only centred.
_MIN_STD = 1e-6
_MIN_NORM = 1e-12
# Rows per chunk when computing statistics or inertia over many vectors (bounds memory).
_CHUNK_ROWS = 65536

_MODEL_FILE = "kmeans.npz"
_MODEL_JSON = "kmeans.json"
_PROGRESS_FILE = "progress.npz"
_MODEL_FORMAT = "musiclm_jax.kmeans"
_PROGRESS_FORMAT = "musiclm_jax.kmeans.progress"
_FORMAT_VERSION = 1
# Config fields that do not change the result, so a resumed run may change them.
_RESUME_FREE_FIELDS = ("checkpoint_every_batches",)


@dataclasses.dataclass(frozen=True)
class KMeansConfig:
  """Settings of a streamed k-means fit (paper: 1024 clusters).

  Attributes:
    num_clusters: k.
    normalization: 'none'; 'l2' (each vector to unit norm); or 'standardize' (per-dimension
      mean and standard deviation, measured on the init buffer).
    init_samples: vectors buffered from the start of the stream for the statistics and the
      k-means++ seeding; bounds the memory of the fit.
    num_epochs: mini-batch passes over the stream after the init.
    lloyd_iterations: full Lloyd iterations on the init buffer before streaming. When > 0 the
      centroids enter the stream as means of their buffer points and keep those counts.
    num_inits: seedings (k-means++ + Lloyd) tried on the init buffer; the one of least buffer
      inertia is kept (scikit-learn's `n_init`).
    seed: seed of the k-means++ sampling; the fit is deterministic given it.
    checkpoint_every_batches: save progress every this many batches (and at each epoch end).
  """

  num_clusters: int = 1024
  normalization: str = "standardize"
  init_samples: int = 65536
  num_epochs: int = 1
  lloyd_iterations: int = 0
  num_inits: int = 1
  seed: int = 0
  checkpoint_every_batches: int = 50

  def __post_init__(self):
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f"KMeansConfig.normalization={self.normalization!r}: use {NORMALIZATIONS}.")
    if self.num_clusters < 1:
      raise ValueError(f"KMeansConfig.num_clusters={self.num_clusters} must be >= 1.")
    if self.init_samples < self.num_clusters:
      raise ValueError(
        f"KMeansConfig.init_samples={self.init_samples} must be >= num_clusters="
        f"{self.num_clusters} (k-means++ seeds from the init buffer)."
      )
    if self.num_inits < 1:
      raise ValueError(f"KMeansConfig.num_inits={self.num_inits} must be >= 1.")
    if self.num_epochs < 0 or self.lloyd_iterations < 0:
      raise ValueError(f"KMeansConfig epochs and Lloyd iterations must be >= 0: {self}.")
    if self.checkpoint_every_batches < 1:
      raise ValueError(f"KMeansConfig.checkpoint_every_batches must be >= 1: {self}.")


# ----------------------------------------------------------------------------------------------
# Pure functions: normalisation, distances, assignment, seeding.


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
  chunks = range(0, len(x), _CHUNK_ROWS)
  mean = sum(x[i : i + _CHUNK_ROWS].sum(0, dtype=np.float64) for i in chunks) / len(x)
  sq = sum(np.square(x[i : i + _CHUNK_ROWS] - mean).sum(0) for i in chunks)
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


# ----------------------------------------------------------------------------------------------
# The fitted model.


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
    object.__setattr__(self, "metadata", _to_json(self.metadata, "KMeansModel.metadata"))

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
    for i in range(0, len(x), _CHUNK_ROWS):
      chunk = x[i : i + _CHUNK_ROWS]
      total += float(_chunk_inertia(self.centroids, self.mean, self.std, chunk, self.normalization))
    return total

  def save(self, directory: str) -> None:
    """Writes `kmeans.npz` (authoritative, replaced atomically) and a readable `kmeans.json`."""
    os.makedirs(directory, exist_ok=True)
    header = {
      "format": _MODEL_FORMAT,
      "version": _FORMAT_VERSION,
      "normalization": self.normalization,
      "num_clusters": self.num_clusters,
      "dim": self.dim,
      "metadata": self.metadata,
    }
    arrays = {"centroids": self.centroids, "mean": self.mean, "std": self.std}
    _atomic_savez(os.path.join(directory, _MODEL_FILE), header, arrays)
    _atomic_write(os.path.join(directory, _MODEL_JSON), json.dumps(header, indent=2).encode())

  @classmethod
  def load(cls, directory: str) -> KMeansModel:
    """Reads a model written by `save`.

    Raises:
      FileNotFoundError: `directory` does not exist.
      ValueError: it is not a k-means model checkpoint.
    """
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"No k-means checkpoint at {directory!r}: no such directory.")
    path = os.path.join(directory, _MODEL_FILE)
    if not os.path.isfile(path):
      hint = ""
      if os.path.isfile(os.path.join(directory, _PROGRESS_FILE)):
        hint = " It holds fit progress: finish it with fit_kmeans and save the returned model."
      raise ValueError(f"{directory!r} is not a k-means checkpoint: it has no {_MODEL_FILE}.{hint}")
    header, arrays = _read_npz(path, _MODEL_FORMAT, ("centroids", "mean", "std"))
    return cls(
      centroids=arrays["centroids"],
      mean=arrays["mean"],
      std=arrays["std"],
      normalization=header["normalization"],
      metadata=header.get("metadata", {}),
    )


# ----------------------------------------------------------------------------------------------
# Files: atomic writes and checked reads.


def _to_json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
  """Round-trips through JSON, so a bad value fails now rather than at the end of a long fit."""
  try:
    return json.loads(json.dumps(dict(value)))
  except (TypeError, ValueError) as e:
    raise ValueError(f"{what} must be JSON-serialisable: {e}") from e


def _atomic_write(path: str, data: bytes) -> None:
  """Writes a temporary file, syncs it, then renames it over `path` (readers see old or new)."""
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)


def _atomic_savez(path: str, header: Mapping[str, Any], arrays: Mapping[str, Any]) -> None:
  """One .npz holding `arrays` and the JSON `header`, written atomically."""
  buffer = io.BytesIO()
  np.savez(buffer, header=np.asarray(json.dumps(header)), **arrays)
  _atomic_write(path, buffer.getvalue())


def _read_npz(path: str, fmt: str, names: tuple[str, ...]) -> tuple[dict, dict[str, np.ndarray]]:
  """(header, arrays) of a file written by `_atomic_savez`; ValueError naming `path` if not."""
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
  if header.get("version") != _FORMAT_VERSION:
    raise ValueError(
      f"{path!r} has format version {header.get('version')}; expected {_FORMAT_VERSION}."
    )
  return header, arrays


# ----------------------------------------------------------------------------------------------
# Fitting: jitted steps.


class _Steps(NamedTuple):
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
def _steps(normalization: str, replicated, rows, row_weights) -> _Steps:
  """Builds (once per combination, so compilations are shared across fits) the jitted steps."""
  rep = replicated

  def normalize_fn(x, mean, std):
    return normalize(x, normalization, mean, std)

  return _Steps(
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


# ----------------------------------------------------------------------------------------------
# Fitting: host side.


@dataclasses.dataclass
class _Progress:
  """Everything a fit needs to continue: saved to and restored from `progress.npz`.

  Attributes:
    centroids: [k, dim] float32; counts: [k] int32 points assigned so far (mini-batch rates).
    mean, std: [dim] normalisation statistics.
    epoch, batches_done: the next batch to process is batch `batches_done` of epoch `epoch`.
    vectors_seen: vectors consumed by the mini-batch passes so far.
  """

  centroids: Any
  counts: Any
  mean: np.ndarray
  std: np.ndarray
  epoch: int = 0
  batches_done: int = 0
  vectors_seen: int = 0


def _fingerprint(config: KMeansConfig, dim: int) -> dict[str, Any]:
  """What must match between a progress checkpoint and the run resuming from it."""
  fields = dataclasses.asdict(config)
  fingerprint = {k: v for k, v in fields.items() if k not in _RESUME_FREE_FIELDS}
  return {"dim": int(dim), **fingerprint}


def _save_progress(directory: str, progress: _Progress, fingerprint: Mapping[str, Any]) -> None:
  """Writes `progress.npz` atomically: a kill leaves the previous save or this one."""
  centroids = np.asarray(jax.device_get(progress.centroids))
  if not np.isfinite(centroids).all():
    # Never write (or hand out) NaN centroids: this only happens with overflowing inputs.
    raise ValueError(
      f"k-means centroids became non-finite at epoch {progress.epoch}, batch "
      f"{progress.batches_done}: the input values are too large for float32 squares."
    )
  os.makedirs(directory, exist_ok=True)
  header = {
    "format": _PROGRESS_FORMAT,
    "version": _FORMAT_VERSION,
    "fingerprint": dict(fingerprint),
    "epoch": progress.epoch,
    "batches_done": progress.batches_done,
    "vectors_seen": progress.vectors_seen,
  }
  arrays = {
    "centroids": centroids,
    "counts": np.asarray(jax.device_get(progress.counts)),
    "mean": progress.mean,
    "std": progress.std,
  }
  _atomic_savez(os.path.join(directory, _PROGRESS_FILE), header, arrays)


def _load_progress(directory: str, fingerprint: Mapping[str, Any]) -> _Progress | None:
  """The saved progress in `directory`, None if there is none; ValueError on a mismatch."""
  path = os.path.join(directory, _PROGRESS_FILE)
  if not os.path.exists(path):
    return None
  header, arrays = _read_npz(path, _PROGRESS_FORMAT, ("centroids", "counts", "mean", "std"))
  saved = header.get("fingerprint", {})
  differences = [
    f"{name}: checkpoint {saved.get(name)!r} vs this run {value!r}"
    for name, value in fingerprint.items()
    if saved.get(name) != value
  ]
  if differences:
    raise ValueError(
      f"The k-means checkpoint in {directory!r} belongs to another fit ("
      + "; ".join(differences)
      + "). Use the original settings or another checkpoint_dir."
    )
  return _Progress(
    centroids=arrays["centroids"],
    counts=arrays["counts"],
    mean=arrays["mean"],
    std=arrays["std"],
    epoch=int(header["epoch"]),
    batches_done=int(header["batches_done"]),
    vectors_seen=int(header["vectors_seen"]),
  )


def checkpoint_position(checkpoint_dir: str) -> tuple[int, int] | None:
  """(epoch, batches done in it) of the progress saved in `checkpoint_dir`, None if none.

  An epoch equal to `num_epochs` means the fit is complete.
  """
  path = os.path.join(checkpoint_dir, _PROGRESS_FILE)
  if not os.path.exists(path):
    return None
  header, _ = _read_npz(path, _PROGRESS_FORMAT, ())
  return int(header["epoch"]), int(header["batches_done"])


def _check_batch(batch: Any, dim: int, epoch: int, index: int) -> np.ndarray:
  """The batch as float32 [n, dim]; ValueError naming the batch if it is malformed or not finite."""
  x = np.asarray(batch)
  if x.ndim != 2 or x.shape[1] != dim:
    raise ValueError(f"Batch {index} of epoch {epoch} has shape {x.shape}; expected [n, {dim}].")
  x = x.astype(np.float32, copy=False)
  bad = ~np.isfinite(x).all(axis=1)
  if bad.any():
    raise ValueError(
      f"Batch {index} of epoch {epoch} has {int(bad.sum())} of {len(x)} rows with NaN or inf "
      f"values (first at row {int(np.argmax(bad))}); drop or repair them before k-means."
    )
  return x


def _iterate(
  batches_fn: Callable[[int], Iterator[np.ndarray]], skip: int, dim: int, epoch: int
) -> Iterator[tuple[int, np.ndarray]]:
  """(batch index, checked batch) of one epoch from batch `skip` on; closes the source."""
  source = batches_fn(skip)
  try:
    for index, batch in enumerate(source, start=skip):
      yield index, _check_batch(batch, dim, epoch, index)
  finally:
    close = getattr(source, "close", None)
    if close is not None:
      close()


def _pad_rows(x: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
  """x [n, dim] zero-padded to a multiple of `multiple` rows, and its [rows] 0/1 weights."""
  n = x.shape[0]
  rows = -(-n // multiple) * multiple
  weight = np.zeros(rows, np.float32)
  weight[:n] = 1.0
  if rows != n:
    x = np.concatenate([x, np.zeros((rows - n, x.shape[1]), np.float32)])
  return x, weight


def _gather_init_buffer(batches_fn, dim: int, config: KMeansConfig) -> np.ndarray:
  """[m, dim] the first m = min(init_samples, stream size) vectors of epoch 0."""
  parts, total = [], 0
  with contextlib.closing(_iterate(batches_fn, 0, dim, 0)) as batches:
    for _, x in batches:
      take = min(len(x), config.init_samples - total)
      parts.append(np.array(x[:take]))  # a copy: do not keep the whole batch alive
      total += take
      if total >= config.init_samples:
        break
  if total == 0:
    raise ValueError("k-means got an empty stream: batches_fn(0) yielded no vectors.")
  if total < config.num_clusters:
    raise ValueError(
      f"k-means got {total} vectors in the whole stream, fewer than num_clusters="
      f"{config.num_clusters}."
    )
  return np.concatenate(parts)


def _seed(key, normalized, x, weight, mean, std, config: KMeansConfig, steps: _Steps):
  """One k-means++ seeding plus Lloyd iterations: (centroids, counts, buffer inertia or None)."""
  centroids = kmeans_plus_plus(key, normalized, config.num_clusters)
  counts = jnp.zeros((config.num_clusters,), jnp.int32)
  for _ in range(config.lloyd_iterations):
    jax.block_until_ready(centroids)  # one collective program in flight: see _run_epochs
    centroids, counts, _ = steps.lloyd(centroids, mean, std, x, weight)
  if config.num_inits == 1:
    return centroids, counts, None  # nothing to compare: skip the extra pass
  jax.block_until_ready(centroids)
  _, _, inertia = steps.lloyd(centroids, mean, std, x, weight)
  return centroids, counts, float(inertia)


def _initialise(
  batches_fn, dim: int, config: KMeansConfig, steps: _Steps, partitioner, log
) -> _Progress:
  """Statistics, then the best of `num_inits` (k-means++ seeds + Lloyd) on the init buffer."""
  buffer = _gather_init_buffer(batches_fn, dim, config)
  mean, std = normalization_stats(buffer, config.normalization)
  normalized = steps.normalize(buffer, mean, std)
  x, weight = partitioner.shard_batch(_pad_rows(buffer, partitioner.data_parallel_size))
  best = None
  for i in range(config.num_inits):
    key = jax.random.fold_in(jax.random.key(config.seed), i)
    candidate = _seed(key, normalized, x, weight, mean, std, config, steps)
    if candidate[2] is not None:
      log(f"k-means init {i}: buffer inertia {candidate[2]:.6g}")
    if best is None or candidate[2] < best[2]:
      best = candidate
  log(f"k-means init: {len(buffer)} buffered vectors, {config.num_clusters} centroids.")
  return _Progress(best[0], best[1], mean, std)


def _mean(inertias: list[jax.Array], rows: int) -> float | None:
  """Mean squared distance of `rows` vectors from their batch inertias; None if no rows."""
  return sum(float(v) for v in inertias) / rows if rows else None


def _run_epochs(
  batches_fn, dim: int, config: KMeansConfig, progress: _Progress, steps: _Steps, partitioner, save
) -> _Progress:
  """Mini-batch passes from the saved position to the end; saves as it goes."""
  replicated = partitioner.replicated
  centroids = jax.device_put(progress.centroids, replicated)
  counts = jax.device_put(progress.counts, replicated)
  mean, std = jax.device_put((progress.mean, progress.std), replicated)
  inertias, rows = [], 0  # since the last log line
  for epoch in range(progress.epoch, config.num_epochs):
    skip = progress.batches_done if epoch == progress.epoch else 0
    with contextlib.closing(_iterate(batches_fn, skip, dim, epoch)) as batches:
      for index, x in batches:
        if len(x):
          sharded = partitioner.shard_batch(_pad_rows(x, partitioner.data_parallel_size))
          # At most one step in flight (the host reads and checks the next batch while it runs):
          # bounds the batches queued on the device, and XLA:CPU's multi-device collectives
          # deadlock with several programs queued (seen with 8 host devices on 2 cores).
          jax.block_until_ready(counts)
          centroids, counts, inertia = steps.minibatch(centroids, counts, mean, std, *sharded)
          inertias.append(inertia)
          rows += len(x)
        progress.vectors_seen += len(x)
        if (index + 1) % config.checkpoint_every_batches == 0:
          progress.centroids, progress.counts = centroids, counts
          progress.epoch, progress.batches_done = epoch, index + 1
          save(progress, _mean(inertias, rows))
          inertias, rows = [], 0
    progress.centroids, progress.counts = centroids, counts
    progress.epoch, progress.batches_done = epoch + 1, 0
    save(progress, _mean(inertias, rows))
    inertias, rows = [], 0
  return progress


def fit_kmeans(
  batches_fn: Callable[[int], Iterator[np.ndarray]],
  dim: int,
  config: KMeansConfig,
  *,
  partitioner: partitioning.Partitioner | None = None,
  checkpoint_dir: str | None = None,
  metadata: Mapping[str, Any] | None = None,
  log_fn: Callable[[str], None] | None = None,
) -> KMeansModel:
  """Fits k-means to a stream of vectors in bounded memory, resumably.

  Args:
    batches_fn: `batches_fn(skip)` returns an iterator over one epoch of [n_i, dim] float arrays,
      starting after the first `skip` batches; it must yield the same batches every call.
    dim: dimension of the vectors.
    config: k-means settings.
    partitioner: batch rows are sharded over its data axes (default: `Partitioner()`, all
      devices). Single-process: each batch is the global batch.
    checkpoint_dir: progress is saved here and a rerun with the same directory continues from
      it; None: no checkpoints.
    metadata: JSON-able facts kept in the model (e.g. {"layer": 7, "module": "mlm"}).
    log_fn: progress lines (default: absl logging).
  Returns:
    The fitted model; its metadata adds `kmeans_fit` (config, vectors seen) to `metadata`.
  Raises:
    ValueError: empty stream, fewer vectors than clusters, a malformed or non-finite batch, or a
      checkpoint of another config or dim in `checkpoint_dir`.
  """
  log = log_fn or logging.info
  metadata = _to_json(metadata or {}, "fit_kmeans metadata")
  partitioner = partitioner or partitioning.Partitioner()
  steps = _steps(
    config.normalization,
    partitioner.replicated,
    partitioner.batch_sharding(2),
    partitioner.batch_sharding(1),
  )
  fingerprint = _fingerprint(config, dim)

  def save(progress: _Progress, mean_inertia: float | None = None) -> None:
    where = f"epoch {progress.epoch}, batch {progress.batches_done}"
    if mean_inertia is not None:
      log(f"k-means {where}: mean squared distance {mean_inertia:.6g}")
    if checkpoint_dir is not None:
      _save_progress(checkpoint_dir, progress, fingerprint)

  progress = _load_progress(checkpoint_dir, fingerprint) if checkpoint_dir else None
  if progress is None:
    progress = _initialise(batches_fn, dim, config, steps, partitioner, log)
    save(progress)
  else:
    log(f"k-means resuming at epoch {progress.epoch}, batch {progress.batches_done}.")
  progress = _run_epochs(batches_fn, dim, config, progress, steps, partitioner, save)
  centroids = np.asarray(jax.device_get(progress.centroids))
  if not np.isfinite(centroids).all():
    raise ValueError("k-means centroids are non-finite: the input values overflow float32.")
  fit_info = {"config": dataclasses.asdict(config), "vectors_seen": progress.vectors_seen}
  return KMeansModel(
    centroids=centroids,
    mean=progress.mean,
    std=progress.std,
    normalization=config.normalization,
    metadata={**metadata, "kmeans_fit": fit_info},
  )
