"""Set distances of `musiclm-jax evaluate`: checked against direct scipy computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from musiclm_jax.evaluation import distances


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
  m1, m2 = a.mean(0), b.mean(0)
  c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy.linalg.sqrtm(c1 @ c2).real
  return float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * root))


def test_frechet_distance_matches_scipy_on_well_conditioned_sets():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(400, 8))
  b = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) * 0.5 + 1.0
  ours = distances.frechet_distance(a, b)
  assert ours == pytest.approx(_scipy_frechet(a, b), rel=1e-6)
  assert ours > 1.0


def test_frechet_distance_of_a_set_with_itself_is_zero():
  x = np.random.default_rng(1).normal(size=(50, 16))
  assert distances.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_stays_real_and_finite_on_rank_deficient_sets():
  """Fewer rows than dimensions: singular covariances, where sqrtm goes complex."""
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(5, 200)), rng.normal(size=(7, 200)) + 0.3
  d = distances.frechet_distance(a, b)
  assert np.isfinite(d) and d > 0
  assert distances.frechet_distance(a[:1], b[:1]) == pytest.approx(np.sum((a[0] - b[0]) ** 2))


def test_frechet_distance_grows_with_the_mean_shift():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(200, 4))
  near = distances.frechet_distance(x, rng.normal(size=(200, 4)) + 0.1)
  far = distances.frechet_distance(x, rng.normal(size=(200, 4)) + 1.0)
  assert near < far


def test_frechet_distance_refuses_bad_embeddings():
  with pytest.raises(ValueError, match="one d"):
    distances.frechet_distance(np.zeros((3, 4)), np.zeros((3, 5)))
  with pytest.raises(ValueError, match="NaN"):
    distances.frechet_distance(np.full((3, 4), np.nan), np.zeros((3, 4)))


def test_kl_divergence_is_zero_for_equal_tags_and_positive_otherwise():
  rng = np.random.default_rng(4)
  p = rng.uniform(size=(3, 50))
  assert distances.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
  q = rng.uniform(size=(3, 50))
  d = distances.kl_divergence(p, q)
  pm, qm = p.mean(0) / p.mean(0).sum(), q.mean(0) / q.mean(0).sum()
  assert d == pytest.approx(np.sum(pm * np.log(pm / qm)), rel=1e-6) and d > 0


def test_kl_divergence_stays_finite_when_a_tag_is_ruled_out():
  p, q = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
  assert np.isfinite(distances.kl_divergence(p, q))


def test_auc_counts_pairs_and_ties():
  assert distances.auc([3, 4], [1, 2]) == 1.0
  assert distances.auc([1], [2]) == 0.0
  assert distances.auc([1, 2], [1, 2]) == 0.5
  with pytest.raises(ValueError, match="at least one"):
    distances.auc([], [1.0])


def test_paired_and_chance_cosine():
  eye = np.eye(4)
  paired, chance = distances.paired_and_chance_cosine(eye, eye * 3)
  assert paired == pytest.approx(1.0) and chance == pytest.approx(0.0)
  same = np.ones((3, 2))
  assert distances.paired_and_chance_cosine(same, same) == pytest.approx((1.0, 1.0))
  assert np.isnan(distances.paired_and_chance_cosine(eye[:1], eye[:1])[1])
