"""The streamed mini-batch fit (`kmeans/fit.py`): quality against scikit-learn, determinism,
sharded == unsharded, normalisation, kill -9 resume, bad input and config validation."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.cluster import KMeans

from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers import kmeans
from musiclm_jax.tokenizers.kmeans import KMeansConfig, KMeansModel, fit_kmeans
from tests.tokenizers.kmeans.streams import (
  DIM,
  QUIET,
  blobs,
  mixture,
  same_partition,
  small_config,
  stream,
)


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
  x = mixture()
  reference = KMeans(n_clusters=32, n_init=3, random_state=0).fit(x).inertia_
  seeds_only = fit_kmeans(
    stream(x, 256), DIM, dataclasses.replace(config, num_epochs=0, lloyd_iterations=0), **QUIET
  ).inertia(x)
  ours = fit_kmeans(stream(x, 256), DIM, config, **QUIET).inertia(x)
  message = f"ours {ours:.1f}, sklearn {reference:.1f}, k-means++ seeds only {seeds_only:.1f}"
  assert ours <= 1.03 * reference, message
  # The comparison has teeth: the seeds alone are far from it.
  assert seeds_only > 1.2 * reference, message


def test_centroids_are_running_means_of_their_points():
  # Sculley's rate 1/count makes each centre the mean of every point ever assigned to it: on
  # blobs whose assignment never changes, two passes end exactly at the blob means.
  x, labels = blobs(k=4, per_blob=50)
  config = small_config(num_clusters=4, init_samples=64, num_epochs=2)
  model = fit_kmeans(stream(x, 37), 8, config, **QUIET)
  ids = np.asarray(model.assign(x))
  assert same_partition(ids, labels)
  means = np.stack([x[ids == c].mean(0) for c in range(4)])
  np.testing.assert_allclose(model.centroids, means, rtol=1e-5, atol=1e-4)


def test_deterministic_for_a_seed():
  x = mixture(n=1000)

  def fit(seed: int) -> KMeansModel:
    return fit_kmeans(stream(x, 100), DIM, small_config(seed=seed), **QUIET)

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
  x, _ = blobs(k=8, per_blob=60)  # 480 rows in batches of 50: 9 of 50, one of 30, none ÷ 8
  config = small_config(init_samples=100, lloyd_iterations=2)
  sharded_partitioner = Partitioner(mesh_config)
  assert sharded_partitioner.data_parallel_size > 1
  single = Partitioner(MeshConfig(ici_data=1, num_devices=1))
  sharded = fit_kmeans(stream(x, 50), 8, config, partitioner=sharded_partitioner, **QUIET)
  unsharded = fit_kmeans(stream(x, 50), 8, config, partitioner=single, **QUIET)
  np.testing.assert_allclose(sharded.centroids, unsharded.centroids, rtol=1e-5, atol=1e-5)


def test_l2_normalisation_assigns_by_direction():
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(6, DIM))
  spreads = np.array([0.02, 0.05, 0.1, 0.15, 0.2, 0.25])[:, None]  # unequal: centroid norms differ
  labels = rng.permutation(np.repeat(np.arange(6), 50))
  directions = centres[labels] + spreads[labels] * rng.normal(size=(300, DIM))
  x = (directions * rng.lognormal(0.0, 1.0, size=(300, 1))).astype(np.float32)
  config = small_config(num_clusters=6, normalization="l2", lloyd_iterations=10, num_inits=3)
  model = fit_kmeans(stream(x, 64), DIM, config, **QUIET)
  np.testing.assert_allclose(np.linalg.norm(model.normalize(x), axis=-1), 1.0, rtol=1e-5)
  ids = np.asarray(model.assign(x))
  assert same_partition(ids, labels)
  np.testing.assert_array_equal(np.asarray(model.assign(0.01 * x)), ids)
  by_hand, _ = kmeans.assign(model.centroids, x / np.linalg.norm(x, axis=-1, keepdims=True))
  np.testing.assert_array_equal(ids, np.asarray(by_hand))
  # Short vectors assigned without normalising would go to the shortest centroid instead.
  raw, _ = kmeans.assign(model.centroids, 0.01 * x)
  assert np.any(np.asarray(raw) != ids)


def test_standardize_undoes_per_dimension_scales():
  x, labels = blobs(k=6, per_blob=50, dim=DIM)
  rng = np.random.default_rng(2)
  x[:, 0] = rng.normal(size=len(x))  # an uninformative feature...
  scales = np.logspace(-2, 2, DIM)
  scales[0] = 1000.0  # ...made the widest
  scaled = (x * scales + rng.normal(size=DIM) * 100).astype(np.float32)
  config = small_config(
    num_clusters=6, normalization="standardize", lloyd_iterations=10, num_inits=3
  )
  plain = fit_kmeans(stream(x, 64), DIM, config, **QUIET)
  rescaled = fit_kmeans(stream(scaled, 64), DIM, config, **QUIET)
  normalized = np.asarray(rescaled.normalize(scaled[: config.init_samples]))
  np.testing.assert_allclose(normalized.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(normalized.std(0), 1.0, rtol=1e-4)
  assert same_partition(np.asarray(plain.assign(x)), labels)
  assert same_partition(np.asarray(rescaled.assign(scaled)), labels)
  # Without standardisation the rescaled data is clustered along the uninformative feature.
  unnormalized = fit_kmeans(
    stream(scaled, 64), DIM, dataclasses.replace(config, normalization="none"), **QUIET
  )
  assert not same_partition(np.asarray(unnormalized.assign(scaled)), labels)


def test_checkpoint_of_another_fit_is_refused(tmp_path):
  x, _ = blobs(k=4, per_blob=40)
  directory = str(tmp_path / "progress")
  config = small_config(num_clusters=4, init_samples=64)
  fit_kmeans(stream(x, 40), 8, config, checkpoint_dir=directory, **QUIET)
  with pytest.raises(ValueError, match="num_clusters: checkpoint 4 vs this run 3"):
    other = dataclasses.replace(config, num_clusters=3)
    fit_kmeans(stream(x, 40), 8, other, checkpoint_dir=directory, **QUIET)
  with pytest.raises(ValueError, match="dim: checkpoint 8 vs this run 6"):
    fit_kmeans(stream(x[:, :6], 40), 6, config, checkpoint_dir=directory, **QUIET)


def test_finished_checkpoint_is_not_refitted(tmp_path):
  x, _ = blobs(k=4, per_blob=40)
  directory = str(tmp_path / "progress")
  config = small_config(num_clusters=4, init_samples=64)
  model = fit_kmeans(stream(x, 40), 8, config, checkpoint_dir=directory, **QUIET)
  calls = []

  def no_data(skip: int) -> Iterator[np.ndarray]:
    calls.append(skip)
    return iter(())

  again = fit_kmeans(no_data, 8, config, checkpoint_dir=directory, **QUIET)
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
  x, _ = blobs(k=6, per_blob=100)  # 600 rows: 15 batches of 40 per epoch
  config = small_config(num_clusters=6, init_samples=100, checkpoint_every_batches=1)
  reference = fit_kmeans(stream(x, 40), 8, config, **QUIET)
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
  config = small_config(init_samples=100)
  with pytest.raises(ValueError, match=match):
    fit_kmeans(lambda skip: iter(stream[skip:]), 8, config, **QUIET)


def test_config_validation():
  with pytest.raises(ValueError, match="normalization"):
    KMeansConfig(normalization="whiten")
  with pytest.raises(ValueError, match="init_samples"):
    KMeansConfig(num_clusters=16, init_samples=8)
