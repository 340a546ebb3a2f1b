"""Tests of streamed mini-batch k-means: quality against scikit-learn, determinism, sharded ==
unsharded, normalisation, save/load, kill -9 resume, bad input and k-means++ seeding."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans

from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers import kmeans
from musiclm_jax.tokenizers.kmeans import KMeansConfig, KMeansModel, fit_kmeans

DIM = 16
_QUIET = {"log_fn": lambda _: None}


def _mixture(num_components: int = 24, n: int = 3000, dim: int = DIM, seed: int = 0) -> np.ndarray:
  """[n, dim] float32 Gaussian mixture with unequal spreads and weights."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_components, dim)) * 4.0
  spreads = rng.lognormal(0.0, 0.5, size=num_components)
  labels = rng.choice(num_components, n, p=rng.dirichlet(np.full(num_components, 3.0)))
  points = centres[labels] + rng.normal(size=(n, dim)) * spreads[labels, None]
  return points.astype(np.float32)


def _blobs(k: int, per_blob: int, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Well-separated blobs, shuffled: ([k * per_blob, dim] float32, [k * per_blob] labels)."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, dim)) * 20.0
  labels = rng.permutation(np.repeat(np.arange(k), per_blob))
  return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def _stream(x: np.ndarray, batch_size: int) -> Callable[[int], Iterator[np.ndarray]]:
  """batches_fn over x in order: batches_fn(skip) yields the batches after the first `skip`."""
  return lambda skip: (x[i : i + batch_size] for i in range(skip * batch_size, len(x), batch_size))


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
  """Whether two labelings split the points identically (up to renaming the labels)."""
  pairs = set(zip(a.tolist(), b.tolist()))
  return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _small_config(**overrides) -> KMeansConfig:
  base = KMeansConfig(num_clusters=8, normalization="none", init_samples=256, num_epochs=2)
  return dataclasses.replace(base, **overrides)


@pytest.mark.parametrize(
  "config",
  [
    # The whole dataset fits the init buffer: k-means++ and Lloyd, then one streamed pass.
    KMeansConfig(32, "none", init_samples=4096, num_epochs=1, lloyd_iterations=50, num_inits=3),
    # A third of it does: the rest is learnt by the mini-batch passes alone.
    KMeansConfig(32, "none", init_samples=1000, num_epochs=3, lloyd_iterations=10, num_inits=3),
  ],
  ids=["buffer_lloyd", "streamed"],
)
def test_inertia_close_to_sklearn(config):
  x = _mixture()
  reference = KMeans(n_clusters=32, n_init=3, random_state=0).fit(x).inertia_
  seeds_only = fit_kmeans(
    _stream(x, 256), DIM, dataclasses.replace(config, num_epochs=0, lloyd_iterations=0), **_QUIET
  ).inertia(x)
  ours = fit_kmeans(_stream(x, 256), DIM, config, **_QUIET).inertia(x)
  message = f"ours {ours:.1f}, sklearn {reference:.1f}, k-means++ seeds only {seeds_only:.1f}"
  assert ours <= 1.03 * reference, message
  # The comparison has teeth: the seeds alone are far from it.
  assert seeds_only > 1.2 * reference, message


def test_centroids_are_running_means_of_their_points():
  # Sculley's rate 1/count makes each centre the mean of every point ever assigned to it: on
  # blobs whose assignment never changes, two passes end exactly at the blob means.
  x, labels = _blobs(k=4, per_blob=50)
  config = _small_config(num_clusters=4, init_samples=64, num_epochs=2)
  model = fit_kmeans(_stream(x, 37), 8, config, **_QUIET)
  ids = np.asarray(model.assign(x))
  assert _same_partition(ids, labels)
  means = np.stack([x[ids == c].mean(0) for c in range(4)])
  np.testing.assert_allclose(model.centroids, means, rtol=1e-5, atol=1e-4)


def test_deterministic_for_a_seed():
  x = _mixture(n=1000)

  def fit(seed: int) -> KMeansModel:
    return fit_kmeans(_stream(x, 100), DIM, _small_config(seed=seed), **_QUIET)

  first, again, other = fit(0), fit(0), fit(1)
  np.testing.assert_array_equal(first.centroids, again.centroids)
  assert not np.allclose(first.centroids, other.centroids, atol=1e-3)


@pytest.mark.parametrize(
  "mesh_config",
  [MeshConfig(), MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2)],
  ids=["data8", "2x2x2"],
)
def test_sharded_equals_unsharded(mesh_config, num_devices):
  if num_devices < 8:
    pytest.skip(f"needs 8 devices, has {num_devices}")
  x, _ = _blobs(k=8, per_blob=60)  # 480 rows in batches of 50: 9 of 50, one of 30, none ÷ 8
  config = _small_config(init_samples=100, lloyd_iterations=2)
  sharded_partitioner = Partitioner(mesh_config)
  assert sharded_partitioner.data_parallel_size > 1
  single = Partitioner(MeshConfig(ici_data=1, num_devices=1))
  sharded = fit_kmeans(_stream(x, 50), 8, config, partitioner=sharded_partitioner, **_QUIET)
  unsharded = fit_kmeans(_stream(x, 50), 8, config, partitioner=single, **_QUIET)
  np.testing.assert_allclose(sharded.centroids, unsharded.centroids, rtol=1e-5, atol=1e-5)


def test_l2_normalisation_assigns_by_direction():
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(6, DIM))
  spreads = np.array([0.02, 0.05, 0.1, 0.15, 0.2, 0.25])[:, None]  # unequal: centroid norms differ
  labels = rng.permutation(np.repeat(np.arange(6), 50))
  directions = centres[labels] + spreads[labels] * rng.normal(size=(300, DIM))
  x = (directions * rng.lognormal(0.0, 1.0, size=(300, 1))).astype(np.float32)
  config = _small_config(num_clusters=6, normalization="l2", lloyd_iterations=10, num_inits=3)
  model = fit_kmeans(_stream(x, 64), DIM, config, **_QUIET)
  np.testing.assert_allclose(np.linalg.norm(model.normalize(x), axis=-1), 1.0, rtol=1e-5)
  ids = np.asarray(model.assign(x))
  assert _same_partition(ids, labels)
  np.testing.assert_array_equal(np.asarray(model.assign(0.01 * x)), ids)
  by_hand, _ = kmeans.assign(model.centroids, x / np.linalg.norm(x, axis=-1, keepdims=True))
  np.testing.assert_array_equal(ids, np.asarray(by_hand))
  # Short vectors assigned without normalising would go to the shortest centroid instead.
  raw, _ = kmeans.assign(model.centroids, 0.01 * x)
  assert np.any(np.asarray(raw) != ids)


def test_standardize_undoes_per_dimension_scales():
  x, labels = _blobs(k=6, per_blob=50, dim=DIM)
  rng = np.random.default_rng(2)
  x[:, 0] = rng.normal(size=len(x))  # an uninformative feature...
  scales = np.logspace(-2, 2, DIM)
  scales[0] = 1000.0  # ...made the widest
  scaled = (x * scales + rng.normal(size=DIM) * 100).astype(np.float32)
  config = _small_config(
    num_clusters=6, normalization="standardize", lloyd_iterations=10, num_inits=3
  )
  plain = fit_kmeans(_stream(x, 64), DIM, config, **_QUIET)
  rescaled = fit_kmeans(_stream(scaled, 64), DIM, config, **_QUIET)
  normalized = np.asarray(rescaled.normalize(scaled[: config.init_samples]))
  np.testing.assert_allclose(normalized.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(normalized.std(0), 1.0, rtol=1e-4)
  assert _same_partition(np.asarray(plain.assign(x)), labels)
  assert _same_partition(np.asarray(rescaled.assign(scaled)), labels)
  # Without standardisation the rescaled data is clustered along the uninformative feature.
  unnormalized = fit_kmeans(
    _stream(scaled, 64), DIM, dataclasses.replace(config, normalization="none"), **_QUIET
  )
  assert not _same_partition(np.asarray(unnormalized.assign(scaled)), labels)


def test_model_assign_is_jittable_and_keeps_leading_dims():
  x, _ = _blobs(k=4, per_blob=40)
  model = fit_kmeans(_stream(x, 40), 8, _small_config(num_clusters=4, init_samples=64), **_QUIET)
  frames = jnp.asarray(x[:30].reshape(2, 15, 8))
  ids = jax.jit(lambda f: model.assign(f) + 0)(frames)
  assert ids.shape == (2, 15) and ids.dtype == jnp.int32
  np.testing.assert_array_equal(ids.reshape(-1), model.assign(x[:30]))


def test_save_load_round_trip(tmp_path):
  x, _ = _blobs(k=4, per_blob=40)
  config = _small_config(num_clusters=4, init_samples=64, normalization="standardize")
  metadata = {"layer": 7, "module": "mlm", "source_checkpoint": "w2v-bert/ckpt-1"}
  model = fit_kmeans(_stream(x, 40), 8, config, metadata=metadata, **_QUIET)
  model.save(str(tmp_path / "kmeans"))
  loaded = KMeansModel.load(str(tmp_path / "kmeans"))
  for name in ("centroids", "mean", "std"):
    np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
  assert loaded.normalization == "standardize"
  assert {k: loaded.metadata[k] for k in metadata} == metadata
  assert loaded.metadata["kmeans_fit"]["config"]["num_clusters"] == 4
  np.testing.assert_array_equal(loaded.assign(x), model.assign(x))
  readable = json.loads((tmp_path / "kmeans" / "kmeans.json").read_text())
  assert readable["metadata"]["layer"] == 7 and readable["normalization"] == "standardize"


def test_load_errors_name_the_directory(tmp_path):
  missing = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="missing"):
    KMeansModel.load(missing)
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="empty.*not a k-means checkpoint"):
    KMeansModel.load(str(tmp_path / "empty"))
  (tmp_path / "garbage").mkdir()
  (tmp_path / "garbage" / "kmeans.npz").write_bytes(b"not a zip file")
  with pytest.raises(ValueError, match="garbage"):
    KMeansModel.load(str(tmp_path / "garbage"))
  x, _ = _blobs(k=4, per_blob=40)
  progress = str(tmp_path / "progress")
  config = _small_config(num_clusters=4, init_samples=64)
  fit_kmeans(_stream(x, 40), 8, config, checkpoint_dir=progress, **_QUIET)
  with pytest.raises(ValueError, match="fit progress"):
    KMeansModel.load(progress)


def test_checkpoint_of_another_fit_is_refused(tmp_path):
  x, _ = _blobs(k=4, per_blob=40)
  directory = str(tmp_path / "progress")
  config = _small_config(num_clusters=4, init_samples=64)
  fit_kmeans(_stream(x, 40), 8, config, checkpoint_dir=directory, **_QUIET)
  with pytest.raises(ValueError, match="num_clusters: checkpoint 4 vs this run 3"):
    other = dataclasses.replace(config, num_clusters=3)
    fit_kmeans(_stream(x, 40), 8, other, checkpoint_dir=directory, **_QUIET)
  with pytest.raises(ValueError, match="dim: checkpoint 8 vs this run 6"):
    fit_kmeans(_stream(x[:, :6], 40), 6, config, checkpoint_dir=directory, **_QUIET)


def test_finished_checkpoint_is_not_refitted(tmp_path):
  x, _ = _blobs(k=4, per_blob=40)
  directory = str(tmp_path / "progress")
  config = _small_config(num_clusters=4, init_samples=64)
  model = fit_kmeans(_stream(x, 40), 8, config, checkpoint_dir=directory, **_QUIET)
  calls = []

  def no_data(skip: int) -> Iterator[np.ndarray]:
    calls.append(skip)
    return iter(())

  again = fit_kmeans(no_data, 8, config, checkpoint_dir=directory, **_QUIET)
  assert calls == [] and kmeans.checkpoint_position(directory) == (config.num_epochs, 0)
  np.testing.assert_array_equal(again.centroids, model.centroids)


_FIT_SCRIPT = """
import json, os, sys, time
import numpy as np
from musiclm_jax.tokenizers import kmeans

data, checkpoint_dir, out, delay, batch_size, log = sys.argv[1:7]
x = np.load(data)
config = kmeans.KMeansConfig(**json.loads(os.environ["KMEANS_CONFIG"]))

def batches(skip):
  with open(log, "a") as f:
    f.write(f"{skip}\\n")
  for i in range(skip * int(batch_size), len(x), int(batch_size)):
    time.sleep(float(delay))
    yield x[i : i + int(batch_size)]

model = kmeans.fit_kmeans(batches, x.shape[1], config, checkpoint_dir=checkpoint_dir)
np.save(out, model.centroids)
"""


def _wait_for_progress(directory: str, process: subprocess.Popen, batches: int) -> None:
  """Blocks until `directory` holds progress past `batches` batches of epoch 0."""
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline:
    assert process.poll() is None, "the fit ended before it could be killed"
    position = kmeans.checkpoint_position(directory)
    if position is not None and position >= (0, batches):
      return
    time.sleep(0.05)
  raise AssertionError("no progress checkpoint appeared in 120 s")


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_fit(tmp_path):
  x, _ = _blobs(k=6, per_blob=100)  # 600 rows: 15 batches of 40 per epoch
  config = _small_config(num_clusters=6, init_samples=100, checkpoint_every_batches=1)
  reference = fit_kmeans(_stream(x, 40), 8, config, **_QUIET)
  np.save(tmp_path / "x.npy", x)
  (tmp_path / "fit.py").write_text(textwrap.dedent(_FIT_SCRIPT))
  env = {
    **os.environ,
    "KMEANS_CONFIG": json.dumps(dataclasses.asdict(config)),
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    "JAX_PLATFORMS": "cpu",
  }
  directory, log = str(tmp_path / "progress"), tmp_path / "log.txt"

  def command(delay: float, out: str) -> list[str]:
    paths = [tmp_path / "fit.py", tmp_path / "x.npy", directory, tmp_path / out]
    return [sys.executable, *map(str, paths), str(delay), "40", str(log)]

  with open(tmp_path / "killed.log", "wb") as stderr:
    slow = subprocess.Popen(command(0.15, "killed.npy"), env=env, stderr=stderr)
    try:
      _wait_for_progress(directory, slow, batches=4)
    finally:
      if slow.poll() is None:
        os.kill(slow.pid, signal.SIGKILL)
      returncode = slow.wait()
  assert returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
  epoch, done = kmeans.checkpoint_position(directory)
  assert (epoch, done) < (config.num_epochs, 0), "the killed fit had already finished"
  calls_before = len(log.read_text().split())
  resumed = subprocess.run(command(0.0, "resumed.npy"), env=env, capture_output=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
  # The rerun skips the init and starts at the saved batch: no work lost or repeated.
  assert int(log.read_text().split()[calls_before]) == done
  np.testing.assert_array_equal(np.load(tmp_path / "resumed.npy"), reference.centroids)


@pytest.mark.parametrize(
  "stream, match",
  [
    ([np.zeros((40, 8))] * 2 + [np.full((40, 8), np.nan)], "Batch 2 of epoch 0 has 40 of 40 rows"),
    (
      [np.ones((40, 8))] * 5 + [np.where(np.eye(40, 8) > 0, np.inf, 1.0)],
      "Batch 5 of epoch 0 has 8 of 40 rows",
    ),
    ([], "empty stream"),
    ([np.zeros((0, 8))], "empty stream"),
    ([np.ones((3, 8))] * 2, "6 vectors in the whole stream, fewer than num_clusters=8"),
    ([np.ones((40, 7))], r"Batch 0 of epoch 0 has shape \(40, 7\); expected \[n, 8\]"),
  ],
  ids=["nan_in_init", "inf_after_init", "empty", "empty_batch", "too_few", "wrong_dim"],
)
def test_bad_input_is_refused(stream, match):
  config = _small_config(init_samples=100)
  with pytest.raises(ValueError, match=match):
    fit_kmeans(lambda skip: iter(stream[skip:]), 8, config, **_QUIET)


def test_config_validation():
  with pytest.raises(ValueError, match="normalization"):
    KMeansConfig(normalization="whiten")
  with pytest.raises(ValueError, match="init_samples"):
    KMeansConfig(num_clusters=16, init_samples=8)


def test_kmeans_plus_plus_seeds_one_point_per_blob():
  x, labels = _blobs(k=8, per_blob=30)
  for seed in range(3):
    centres = np.asarray(kmeans.kmeans_plus_plus(jax.random.key(seed), jnp.asarray(x), 8))
    rows = [int(np.flatnonzero((x == c).all(-1))[0]) for c in centres]  # each centre is a point
    assert sorted(labels[rows].tolist()) == list(range(8))


def test_kmeans_plus_plus_beats_random_choice():
  x = jnp.asarray(_mixture(n=1000))

  def inertia(centres: jax.Array) -> float:
    return float(jnp.sum(kmeans.assign(centres, x)[1]))

  keys = [jax.random.key(seed) for seed in range(5)]
  plus_plus = np.mean([inertia(kmeans.kmeans_plus_plus(key, x, 32)) for key in keys])
  random = np.mean([inertia(x[jax.random.choice(key, 1000, (32,), replace=False)]) for key in keys])
  assert plus_plus < 0.85 * random, f"k-means++ {plus_plus:.1f}, random choice {random:.1f}"
