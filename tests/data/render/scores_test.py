"""Tests of corpus indexing, score parsing and key finding on real music21 corpus files."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from musiclm_jax.data.render import plan, scores


def test_index_covers_collections_with_unique_filename_safe_ids():
  index = scores.list_scores()
  assert {c.name for c in scores.COLLECTIONS} == set(index)
  assert all(index.values()), [name for name, refs in index.items() if not refs]
  ids = [r.score_id for refs in index.values() for r in refs]
  assert len(ids) > 3000 and len(set(ids)) == len(ids)
  slugs = {plan.score_slug(i).lower() for i in ids}
  assert len(slugs) == len(ids)


def test_fiddle_tunes_know_their_dance():
  reels = [r for r in scores.list_scores()["fiddle_tunes"] if r.source == "reel"]
  assert reels and all("reel" in r.tags for r in reels)


def test_candidate_order_is_seeded_and_mixes_collections():
  index = scores.list_scores()
  first = lambda seed: [  # noqa: E731
    r.score_id
    for r in itertools.islice(scores.candidate_order(index, np.random.default_rng(seed)), 40)
  ]
  assert first(0) == first(0) != first(1)
  assert len(set(first(0))) == 40
  collections = {
    r.collection
    for r in itertools.islice(scores.candidate_order(index, np.random.default_rng(0)), 40)
  }
  assert len(collections) >= 5


def _ref(collection: str, score_id: str) -> scores.ScoreRef:
  return next(r for r in scores.list_scores()[collection] if r.score_id == score_id)


def test_load_bach_chorale():
  score = scores.load_score(_ref("bach_chorales", "bach/bwv66.6.mxl"))
  assert len(score.parts) == 4 and score.meter == "4/4"
  means = [p[:, 2].mean() for p in score.parts]
  assert means == sorted(means, reverse=True)  # soprano first
  for p in score.parts:
    assert np.all(np.diff(p[:, 0]) >= 0) and np.all(p[:, 1] > 0)
  assert score.length_quarters > 30 and len(score.bar_offsets) > 5
  assert scores.key_name(*scores.estimate_key(np.concatenate(score.parts))) == "F-sharp minor"


def test_load_one_tune_of_a_many_tune_abc_file():
  ref = scores.list_scores()["irish_tunes"][0]
  assert ref.number is not None and "#" in ref.score_id
  score = scores.load_score(ref)
  assert len(score.parts) == 1 and len(score.parts[0]) > 10


def test_unparsable_score_is_a_score_error(tmp_path):
  bad = tmp_path / "bad.mxl"
  bad.write_bytes(b"not a zip")
  ref = scores.ScoreRef("x/bad.mxl", str(bad), None, "other_works", "bad", "traditional",
                        "piece", "folk", (), (60, 100))  # fmt: skip
  with pytest.raises(scores.ScoreError, match="parse failed"):
    scores.load_score(ref)


@pytest.mark.parametrize(
  "pitches, expected",
  [
    ([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60], "C major"),
    ([57, 59, 60, 62, 64, 65, 68, 69, 64, 60, 57], "A minor"),
    ([63, 65, 67, 68, 70, 72, 74, 75, 70, 67, 63], "E-flat major"),
  ],
)
def test_estimate_key(pitches, expected):
  notes = np.array([(i, 1.0 + (p % 12 in (0, 9, 3)), p) for i, p in enumerate(pitches)], float)
  assert scores.key_name(*scores.estimate_key(notes)) == expected


def test_part_notes_join_ties_spread_chords_and_drop_grace_notes():
  from music21 import chord, note, stream, tie

  part = stream.Part()
  m1, m2 = stream.Measure(number=1), stream.Measure(number=2)
  first = note.Note("C4", quarterLength=2)
  first.tie = tie.Tie("start")
  m1.append([note.Note("E4", quarterLength=2), first])
  held = note.Note("C4", quarterLength=1)
  held.tie = tie.Tie("stop")
  m2.append([held, note.Note("D4", quarterLength=1).getGrace(), chord.Chord(["E4", "G4"])])
  m2.append(note.Rest(quarterLength=2))
  part.append([m1, m2])
  notes = scores._part_notes(part)
  assert notes.tolist() == [[0, 2, 64], [2, 3, 60], [5, 1, 64], [5, 1, 67]]
