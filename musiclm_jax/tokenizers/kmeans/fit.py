"""The resumable streamed fit: `KMeansConfig` and `fit_kmeans`, with its progress files.

The fit streams (the data is far larger than memory):

1. Init: buffer the first `init_samples` vectors of the stream, take the normalisation statistics
   from them, seed the centroids by greedy k-means++ and optionally refine them by Lloyd
   iterations on the buffer.
2. Mini-batch passes (Sculley, 2010): each batch is assigned to the current centroids and every
   centre moves to the running mean of all points ever assigned to it (per-centre learning rate
   1 / count).

Progress (centroids, counts, statistics, position in the stream) is saved atomically to
`progress.npz` every few batches, and a rerun with the same checkpoint directory continues from
the last save, so a killed job neither loses nor repeats work and ends with the same centroids as
an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from musiclm_jax import partitioning
from musiclm_jax.tokenizers.kmeans.algorithm import (
  NORMALIZATIONS,
  Steps,
  jitted_steps,
  kmeans_plus_plus,
  normalization_stats,
)
from musiclm_jax.tokenizers.kmeans.model import (
  FORMAT_VERSION,
  PROGRESS_FILE,
  PROGRESS_FORMAT,
  KMeansModel,
  read_npz,
  save_npz,
  to_json,
)

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
    "format": PROGRESS_FORMAT,
    "version": FORMAT_VERSION,
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
  save_npz(os.path.join(directory, PROGRESS_FILE), header, arrays)


def _load_progress(directory: str, fingerprint: Mapping[str, Any]) -> _Progress | None:
  """The saved progress in `directory`, None if there is none; ValueError on a mismatch."""
  path = os.path.join(directory, PROGRESS_FILE)
  if not os.path.exists(path):
    return None
  header, arrays = read_npz(path, PROGRESS_FORMAT, ("centroids", "counts", "mean", "std"))
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
  path = os.path.join(checkpoint_dir, PROGRESS_FILE)
  if not os.path.exists(path):
    return None
  header, _ = read_npz(path, PROGRESS_FORMAT, ())
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


def _seed(key, normalized, x, weight, mean, std, config: KMeansConfig, steps: Steps):
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
  batches_fn, dim: int, config: KMeansConfig, steps: Steps, partitioner, log
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
  batches_fn, dim: int, config: KMeansConfig, progress: _Progress, steps: Steps, partitioner, save
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
  metadata = to_json(metadata or {}, "fit_kmeans metadata")
  partitioner = partitioner or partitioning.Partitioner()
  steps = jitted_steps(
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
