"""Mini-batch k-means over a stream of embeddings: the codebook of the semantic tokens.

MusicLM (§3.2) turns w2v-BERT activations into semantic tokens by k-means: embeddings from the
7th layer of the MLM module are normalised and clustered into 1024 centroids, and a frame's token
is the id of its nearest centroid. The dataset is far larger than memory, so the fit streams (an
init buffer with k-means++ seeding and optional Lloyd iterations, then Sculley's mini-batch
passes) and checkpoints its progress so a killed job resumes where it stopped.

Assignment and per-cluster sums run under `jax.jit` with the batch rows sharded over the data
axes; the sums are plain global sums, so GSPMD makes them the same whatever the sharding.

By topic:
  algorithm.py  normalisation, distances, assignment, k-means++ and the jitted Lloyd / mini-batch
                steps (arrays only);
  model.py      `KMeansModel` (the fitted centroids) and the `kmeans.npz` file format;
  fit.py        `KMeansConfig` and `fit_kmeans`, the resumable fit with its `progress.npz`.

`musiclm_jax.tokenizers.kmeans` names the public API of all three (what `import kmeans` users and
the gin files, e.g. `kmeans.KMeansConfig`, refer to).
"""

from musiclm_jax.tokenizers.kmeans.algorithm import (
  NORMALIZATIONS,
  assign,
  kmeans_plus_plus,
  normalization_stats,
  normalize,
  squared_distances,
)
from musiclm_jax.tokenizers.kmeans.fit import KMeansConfig, checkpoint_position, fit_kmeans
from musiclm_jax.tokenizers.kmeans.model import KMeansModel

__all__ = [
  "NORMALIZATIONS",
  "KMeansConfig",
  "KMeansModel",
  "assign",
  "checkpoint_position",
  "fit_kmeans",
  "kmeans_plus_plus",
  "normalization_stats",
  "normalize",
  "squared_distances",
]
