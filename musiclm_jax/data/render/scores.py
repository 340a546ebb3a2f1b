"""Scores from the music21 corpus: which ones to use, what they are, and their notes.

The corpus ships ~3,200 public-domain files: Bach chorales, Palestrina masses, Monteverdi
madrigals, Haydn/Mozart/Beethoven string quartets, and thousands of folk tunes in ABC files that
hold many tunes each (one score per tune here). `list_scores` indexes them without parsing;
`candidate_order` draws them in a seeded order, weighted by collection so that the 1,300
Palestrina mass movements do not drown the 26 Beethoven quartet movements; `load_score` parses
one and returns its notes as plain arrays plus its metadata (meter, tempo mark, title).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import time
import warnings
from collections.abc import Iterator

import numpy as np


class ScoreError(Exception):
  """A score that cannot be used; the message is the reason counted in the render report."""


@dataclasses.dataclass(frozen=True)
class Collection:
  """A group of corpus files with shared metadata.

  Attributes:
    name: short key, used in the report.
    pattern: regular expression matched against the corpus-relative path.
    source: what the music is ("Bach chorale", "string quartet", "fiddle tune").
    era: style period ("baroque", "classical", "folk", ...).
    tags: extra aspect words ("sacred", "polyphony", "dance tune").
    tempo_range: (low, high) beats per minute to draw from when a score has no tempo mark.
    weight: relative chance of drawing from this collection.
    max_bytes: files larger than this are left out (they parse slowly).
    tunes: each file holds many ABC tunes (X: fields); each tune is one score.
  """

  name: str
  pattern: str
  source: str
  era: str
  tags: tuple[str, ...]
  tempo_range: tuple[float, float]
  weight: float
  max_bytes: int = 150_000
  tunes: bool = False


COLLECTIONS = (
  Collection(
    "bach_chorales",
    r"^bach/bwv(?!846)[\w.\-]+\.mxl$",
    "Bach chorale",
    "baroque",
    ("chorale", "hymn", "sacred music"),
    (56, 84),
    3.0,
    max_bytes=20_000,
  ),
  Collection(
    "palestrina",
    r"^palestrina/.+\.krn$",
    "Renaissance mass movement",
    "renaissance",
    ("sacred music", "polyphony"),
    (44, 72),
    2.0,
  ),
  Collection(
    "madrigals",
    r"^monteverdi/madrigal\.[\d.]+\.mxl$",
    "madrigal",
    "renaissance",
    ("madrigal", "polyphony"),
    (56, 96),
    1.5,
  ),
  Collection(
    "chansons",
    r"^josquin/.+\.abc$",
    "Renaissance chanson",
    "renaissance",
    ("polyphony",),
    (48, 80),
    0.5,
  ),
  Collection(
    "string_quartets",
    r"^(haydn/opus\d+no\d+|mozart/k(80|155|156|458)|beethoven/opus(18|59)no\d|"
    r"schumann_robert/opus41no1)/movement\d\.mxl$",
    "string quartet",
    "classical",
    ("chamber music",),
    (60, 132),
    2.0,
    max_bytes=21_000,
  ),
  Collection(
    "fiddle_tunes",
    r"^ryansMammoth/.+\.abc$",
    "fiddle tune",
    "folk",
    ("dance tune", "traditional"),
    (88, 120),
    2.0,
  ),
  Collection(
    "irish_tunes",
    r"^oneills1850/.+\.abc$",
    "Irish folk tune",
    "folk",
    ("irish folk", "traditional"),
    (72, 120),
    1.5,
    tunes=True,
  ),
  Collection(
    "scottish_airs",
    r"^airdsAirs/.+\.abc$",
    "Scottish air",
    "folk",
    ("scottish folk", "traditional"),
    (60, 112),
    1.0,
    tunes=True,
  ),
  Collection(
    "german_folk_songs",
    r"^essenFolksong/(altdeu|ballad|boehme|dva|erk|fink|kinder|zuccal|lot|lux)\d*\.abc$",
    "German folk song",
    "folk",
    ("folk song", "traditional"),
    (72, 112),
    1.5,
    tunes=True,
  ),
  Collection(
    "chinese_folk_songs",
    r"^essenFolksong/han\d\.abc$",
    "Chinese folk song",
    "folk",
    ("folk song", "traditional"),
    (60, 100),
    0.7,
    tunes=True,
  ),
  Collection(
    "american_fife_tunes",
    r"^miscFolk/americanfifeopus\.abc$",
    "fife tune",
    "folk",
    ("march", "traditional"),
    (84, 116),
    0.3,
    tunes=True,
  ),
  Collection(
    "northumbrian_tunes",
    r"^miscFolk/northumbrianminstrelsyopus\.abc$",
    "Northumbrian folk tune",
    "folk",
    ("english folk", "traditional"),
    (72, 112),
    0.3,
    tunes=True,
  ),
  Collection("other_works", r"^$", "piece", "classical", (), (60, 120), 1.5),
)

# Single works of the "other_works" collection: path -> (source, era, tags).
WORKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
  "bach/bwv846.mxl": ("keyboard prelude", "baroque", ("prelude",)),
  "chopin/mazurka06-2.krn": ("mazurka", "romantic", ("piano piece", "dance")),
  "joplin/maple_leaf_rag.mxl": ("piano rag", "ragtime", ("ragtime", "syncopated")),
  "handel/rinaldo/Lascia_chio_pianga.mxl": ("opera aria", "baroque", ("aria",)),
  "verdi/laDonnaEMobile.mxl": ("opera aria", "romantic", ("aria",)),
  "schumann_clara/polonaise_op1n1.mxl": ("polonaise", "romantic", ("dance",)),
  "schumann_clara/polonaise_op1n2.mxl": ("polonaise", "romantic", ("dance",)),
  "schumann_clara/polonaise_op1n3.mxl": ("polonaise", "romantic", ("dance",)),
  "schumann_clara/polonaise_op1n4.mxl": ("polonaise", "romantic", ("dance",)),
  "schumann_robert/opus48no2.mxl": ("art song", "romantic", ("lied",)),
  "leadSheet/fosterBrownHair.mxl": ("parlour song", "19th century", ("song",)),
  "leadSheet/berlinAlexandersRagtime.mxl": ("ragtime song", "ragtime", ("song",)),
  "liliuokalani/aloha_oe.mxl": ("Hawaiian song", "19th century", ("song",)),
  "johnson_j_r/lift_every_voice.mxl": ("hymn", "20th century", ("anthem",)),
  "lusitano/allor_che_ignuda.mxl": ("madrigal", "renaissance", ("polyphony",)),
  "cpebach/h186.mxl": ("keyboard piece", "classical", ("galant",)),
  "corelli/opus3no1/1grave.xml": ("trio sonata movement", "baroque", ("sonata",)),
  "mozart/k545/movement1_exposition.mxl": ("piano sonata", "classical", ("sonata",)),
  "webern/webern_dormi_jesu_op_16_no_2.mxl": ("canon", "20th century", ("atonal",)),
  "schoenberg/opus19/movement2.mxl": ("piano piece", "20th century", ("atonal",)),
  "schoenberg/opus19/movement6.mxl": ("piano piece", "20th century", ("atonal",)),
  "weber/concertino_clarinet.mxl": ("concertino", "romantic", ("concerto",)),
}

COMPOSERS = {
  "bach": "Johann Sebastian Bach",
  "palestrina": "Giovanni Pierluigi da Palestrina",
  "monteverdi": "Claudio Monteverdi",
  "josquin": "Josquin des Prez",
  "haydn": "Joseph Haydn",
  "mozart": "Wolfgang Amadeus Mozart",
  "beethoven": "Ludwig van Beethoven",
  "chopin": "Frederic Chopin",
  "joplin": "Scott Joplin",
  "handel": "George Frideric Handel",
  "verdi": "Giuseppe Verdi",
  "schumann_clara": "Clara Schumann",
  "schumann_robert": "Robert Schumann",
  "liliuokalani": "Liliuokalani",
  "johnson_j_r": "J. Rosamond Johnson",
  "lusitano": "Vicente Lusitano",
  "cpebach": "Carl Philipp Emanuel Bach",
  "corelli": "Arcangelo Corelli",
  "webern": "Anton Webern",
  "schoenberg": "Arnold Schoenberg",
  "weber": "Carl Maria von Weber",
  "leadSheet/fosterBrownHair.mxl": "Stephen Foster",
  "leadSheet/berlinAlexandersRagtime.mxl": "Irving Berlin",
}
TRADITIONAL = "traditional"
DANCES = ("reel", "jig", "hornpipe", "polka", "waltz", "march", "strathspey", "schottische")
MAX_PARTS = 8


@dataclasses.dataclass(frozen=True)
class ScoreRef:
  """One usable score of the corpus, known without parsing it.

  Attributes:
    score_id: stable id: the corpus-relative path, plus "#N" for tune N of a many-tune ABC file.
    path: absolute file path.
    number: the ABC tune number (X: field) for many-tune files, else None.
    collection: `Collection.name`.
    title: the ABC tune title (T: field), else the file name without extension.
    composer: full name, or "traditional".
    source: what the music is ("Bach chorale", "reel", "Irish folk tune").
    era: style period.
    tags: extra aspect words.
    tempo_range: beats-per-minute range to draw from when the score has no tempo mark.
  """

  score_id: str
  path: str
  number: int | None
  collection: str
  title: str
  composer: str
  source: str
  era: str
  tags: tuple[str, ...]
  tempo_range: tuple[float, float]


@dataclasses.dataclass
class ScoreNotes:
  """A parsed score reduced to arrays and metadata (cheap to pickle between processes).

  Attributes:
    ref: which score.
    title: the score's title, or its file name.
    parts: per part, ordered from the highest to the lowest by mean pitch, a float array
      [num_notes, 3] of (onset in quarter notes, duration in quarter notes, MIDI pitch),
      sorted by onset.
    meter: the first time signature ("3/4"), or None.
    beat_quarters: quarter notes per beat (1.5 in 6/8, 2 in 2/2).
    bar_quarters: quarter notes per bar of the first time signature.
    bar_offsets: [num_bars] start of each bar in quarter notes.
    length_quarters: end of the last note.
    tempo_qpm: quarter notes per minute of the score's first tempo mark, or None.
    tempo_text: the tempo word of that mark ("Allegro"), or None.
    parse_seconds: time spent parsing and extracting.
  """

  ref: ScoreRef
  title: str
  parts: list[np.ndarray]
  meter: str | None
  beat_quarters: float
  bar_quarters: float
  bar_offsets: np.ndarray
  length_quarters: float
  tempo_qpm: float | None
  tempo_text: str | None
  parse_seconds: float


def corpus_root() -> str:
  """The directory of the music21 corpus."""
  from music21 import corpus

  return os.path.dirname(os.path.abspath(corpus.__file__))


def _composer(rel: str) -> str:
  return COMPOSERS.get(rel) or COMPOSERS.get(rel.split("/")[0], TRADITIONAL)


def _dance(text: str) -> str | None:
  low = text.lower()
  return next((d for d in DANCES if d in low), None)


def _abc_tunes(path: str) -> list[tuple[int, str, str]]:
  """(number, title, rhythm) of each tune of a many-tune ABC file, read without parsing."""
  tunes: list[list] = []
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      if m := re.match(r"X:\s*(\d+)", line):
        tunes.append([int(m.group(1)), "", ""])
      elif tunes and line.startswith("T:") and not tunes[-1][1]:
        tunes[-1][1] = line[2:].strip()
      elif tunes and line.startswith("R:") and not tunes[-1][2]:
        tunes[-1][2] = line[2:].strip()
  return [tuple(t) for t in tunes]


def _refs_of_file(rel: str, path: str, c: Collection) -> list[ScoreRef]:
  stem = os.path.splitext(os.path.basename(rel))[0]
  base = dict(collection=c.name, composer=_composer(rel), era=c.era, tempo_range=c.tempo_range)
  if c.name == "other_works":
    source, era, tags = WORKS[rel]
    return [ScoreRef(rel, path, None, title=stem, source=source, tags=tags, **{**base, "era": era})]
  if not c.tunes:
    title, dance = stem, None
    if c.name == "fiddle_tunes":  # one tune per file; its name or T:/R: fields say the dance
      _, title, rhythm = (_abc_tunes(path) or [(0, "", "")])[0]
      title = title or stem
      dance = _dance(stem) or _dance(rhythm) or _dance(title)
    tags = (*c.tags, dance) if dance else c.tags
    return [ScoreRef(rel, path, None, title=title, source=dance or c.source, tags=tags, **base)]
  refs = []
  for number, title, rhythm in _abc_tunes(path):
    dance = _dance(rhythm) or _dance(title)
    tags = (*c.tags, dance) if dance else c.tags
    ref_id = f"{rel}#{number}"
    refs.append(ScoreRef(ref_id, path, number, title=title, source=c.source, tags=tags, **base))
  return refs


@functools.lru_cache(maxsize=2)
def list_scores(root: str | None = None) -> dict[str, list[ScoreRef]]:
  """Indexes the usable scores of the music21 corpus, by collection.

  Args:
    root: the corpus directory (default: music21's own).

  Returns:
    Collection name -> its scores, sorted by `score_id`; duplicate ABC tunes (same number and
    title in one collection) appear once.
  """
  root = root or corpus_root()
  found: dict[str, list[ScoreRef]] = {c.name: [] for c in COLLECTIONS}
  for dirpath, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, root).replace(os.sep, "/")
      c = _collection_of(rel)
      if c is None or (not c.tunes and os.path.getsize(path) > c.max_bytes):
        continue
      found[c.name].extend(_refs_of_file(rel, path, c))
  for name, refs in found.items():
    seen, unique = set(), []
    for ref in sorted(refs, key=lambda r: r.score_id):
      key = (ref.number, ref.title) if ref.number is not None else ref.score_id
      if key not in seen:
        seen.add(key)
        unique.append(ref)
    found[name] = unique
  return found


def _collection_of(rel: str) -> Collection | None:
  if rel in WORKS:
    return COLLECTIONS[-1]
  return next((c for c in COLLECTIONS[:-1] if re.match(c.pattern, rel)), None)


def candidate_order(
  scores: dict[str, list[ScoreRef]], rng: np.random.Generator
) -> Iterator[ScoreRef]:
  """Yields scores without repeats: a collection drawn by weight, then a score within it.

  Args:
    scores: `list_scores()`.
    rng: the seeded generator of the plan.

  Yields:
    Every score once, in a seeded order.
  """
  weights = {c.name: c.weight for c in COLLECTIONS}
  pools = {name: list(refs) for name, refs in scores.items() if refs}
  while pools:
    names = sorted(pools)
    w = np.array([weights[n] for n in names], np.float64)
    name = names[int(rng.choice(len(names), p=w / w.sum()))]
    pool = pools[name]
    yield pool.pop(int(rng.integers(len(pool))))
    if not pool:
      del pools[name]


def _parse(ref: ScoreRef):
  """music21 parse of one score (an ABC tune by number; voices of an ABC opus merged)."""
  from music21 import converter, stream

  kwargs = {"number": ref.number} if ref.number is not None else {}
  # forceSource: music21's pickle cache is shared scratch space; parsing is cheap enough.
  parsed = converter.parse(ref.path, forceSource=True, **kwargs)
  if isinstance(parsed, stream.Opus):
    scores = list(parsed.scores)
    if not scores:
      raise ScoreError("empty ABC opus")
    titles = {s.metadata.title if s.metadata else None for s in scores}
    parsed = parsed.mergeScores() if len(titles) == 1 and len(scores) > 1 else scores[0]
  return parsed


def _part_notes(part) -> np.ndarray:
  """[num_notes, 3] (onset, duration, pitch) of a part, ties joined, grace notes dropped."""
  from music21 import harmony

  rows = []
  for el in part.flatten().stripTies().notes:
    if isinstance(el, harmony.Harmony) or el.duration.isGrace:
      continue
    dur = float(el.quarterLength)
    if dur <= 0:
      continue
    onset = float(el.offset)
    for p in getattr(el, "pitches", ()):
      rows.append((onset, dur, float(p.midi)))
  if not rows:
    return np.zeros((0, 3), np.float64)
  notes = np.array(rows, np.float64)
  return notes[np.lexsort((notes[:, 2], notes[:, 0]))]


def _tempo_mark(flat) -> tuple[float | None, str | None]:
  """(quarter notes per minute, tempo word) of the first explicit tempo mark."""
  from music21 import tempo

  for mark in flat.getElementsByClass(tempo.TempoIndication):
    text = getattr(mark, "text", None)
    text = (
      text.strip()
      if isinstance(text, str) and re.fullmatch(r"[A-Za-z ]{3,30}", text.strip())
      else None
    )
    if (
      isinstance(mark, tempo.MetronomeMark) and mark.number is not None and not mark.numberImplicit
    ):
      return float(mark.getQuarterBPM()), text
    if text:
      return None, text
  return None, None


def _meter(flat) -> tuple[str | None, float, float]:
  """(ratio string, quarter notes per beat, quarter notes per bar) of the first time signature."""
  from music21 import meter

  signatures = list(flat.getElementsByClass(meter.TimeSignature))
  if not signatures:
    return None, 1.0, 4.0
  ts = signatures[0]
  return ts.ratioString, float(ts.beatDuration.quarterLength), float(ts.barDuration.quarterLength)


def _bar_offsets(score, bar_quarters: float, length: float) -> np.ndarray:
  from music21 import stream

  parts = list(score.parts) or [score]
  offsets = [float(m.offset) for m in parts[0].getElementsByClass(stream.Measure)]
  if len(offsets) < 2:
    offsets = list(np.arange(0.0, max(length, bar_quarters), bar_quarters))
  return np.array(sorted(set(offsets)), np.float64)


def _title(score, ref: ScoreRef) -> str:
  md = score.metadata
  title = (md.title or md.movementName) if md is not None else None
  if not title or title.endswith((".mxl", ".xml", ".krn", ".abc")):
    return ref.title
  return str(title).strip()


def load_score(ref: ScoreRef) -> ScoreNotes:
  """Parses a score and reduces it to note arrays and metadata.

  Args:
    ref: the score.

  Returns:
    Its `ScoreNotes`.

  Raises:
    ScoreError: the score does not parse, has no pitched notes, or has more than MAX_PARTS parts.
  """
  start = time.perf_counter()
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # music21 warns about many small notation flaws
      score = _parse(ref)
    parts = list(score.parts) or [score]
    notes = [n for n in (_part_notes(p) for p in parts) if len(n)]
    flat = score.flatten()
    tempo_qpm, tempo_text = _tempo_mark(flat)
    meter_str, beat, bar = _meter(flat)
  except ScoreError:
    raise
  except Exception as e:  # music21 raises many types on malformed input
    raise ScoreError(f"parse failed: {type(e).__name__}") from e
  if not notes:
    raise ScoreError("no notes")
  if len(notes) > MAX_PARTS:
    raise ScoreError("too many parts")
  notes.sort(key=lambda n: -float(np.mean(n[:, 2])))
  length = max(float(np.max(n[:, 0] + n[:, 1])) for n in notes)
  return ScoreNotes(
    ref=ref,
    title=_title(score, ref),
    parts=notes,
    meter=meter_str,
    beat_quarters=beat,
    bar_quarters=bar,
    bar_offsets=_bar_offsets(score, bar, length),
    length_quarters=length,
    tempo_qpm=tempo_qpm,
    tempo_text=tempo_text,
    parse_seconds=time.perf_counter() - start,
  )


# Krumhansl-Kessler key profiles, tonic first.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_NAMES = ("C", "D-flat", "D", "E-flat", "E", "F", "F-sharp", "G", "A-flat", "A", "B-flat", "B")
MINOR_NAMES = (
  "C",
  "C-sharp",
  "D",
  "E-flat",
  "E",
  "F",
  "F-sharp",
  "G",
  "G-sharp",
  "A",
  "B-flat",
  "B",
)


def estimate_key(notes: np.ndarray) -> tuple[int, str]:
  """Krumhansl-Schmuckler key finding on a duration-weighted pitch-class histogram.

  Args:
    notes: [num_notes, 3] (onset, duration, MIDI pitch).

  Returns:
    (tonic pitch class 0-11 with C = 0, "major" or "minor").
  """
  hist = np.bincount(notes[:, 2].astype(np.int64) % 12, weights=notes[:, 1], minlength=12)
  best = (-2.0, 0, "major")
  for mode, profile in (("major", _MAJOR), ("minor", _MINOR)):
    for tonic in range(12):
      r = np.corrcoef(hist, np.roll(profile, tonic))[0, 1] if hist.std() > 0 else 0.0
      if r > best[0] + 1e-12:
        best = (float(r), tonic, mode)
  return best[1], best[2]


def key_name(tonic: int, mode: str) -> str:
  """'E-flat major', 'C-sharp minor' for a tonic pitch class and mode."""
  names = MAJOR_NAMES if mode == "major" else MINOR_NAMES
  return f"{names[tonic % 12]} {mode}"
