"""The window planner of long generation, story mode and continuation."""

import pytest

from musiclm_jax.decoding.windows import Window, plan_signature, plan_windows


def _check_tiling(windows, total, window, prompt=0, boundaries=()):
  assert windows[0].new_start == prompt and windows[-1].new_end == total
  for a, b in zip(windows, windows[1:]):
    assert a.new_end == b.new_start
  for w in windows:
    assert 0 <= w.start <= w.new_start < w.new_end and w.new_end - w.start <= window
    assert not any(w.new_start < b < w.new_end for b in boundaries)  # one segment per window


def test_paper_semantic_45_seconds_is_30_then_15_with_a_15_second_prefix():
  windows = plan_windows(45 * 25, 750, 375)
  assert windows == [Window(0, 0, 750, 0), Window(375, 750, 1125, 0)]


def test_minutes_of_audio_slide_by_the_stride():
  windows = plan_windows(120 * 25, 750, 375)
  _check_tiling(windows, 3000, 750)
  assert [w.new for w in windows] == [750, 375, 375, 375, 375, 375, 375]
  assert plan_signature(windows) == ((0, 750), (375, 375))  # two compiled programs


def test_story_windows_break_at_segment_boundaries():
  boundaries = (250, 400)
  windows = plan_windows(1000, 300, 100, boundaries=boundaries)
  _check_tiling(windows, 1000, 300, boundaries=boundaries)
  assert [(w.new_start, w.segment) for w in windows] == [
    (0, 0),
    (250, 1),
    (400, 2),
    (600, 2),
    (800, 2),
  ]


def test_continuation_starts_after_the_prompt():
  windows = plan_windows(400, 300, 100, prompt=120)
  _check_tiling(windows, 400, 300, prompt=120)
  assert windows[0] == Window(20, 120, 320, 0)


def test_time_aligned_inputs_keep_the_last_window_inside_the_stream():
  windows = plan_windows(260, 100, 50, inputs_frames=260)
  _check_tiling(windows, 260, 100)
  assert all(w.start + 100 <= 260 for w in windows)
  assert windows[-1] == Window(160, 250, 260, 0)  # re-reads 90 known frames, not 50


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(total=10, window=4, prefix=4), "prefix"),
    (dict(total=10, window=4, prefix=1, prompt=11), "prompt"),
    (dict(total=10, window=4, prefix=1, boundaries=(5, 3)), "boundaries"),
    (dict(total=10, window=4, prefix=1, inputs_frames=3), "cannot fill"),
  ],
)
def test_bad_plans_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    plan_windows(**kwargs)
