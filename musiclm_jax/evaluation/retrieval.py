"""Cross-modal retrieval metrics (MuLan): text → audio recall@k over a set of paired clips."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def recall_at_k(
  queries: np.ndarray, candidates: np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
  """Recall@k of retrieving candidate i for query i by cosine similarity.

  Args:
    queries: [n, dim] embeddings (e.g. captions); row i is paired with candidates row i.
    candidates: [n, dim] embeddings (e.g. clips).
    ks: cut-offs.
  Returns:
    {'recall@k': fraction of queries whose pair ranks in the top k, 'chance@k': k / n (the
    expected recall of a random ranking), 'num_pairs': n}.
  Raises:
    ValueError: shapes that do not pair up, or non-finite embeddings.
  """
  queries, candidates = np.asarray(queries, np.float64), np.asarray(candidates, np.float64)
  if queries.ndim != 2 or queries.shape != candidates.shape:
    raise ValueError(f"queries {queries.shape} and candidates {candidates.shape} must be [n, dim].")
  if not (np.isfinite(queries).all() and np.isfinite(candidates).all()):
    raise ValueError("Retrieval embeddings hold NaN or inf.")
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
  similarity = unit(queries) @ unit(candidates).T
  n = len(queries)
  # Rank of the true pair = how many candidates score strictly higher (ties count in its favour).
  true_scores = similarity[np.arange(n), np.arange(n)]
  ranks = np.sum(similarity > true_scores[:, None], axis=1)
  out: dict[str, float] = {"num_pairs": float(n)}
  for k in ks:
    out[f"recall@{k}"] = float(np.mean(ranks < k))
    out[f"chance@{k}"] = min(k, n) / n
  return out
