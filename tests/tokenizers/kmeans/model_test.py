"""The fitted model (`kmeans/model.py`): jittable assignment, save/load and load errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.tokenizers.kmeans import KMeansModel, fit_kmeans
from tests.tokenizers.kmeans.streams import (
  QUIET,
  blobs,
  small_config,
  stream,
)


def test_model_assign_is_jittable_and_keeps_leading_dims():
  x, _ = blobs(k=4, per_blob=40)
  model = fit_kmeans(stream(x, 40), 8, small_config(num_clusters=4, init_samples=64), **QUIET)
  frames = jnp.asarray(x[:30].reshape(2, 15, 8))
  ids = jax.jit(lambda f: model.assign(f) + 0)(frames)
  assert ids.shape == (2, 15) and ids.dtype == jnp.int32
  np.testing.assert_array_equal(ids.reshape(-1), model.assign(x[:30]))


def test_save_load_round_trip(tmp_path):
  x, _ = blobs(k=4, per_blob=40)
  config = small_config(num_clusters=4, init_samples=64, normalization="standardize")
  metadata = {"layer": 7, "module": "mlm", "source_checkpoint": "w2v-bert/ckpt-1"}
  model = fit_kmeans(stream(x, 40), 8, config, metadata=metadata, **QUIET)
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
  x, _ = blobs(k=4, per_blob=40)
  progress = str(tmp_path / "progress")
  config = small_config(num_clusters=4, init_samples=64)
  fit_kmeans(stream(x, 40), 8, config, checkpoint_dir=progress, **QUIET)
  with pytest.raises(ValueError, match="fit progress"):
    KMeansModel.load(progress)
