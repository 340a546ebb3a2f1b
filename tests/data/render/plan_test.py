"""Tests of passage cutting and the seeded per-score plan."""

from __future__ import annotations

import numpy as np
import pytest

from musiclm_jax.data.render import plan, scores


def _chorale() -> scores.ScoreNotes:
  ref = next(r for r in scores.list_scores()["bach_chorales"] if r.score_id == "bach/bwv66.6.mxl")
  return scores.load_score(ref)


def test_plan_is_seeded_and_groups_share_notes():
  score = _chorale()
  groups = plan.plan_score(score, seed=0, clip_seconds=4, max_passages=2, group_size=3)
  again = plan.plan_score(score, seed=0, clip_seconds=4, max_passages=2, group_size=3)
  assert [c.caption for g in groups for c in g] == [c.caption for g in again for c in g]
  assert len(groups) == 2
  for group in groups:
    assert len({c.melody_group for c in group}) == 1 and len(group) == 3
    assert len({frozenset(c.programs) for c in group}) == 3
    for c in group[1:]:
      assert all(np.array_equal(a, b) for a, b in zip(c.notes, group[0].notes))
  other = plan.plan_score(score, seed=1, clip_seconds=4, max_passages=2, group_size=3)
  assert [c.caption for g in groups for c in g] != [c.caption for g in other for c in g]


def test_passages_fill_the_clip_and_do_not_overlap():
  score = _chorale()
  rng = np.random.default_rng(0)
  span = 8.0
  starts = plan.find_passages(score, span, 3, rng)
  assert starts and all(b - a >= span for a, b in zip(starts, starts[1:]))
  for s in starts:
    parts = plan.cut_passage(score, s, span, 60.0)
    onsets = np.concatenate([p[:, 0] for p in parts])
    ends = np.concatenate([p[:, 0] + p[:, 1] for p in parts])
    assert onsets.min() < 1.0 and ends.max() <= span + 1e-9 and onsets.min() >= 0


def test_too_long_a_clip_is_a_score_error():
  with pytest.raises(scores.ScoreError, match="no dense passage"):
    plan.plan_score(_chorale(), seed=0, clip_seconds=600, max_passages=1, group_size=2)


def test_score_slug():
  assert plan.score_slug("essenFolksong/ballad50.abc#12") == "essenFolksong-ballad50-n12"
  assert plan.score_slug("bach/bwv66.6.mxl") == "bach-bwv66-6"
