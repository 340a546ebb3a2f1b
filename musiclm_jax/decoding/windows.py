"""Where each stage's windows go when a stream is longer than the stage's crop.

A stage LM sees `window` frames at a time (its training crop). Long generation slides it: each
window re-reads up to `prefix` already generated frames as known targets and adds new frames
after them, so every new frame is predicted with context (paper, semantic stage: 30 s windows,
15 s prefix, 15 s stride). Time is counted in semantic frames for all three stages (an acoustic
window is `TokenSpec.acoustic_frames_per_semantic` times as many frames), so the same planner
serves them all.

Rules, in order:
* new regions tile [prompt, total) left to right; frames before `prompt` are given (continuation);
* a new region never crosses a segment boundary, so a window is conditioned on one segment's
  MuLan tokens and story mode switches conditioning exactly at the boundary frame;
* a window starts `prefix` frames before its new region (or at 0);
* stages whose *inputs* are time-aligned (coarse, fine) need the whole window inside the frames
  that exist (`inputs_frames`): a window that would run past them starts earlier instead,
  re-reading more known frames.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Window:
  """One call of a stage LM.

  Attributes:
    start: first frame the window covers.
    new_start: first frame it generates (frames [start, new_start) are known targets).
    new_end: one past the last frame it generates.
    segment: index of the conditioning segment of the new frames.
  """

  start: int
  new_start: int
  new_end: int
  segment: int

  @property
  def known(self) -> int:
    return self.new_start - self.start

  @property
  def new(self) -> int:
    return self.new_end - self.new_start


def plan_windows(
  total: int,
  window: int,
  prefix: int,
  *,
  boundaries: Sequence[int] = (),
  prompt: int = 0,
  inputs_frames: int | None = None,
) -> list[Window]:
  """The windows that generate frames [prompt, total).

  Args:
    total: frames wanted.
    window: frames per window (the stage's crop).
    prefix: known frames a continuation window re-reads (0 <= prefix < window).
    boundaries: first frames of segments 1, 2, ... (segment 0 starts at 0), increasing.
    prompt: frames already known at the start.
    inputs_frames: for time-aligned inputs, the frames that exist (>= window).
  Returns:
    Windows in generation order.
  """
  if not 0 <= prefix < window:
    raise ValueError(f"need 0 <= prefix ({prefix}) < window ({window})")
  if not 0 <= prompt <= total:
    raise ValueError(f"prompt frames {prompt} must be within [0, total={total}]")
  if inputs_frames is not None and inputs_frames < window:
    raise ValueError(f"{inputs_frames} input frames cannot fill one {window}-frame window")
  if list(boundaries) != sorted(set(boundaries)) or any(not 0 < b < total for b in boundaries):
    raise ValueError(f"segment boundaries {list(boundaries)} must increase inside (0, {total})")
  windows, new_start = [], prompt
  while new_start < total:
    segment = bisect.bisect_right(boundaries, new_start)
    segment_end = boundaries[segment] if segment < len(boundaries) else total
    start = max(0, new_start - prefix)
    if inputs_frames is not None and start + window > inputs_frames:
      start = inputs_frames - window
    new_end = min(segment_end, start + window)  # > new_start, as prefix < window
    windows.append(Window(start, new_start, new_end, segment))
    new_start = new_end
  return windows


def plan_signature(windows: Sequence[Window]) -> tuple[tuple[int, int], ...]:
  """The (known, new) shapes of the windows: one compiled program per distinct pair."""
  return tuple(sorted({(w.known, w.new) for w in windows}))
