"""Distances between sets of clips: Fréchet distance, KL divergences, AUC and MuLan consistency.

These are the set-level numbers of `musiclm-jax evaluate` (DESIGN §10), written in float64 numpy so
that they stay finite and real on the small sets a laptop run produces:

- `frechet_distance`: between Gaussians fitted to two embedding sets (FAD when the embeddings are
  an audio tagger's). The matrix square root goes through symmetric eigendecompositions,
  Tr sqrt(Σ1 Σ2) = Tr sqrt(S1 Σ2 S1) with S1 = Σ1^½, so rank-deficient covariances (fewer windows
  than dimensions) give a finite, non-negative real number instead of scipy.linalg.sqrtm's
  complex parts.
- `tag_distribution`, `kl_divergence`: a clip's multi-label tag probabilities, averaged over its
  windows and normalised to sum to one, compared as distributions (the KLD of the paper, on the
  tagger we have).
- `auc`: the probability that a positive outscores a negative (ties count half).
- `paired_and_chance_cosine`: MuLan cycle consistency and its chance level under random pairing.
"""

from __future__ import annotations

import numpy as np

# Probabilities are floored here before logs: a tag the tagger rules out is 'very unlikely', not
# impossible, so one such tag cannot make a divergence infinite.
PROBABILITY_FLOOR = 1e-6


def gaussian_statistics(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean [d] and covariance [d, d] (unbiased; zero for a single row) of [n, d] embeddings."""
  x = np.asarray(embeddings, np.float64)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"embeddings must be a non-empty [n, d] array; got shape {x.shape}.")
  if not np.isfinite(x).all():
    raise ValueError("embeddings hold NaN or inf values.")
  mean = x.mean(axis=0)
  if x.shape[0] == 1:
    return mean, np.zeros((x.shape[1], x.shape[1]))
  return mean, np.cov(x, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  """Square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
  symmetric = (matrix + matrix.T) / 2
  values, vectors = np.linalg.eigh(symmetric)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_from_statistics(
  mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray
) -> float:
  """||μ1 - μ2||² + Tr(Σ1) + Tr(Σ2) - 2 Tr sqrt(Σ1^½ Σ2 Σ1^½), clipped at zero."""
  root1 = _psd_sqrt(cov1)
  middle = root1 @ cov2 @ root1
  values = np.linalg.eigvalsh((middle + middle.T) / 2)
  trace_sqrt = np.sqrt(np.clip(values, 0.0, None)).sum()
  diff = mean1 - mean2
  distance = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt
  return float(max(distance, 0.0))


def frechet_distance(embeddings1: np.ndarray, embeddings2: np.ndarray) -> float:
  """Fréchet distance between Gaussians fitted to two [n, d] embedding sets (same d)."""
  a, b = np.asarray(embeddings1), np.asarray(embeddings2)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"embedding sets must be [n, d] with one d; got {a.shape} and {b.shape}.")
  return frechet_distance_from_statistics(*gaussian_statistics(a), *gaussian_statistics(b))


def tag_distribution(tag_probabilities: np.ndarray) -> np.ndarray:
  """A clip's tag distribution: [windows, tags] sigmoid outputs → [tags], floored, summing to 1."""
  p = np.asarray(tag_probabilities, np.float64)
  if p.ndim == 2:
    p = p.mean(axis=0)
  p = np.clip(p, PROBABILITY_FLOOR, None)
  return p / p.sum()


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
  """KL(p || q) in nats of two distributions over the same tags (both floored and renormalised)."""
  p, q = tag_distribution(p), tag_distribution(q)
  return float(np.sum(p * (np.log(p) - np.log(q))))


def auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
  """Area under the ROC curve: P(positive > negative) + P(tie) / 2 over all pairs."""
  pos = np.asarray(positive_scores, np.float64).reshape(-1, 1)
  neg = np.asarray(negative_scores, np.float64).reshape(1, -1)
  if pos.size == 0 or neg.size == 0:
    raise ValueError("auc needs at least one positive and one negative score.")
  return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def paired_and_chance_cosine(text: np.ndarray, audio: np.ndarray) -> tuple[float, float]:
  """Mean cosine of matching rows, and of all mismatched pairs (the shuffled-pairing chance level).

  The chance level is the exact expectation over random pairings: the mean of the off-diagonal
  entries of the cosine matrix, so it needs no seed. One pair has no chance level (NaN).
  """
  t = np.asarray(text, np.float64)
  a = np.asarray(audio, np.float64)
  t = t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
  a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  cosines = t @ a.T
  n = cosines.shape[0]
  paired = float(np.mean(np.diag(cosines)))
  if n < 2:
    return paired, float("nan")
  chance = float((cosines.sum() - np.trace(cosines)) / (n * (n - 1)))
  return paired, chance
