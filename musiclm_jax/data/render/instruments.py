"""General-MIDI instruments for rendering scores: names, families, sounding ranges, ensembles.

A part is given an instrument whose sounding range (MIDI note numbers) covers the part's notes,
so a bass line goes to a cello, bassoon, contrabass or bass, and a soprano line to a violin,
flute, oboe or trumpet. Ensembles (string quartet, woodwinds, brass, one keyboard for all parts,
a band) give a variant its character; `choose_instrumentation` draws one with a seeded rng.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Instrument:
  """One General-MIDI melodic program.

  Attributes:
    program: GM program number, 0-127 (bank 0).
    name: what a caption calls it ("violin", "acoustic guitar").
    family: "strings", "woodwinds", "brass", "keyboard", "plucked", "saxophones", "synth",
      "folk" or "mallets".
    low: lowest comfortable sounding MIDI note.
    high: highest comfortable sounding MIDI note.
  """

  program: int
  name: str
  family: str
  low: int
  high: int

  def fits(self, low: int, high: int) -> bool:
    """Whether notes from `low` to `high` (MIDI numbers) lie in this instrument's range."""
    return self.low <= low and high <= self.high


_TABLE = [
  (0, "piano", "keyboard", 21, 108),
  (4, "electric piano", "keyboard", 28, 103),
  (6, "harpsichord", "keyboard", 29, 89),
  (19, "church organ", "keyboard", 24, 96),
  (21, "accordion", "folk", 41, 89),
  (22, "harmonica", "folk", 60, 96),
  (11, "vibraphone", "mallets", 53, 89),
  (12, "marimba", "mallets", 45, 96),
  (24, "acoustic guitar", "plucked", 40, 84),
  (25, "steel-string guitar", "plucked", 40, 84),
  (27, "clean electric guitar", "plucked", 40, 86),
  (29, "overdriven guitar", "plucked", 40, 86),
  (46, "harp", "plucked", 24, 103),
  (105, "banjo", "folk", 48, 84),
  (32, "acoustic bass", "plucked", 28, 60),
  (33, "electric bass", "plucked", 28, 60),
  (38, "synth bass", "synth", 28, 62),
  (40, "violin", "strings", 55, 100),
  (41, "viola", "strings", 48, 88),
  (42, "cello", "strings", 36, 76),
  (43, "contrabass", "strings", 28, 60),
  (48, "string ensemble", "strings", 28, 96),
  (45, "pizzicato strings", "strings", 28, 96),
  (110, "fiddle", "folk", 55, 100),
  (72, "piccolo", "woodwinds", 74, 108),
  (73, "flute", "woodwinds", 60, 96),
  (74, "recorder", "woodwinds", 60, 96),
  (75, "pan flute", "folk", 60, 96),
  (68, "oboe", "woodwinds", 58, 91),
  (69, "english horn", "woodwinds", 52, 81),
  (71, "clarinet", "woodwinds", 50, 91),
  (70, "bassoon", "woodwinds", 34, 75),
  (56, "trumpet", "brass", 54, 86),
  (60, "french horn", "brass", 41, 77),
  (57, "trombone", "brass", 40, 72),
  (58, "tuba", "brass", 28, 58),
  (64, "soprano saxophone", "saxophones", 56, 88),
  (65, "alto saxophone", "saxophones", 49, 81),
  (66, "tenor saxophone", "saxophones", 44, 76),
  (67, "baritone saxophone", "saxophones", 36, 69),
  (80, "square-wave synth lead", "synth", 36, 96),
  (81, "sawtooth synth lead", "synth", 36, 96),
  (89, "warm synth pad", "synth", 36, 96),
  (50, "synth strings", "synth", 36, 96),
]

INSTRUMENTS: dict[int, Instrument] = {row[0]: Instrument(*row) for row in _TABLE}
"""Every program this renderer uses, by GM program number."""

# Ensembles list candidate programs from the top part down; each part takes the first candidate
# in its slot list that covers its range (slots are matched to parts by register).
ENSEMBLES: dict[str, tuple[tuple[int, ...], ...]] = {
  "strings": ((40,), (40, 41), (41, 42), (42, 43)),
  "woodwinds": ((73, 72, 68), (68, 71), (71, 69), (70,)),
  "brass": ((56,), (56, 60), (60, 57), (57, 58)),
  "saxophones": ((64, 65), (65,), (66,), (67,)),
  "band": ((27, 81, 65, 56), (4, 89, 24), (89, 4, 25), (33, 38)),
  "folk": ((110, 21, 75, 22), (105, 24, 21), (24, 25), (32,)),
  "mixed": (),
}
KEYBOARDS = (0, 0, 6, 19, 4, 46, 12, 24)  # one instrument for all parts; piano twice as likely
SOLO = (0, 40, 110, 73, 74, 68, 71, 56, 65, 21, 22, 24, 46, 12, 11, 80, 105, 75, 60, 42)


def part_range(pitches: np.ndarray) -> tuple[int, int]:
  """(lowest, highest) MIDI note of a part; `pitches` [num_notes] ints."""
  return int(np.min(pitches)), int(np.max(pitches))


def _fitting(candidates: Sequence[int], low: int, high: int) -> list[int]:
  return [p for p in candidates if INSTRUMENTS[p].fits(low, high)]


def _any_fitting(low: int, high: int, rng: np.random.Generator) -> int:
  """A random program from the whole table that covers [low, high]; piano always does."""
  options = [p for p, inst in INSTRUMENTS.items() if inst.fits(low, high)]
  return int(rng.choice(options)) if options else 0


def _slot_for(part: int, num_parts: int, num_slots: int) -> int:
  """Which ensemble slot (0 = top) the `part`-th part from the top uses."""
  if num_parts == 1:
    return 0
  if part == num_parts - 1:
    return num_slots - 1
  return min(part, num_slots - 2)


def _ensemble(name: str, ranges: Sequence[tuple[int, int]], rng: np.random.Generator) -> list[int]:
  """Programs for parts (ordered top to bottom) in ensemble `name`; misfits take any instrument."""
  slots = ENSEMBLES[name]
  programs = []
  for i, (low, high) in enumerate(ranges):
    if not slots:
      programs.append(_any_fitting(low, high, rng))
      continue
    fitting = _fitting(slots[_slot_for(i, len(ranges), len(slots))], low, high)
    programs.append(int(rng.choice(fitting)) if fitting else _any_fitting(low, high, rng))
  return programs


def _one_draw(ranges: Sequence[tuple[int, int]], rng: np.random.Generator) -> list[int]:
  """One random instrumentation: a solo instrument, one keyboard, or an ensemble."""
  low = min(r[0] for r in ranges)
  high = max(r[1] for r in ranges)
  if len(ranges) == 1:
    fitting = _fitting(SOLO, low, high)
    return [int(rng.choice(fitting)) if fitting else _any_fitting(low, high, rng)]
  style = rng.choice(["keyboard", "keyboard", *ENSEMBLES])
  if style == "keyboard":
    fitting = _fitting(KEYBOARDS, low, high) or [0]
    return [int(rng.choice(fitting))] * len(ranges)
  return _ensemble(str(style), ranges, rng)


def choose_instrumentation(
  ranges: Sequence[tuple[int, int]],
  rng: np.random.Generator,
  avoid: Sequence[Sequence[int]] = (),
  max_tries: int = 24,
) -> list[int]:
  """Draws GM programs for the parts of a passage, each covering its part's range.

  Args:
    ranges: (lowest, highest) sounding MIDI note of each part, ordered from the top part down.
    rng: the seeded generator to draw from.
    avoid: program lists already used by other variants of the same passage; the result's set of
      programs differs from each of theirs when at most `max_tries` draws can find one.
    max_tries: draws before giving up on differing from `avoid`.

  Returns:
    One GM program per part, in the order of `ranges`.
  """
  avoided = [frozenset(a) for a in avoid]
  programs = _one_draw(ranges, rng)
  for _ in range(max_tries):
    if frozenset(programs) not in avoided:
      return programs
    programs = _one_draw(ranges, rng)
  # Fall back to a guaranteed change: the top part takes the first unused program that fits.
  low, high = ranges[0]
  used = set().union(*avoided)
  for program, inst in INSTRUMENTS.items():
    if program not in used and inst.fits(low, high):
      return [program, *programs[1:]]
  return programs


def ensemble_name(programs: Sequence[int]) -> str | None:
  """What a caption may call the whole group ("string quartet", "solo piano"), or None."""
  names = [INSTRUMENTS[p].name for p in programs]
  families = {INSTRUMENTS[p].family for p in programs}
  if len(programs) == 1:
    return f"solo {names[0]}"
  if len(set(programs)) == 1:
    return names[0]
  if sorted(programs) == [40, 40, 41, 42]:
    return "string quartet"
  size = {2: "duo", 3: "trio", 4: "quartet", 5: "quintet"}.get(len(programs))
  if size and len(families) == 1:
    family = families.pop()
    word = {"strings": "string", "woodwinds": "woodwind", "brass": "brass"}.get(family)
    if word:
      return f"{word} {size}"
    if family == "saxophones":
      return f"saxophone {size}"
  return None


def instrument_names(programs: Sequence[int]) -> list[str]:
  """Caption names of `programs`, in order, with repeats kept."""
  return [INSTRUMENTS[p].name for p in programs]
