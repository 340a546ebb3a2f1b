"""The seeded plan of one score: passages, tempo, transposition, dynamics, instruments, captions.

Everything random about a clip is drawn here, before any audio exists, from a generator seeded
by (render seed, score id), so a score's clips do not depend on which other scores were drawn,
on the order in which workers finish, or on how many workers there are. A passage rendered
`group_size` times with different instruments (same notes, transposition, tempo, velocities)
forms a melody group.
"""

from __future__ import annotations

import dataclasses
import re
import zlib

import numpy as np

from musiclm_jax.data.render import describe, instruments
from musiclm_jax.data.render.scores import ScoreError, ScoreNotes, estimate_key, key_name

MIN_BPM, MAX_BPM = 40, 200
MIN_COVERAGE = 0.8  # fraction of a passage during which some note sounds
MAX_CANDIDATES = 64  # bar starts tried per score
LOWEST, HIGHEST = 24, 103  # transposition keeps notes inside this MIDI range
DYNAMICS = (("soft", 56), ("moderate", 76), ("loud", 96))
ITALIAN_BPM = {
  "grave": 44, "largo": 50, "lento": 56, "adagio": 66, "andante": 84, "andantino": 92,
  "moderato": 108, "allegretto": 116, "allegro": 132, "vivace": 150, "presto": 172,
}  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class ClipPlan:
  """One clip to render, fully decided.

  Attributes:
    ytid: unique, filename-safe id: "m21-<score slug>-p<passage>-v<variant>".
    melody_group: id shared by the variants of one passage: "m21-<score slug>-p<passage>".
    score_id: the score (`ScoreRef.score_id`).
    title: the score's title.
    notes: per part, top part first, a float array [num_notes, 4] of (onset seconds, duration
      seconds, MIDI pitch after transposition, MIDI velocity).
    programs: GM program per part.
    tempo_qpm: quarter notes per minute (what the MIDI file says).
    start_quarters: where the passage starts in the score, in quarter notes.
    transpose: semitones added to every pitch.
    meta: what the caption describes.
    caption: the caption.
    aspects: the aspect list.
    split: "train" or "eval".
  """

  ytid: str
  melody_group: str
  score_id: str
  title: str
  notes: tuple[np.ndarray, ...]
  programs: tuple[int, ...]
  tempo_qpm: float
  start_quarters: float
  transpose: int
  meta: describe.ClipMeta
  caption: str
  aspects: tuple[str, ...]
  split: str = "train"


def score_slug(score_id: str) -> str:
  """Filename-safe slug of a score id: 'essenFolksong/ballad50.abc#12' -> 'essenFolksong-ballad50-n12'."""
  path, _, number = score_id.partition("#")
  slug = re.sub(r"[^A-Za-z0-9]+", "-", re.sub(r"\.\w+$", "", path)).strip("-")
  return f"{slug}-n{number}" if number else slug


def score_rng(seed: int, score_id: str) -> np.random.Generator:
  """The generator of one score's plan, from the render seed and the score id."""
  return np.random.default_rng([seed, zlib.crc32(score_id.encode())])


def choose_tempo(score: ScoreNotes, rng: np.random.Generator) -> tuple[int, str | None]:
  """(beats per minute, tempo word or None): the score's mark when it has one, else drawn."""
  text = score.tempo_text.lower() if score.tempo_text else None
  if score.tempo_qpm:
    bpm = score.tempo_qpm / score.beat_quarters
    if MIN_BPM <= bpm <= MAX_BPM:
      return int(round(bpm)), score.tempo_text
  if text in ITALIAN_BPM:
    return int(round(ITALIAN_BPM[text] * rng.uniform(0.95, 1.05))), score.tempo_text
  low, high = score.ref.tempo_range
  return int(round(rng.uniform(low, high))), None


def _coverage(notes: np.ndarray, start: float, end: float) -> float:
  """Fraction of [start, end) during which at least one of `notes` [n, 3] sounds."""
  lo = np.clip(notes[:, 0], start, end)
  hi = np.clip(notes[:, 0] + notes[:, 1], start, end)
  order = np.argsort(lo)
  covered, reach = 0.0, start
  for a, b in zip(lo[order], hi[order]):
    if b > reach:
      covered += b - max(a, reach)
      reach = b
  return covered / (end - start)


def find_passages(
  score: ScoreNotes, span_quarters: float, count: int, rng: np.random.Generator
) -> list[float]:
  """Starts (in quarter notes, on bar lines) of up to `count` non-overlapping dense passages.

  A passage qualifies when it lies inside the score, a note starts within its first beat, and
  notes sound during at least MIN_COVERAGE of it.

  Args:
    score: the parsed score.
    span_quarters: passage length in quarter notes.
    count: passages wanted.
    rng: the score's generator.

  Returns:
    Sorted start offsets; empty when the score has no qualifying passage.
  """
  everything = np.concatenate(score.parts)
  starts = score.bar_offsets[score.bar_offsets + span_quarters <= score.length_quarters + 1e-6]
  chosen: list[float] = []
  for s in rng.permutation(starts)[:MAX_CANDIDATES]:
    if len(chosen) == count:
      break
    if any(abs(s - c) < span_quarters for c in chosen):
      continue
    onsets = everything[:, 0]
    in_window = onsets[(onsets >= s) & (onsets < s + span_quarters)]
    if not len(in_window) or in_window.min() > s + score.beat_quarters:
      continue
    if _coverage(everything, s, s + span_quarters) >= MIN_COVERAGE:
      chosen.append(float(s))
  return sorted(chosen)


def cut_passage(
  score: ScoreNotes, start: float, span_quarters: float, tempo_qpm: float
) -> list[np.ndarray]:
  """Notes starting inside [start, start + span) of each part, in seconds from the start.

  Returns:
    Per part with notes in the window (top part first): [num_notes, 3] (onset seconds, duration
    seconds, MIDI pitch); durations end at the window's end and leave a short gap so repeated
    notes are heard.
  """
  spq, end = 60.0 / tempo_qpm, start + span_quarters
  parts = []
  for notes in score.parts:
    m = (notes[:, 0] >= start - 1e-9) & (notes[:, 0] < end - 1e-9)
    if not m.any():
      continue
    onset = notes[m, 0]
    dur = (np.minimum(onset + notes[m, 1], end) - onset) * spq
    dur = np.maximum(dur - 0.03, 0.6 * dur)
    parts.append(np.stack([(onset - start) * spq, dur, notes[m, 2]], axis=1))
  return parts


def draw_transpose(parts: list[np.ndarray], rng: np.random.Generator) -> int:
  """A few semitones up or down that keep every note inside [LOWEST, HIGHEST]."""
  pitches = np.concatenate([p[:, 2] for p in parts])
  t = int(rng.integers(-3, 4))
  return t if LOWEST <= pitches.min() + t and pitches.max() + t <= HIGHEST else 0


def draw_velocities(
  parts: list[np.ndarray], level: int, bar_seconds: float, rng: np.random.Generator
) -> list[np.ndarray]:
  """Per-note MIDI velocities: a level, an accent on bar starts, the top part a little louder,
  and a small seeded humanisation. Returns per part [num_notes] ints in 1-127."""
  out = []
  for i, p in enumerate(parts):
    v = level + rng.integers(-6, 7, size=len(p))
    on_bar = np.isclose(np.mod(p[:, 0] + 1e-6, bar_seconds), 0.0, atol=1e-3)
    v = v + 8 * on_bar + (6 if i == 0 and len(parts) > 1 else 0)
    out.append(np.clip(v, 1, 127))
  return out


def _meta(
  score: ScoreNotes, programs: list[int], bpm: int, text: str | None, key: str, dynamics: str
) -> describe.ClipMeta:
  ref = score.ref
  return describe.ClipMeta(
    composer=ref.composer,
    source=ref.source,
    era=ref.era,
    tags=ref.tags,
    instruments=tuple(instruments.instrument_names(programs)),
    ensemble=instruments.ensemble_name(programs),
    tempo_bpm=bpm,
    tempo_text=text,
    key=key,
    meter=score.meter,
    num_parts=len(programs),
    dynamics=dynamics,
  )


def _group(
  score: ScoreNotes,
  passage: int,
  start: float,
  tempo: tuple[int, str | None],
  clip_seconds: float,
  group_size: int,
  rng: np.random.Generator,
) -> list[ClipPlan]:
  """The `group_size` variants of one passage: shared notes, different instruments."""
  bpm, text = tempo
  qpm = bpm * score.beat_quarters
  parts = cut_passage(score, start, clip_seconds * qpm / 60.0, qpm)
  t = draw_transpose(parts, rng)
  for p in parts:
    p[:, 2] += t
  dynamics, level = DYNAMICS[int(rng.integers(len(DYNAMICS)))]
  bar_seconds = score.bar_quarters * 60.0 / qpm
  velocities = draw_velocities(parts, level, bar_seconds, rng)
  notes = tuple(np.concatenate([p, v[:, None]], axis=1) for p, v in zip(parts, velocities))
  key = key_name(*estimate_key(np.concatenate(parts)[:, [0, 1, 2]]))
  ranges = [instruments.part_range(p[:, 2]) for p in parts]
  group = f"m21-{score_slug(score.ref.score_id)}-p{passage}"
  clips: list[ClipPlan] = []
  for v in range(group_size):
    programs = instruments.choose_instrumentation(ranges, rng, avoid=[c.programs for c in clips])
    meta = _meta(score, programs, bpm, text, key, dynamics)
    clips.append(
      ClipPlan(
        ytid=f"{group}-v{v}",
        melody_group=group,
        score_id=score.ref.score_id,
        title=score.title,
        notes=notes,
        programs=tuple(programs),
        tempo_qpm=float(qpm),
        start_quarters=start,
        transpose=t,
        meta=meta,
        caption=describe.caption(meta, rng),
        aspects=tuple(describe.aspects(meta, rng)),
      )
    )
  return clips


def plan_score(
  score: ScoreNotes, *, seed: int, clip_seconds: float, max_passages: int, group_size: int
) -> list[list[ClipPlan]]:
  """Plans the melody groups of one score.

  Args:
    score: the parsed score.
    seed: the render seed (combined with the score id).
    clip_seconds: clip length.
    max_passages: most passages (melody groups) to take from this score.
    group_size: variants per passage.

  Returns:
    Up to `max_passages` groups of `group_size` clips each.

  Raises:
    ScoreError: no passage of the score qualifies ("no dense passage of N s").
  """
  rng = score_rng(seed, score.ref.score_id)
  tempo = choose_tempo(score, rng)
  qpm = tempo[0] * score.beat_quarters
  starts = find_passages(score, clip_seconds * qpm / 60.0, max_passages, rng)
  if not starts:
    raise ScoreError(f"no dense passage of {clip_seconds:g} s")
  return [_group(score, i, s, tempo, clip_seconds, group_size, rng) for i, s in enumerate(starts)]
