"""Recall@k of paired embeddings: perfect, random and hand-computed cases, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from musiclm_jax.evaluation.retrieval import recall_at_k


def test_identical_embeddings_are_retrieved_first():
  x = np.random.default_rng(0).standard_normal((20, 8))
  metrics = recall_at_k(x, 3.0 * x)  # cosine: scale does not matter
  assert metrics["recall@1"] == 1.0 and metrics["recall@5"] == 1.0
  assert metrics["chance@1"] == pytest.approx(1 / 20) and metrics["chance@5"] == pytest.approx(0.25)


def test_hand_computed_ranks():
  queries = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  # Pairs of queries 0 and 1 rank first; query 2's pair (-1, 0) ranks last of three.
  candidates = np.array([[1.0, 0.2], [0.0, 1.0], [-1.0, 0.0]])
  metrics = recall_at_k(queries, candidates, ks=(1, 2, 3))
  assert metrics["recall@1"] == pytest.approx(2 / 3)
  assert metrics["recall@2"] == pytest.approx(2 / 3)
  assert metrics["recall@3"] == 1.0


def test_random_embeddings_sit_near_chance():
  rng = np.random.default_rng(1)
  metrics = recall_at_k(rng.standard_normal((400, 16)), rng.standard_normal((400, 16)))
  assert abs(metrics["recall@5"] - metrics["chance@5"]) < 0.03


@pytest.mark.parametrize(
  "queries, candidates, message",
  [
    (np.zeros((3, 4)), np.zeros((2, 4)), "must be"),
    (np.full((2, 2), np.nan), np.zeros((2, 2)), "NaN or inf"),
  ],
)
def test_bad_input(queries, candidates, message):
  with pytest.raises(ValueError, match=message):
    recall_at_k(queries, candidates)
