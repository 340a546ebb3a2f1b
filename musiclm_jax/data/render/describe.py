"""Captions and aspect lists written from a clip's real metadata, in varied human-like wording.

MusicCaps captions are a few sentences: what the music is, who plays what, tempo and key, a mood,
sometimes where it could be used. A caption here is built the same way from `ClipMeta`: each
sentence has several templates and synonyms, some sentences are optional, and the order of the
middle sentences varies, all drawn from a seeded rng, so captions of one render do not share one
fixed template. Every statement is true of the rendered clip (instruments, tempo, key after
transposition, meter, texture, loudness).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from musiclm_jax.data.render.scores import TRADITIONAL


@dataclasses.dataclass(frozen=True)
class ClipMeta:
  """What is true of one rendered clip.

  Attributes:
    composer: full name, or "traditional".
    source: what the music is ("Bach chorale", "reel", "string quartet").
    era: style period ("baroque", "folk", ...).
    tags: extra aspect words of the source.
    instruments: instrument name per part, from the top part down.
    ensemble: a name for all of them together ("string quartet"), or None.
    tempo_bpm: beats per minute.
    tempo_text: the score's tempo word ("Allegro"), or None.
    key: e.g. "E-flat major" (after transposition).
    meter: e.g. "3/4", or None when the score has no time signature.
    num_parts: sounding parts in the clip.
    dynamics: "soft", "moderate" or "loud".
  """

  composer: str
  source: str
  era: str
  tags: tuple[str, ...]
  instruments: tuple[str, ...]
  ensemble: str | None
  tempo_bpm: int
  tempo_text: str | None
  key: str
  meter: str | None
  num_parts: int
  dynamics: str


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
  return str(options[int(rng.integers(len(options)))])


def _a(phrase: str) -> str:
  return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _cap(text: str) -> str:
  return text[:1].upper() + text[1:]


def _join(items: Sequence[str]) -> str:
  items = list(items)
  return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def tempo_word(bpm: float) -> str:
  """'slow', 'moderate', 'fast' ... for beats per minute."""
  for limit, word in ((60, "very slow"), (76, "slow"), (100, "moderate"), (126, "lively")):
    if bpm < limit:
      return word
  return "fast"


def tempo_aspect(bpm: float) -> str:
  """MusicCaps-style tempo aspect: 'slow tempo', 'medium tempo' or 'fast tempo'."""
  return "slow tempo" if bpm < 76 else "medium tempo" if bpm < 112 else "fast tempo"


def italian_tempo(bpm: float) -> str:
  """The Italian tempo marking that matches beats per minute."""
  for limit, word in ((56, "largo"), (72, "adagio"), (104, "andante"), (120, "moderato")):
    if bpm < limit:
      return word
  return "allegro" if bpm < 160 else "presto"


def meter_word(meter: str | None) -> str | None:
  """'duple', 'triple', 'compound duple' ... for a time signature, or None."""
  if not meter:
    return None
  top = meter.split("/")[0]
  return {
    "2": "duple",
    "3": "triple",
    "4": "quadruple",
    "6": "compound duple",
    "9": "compound triple",
    "12": "compound quadruple",
  }.get(top, "irregular")


def texture_word(num_parts: int) -> str:
  """'solo', 'two-part', 'four-part' ... for the number of parts."""
  words = {1: "solo", 2: "two-part", 3: "three-part", 4: "four-part", 5: "five-part"}
  return words.get(num_parts, f"{num_parts}-part")


def _moods(meta: ClipMeta) -> list[str]:
  minor = meta.key.endswith("minor")
  slow = meta.tempo_bpm < 90
  if minor:
    moods = ["melancholic", "somber", "wistful", "mournful"] if slow else ["dramatic", "restless"]
  else:
    moods = ["calm", "peaceful", "serene", "gentle"] if slow else ["cheerful", "bright", "joyful"]
  if meta.dynamics == "loud":
    moods.append("stately" if slow else "energetic")
  return moods


def _short_composer(name: str) -> str:
  special = {"Carl Philipp Emanuel Bach": "C. P. E. Bach", "Josquin des Prez": "Josquin"}
  return special.get(name, name.split()[-1])


def _subject(meta: ClipMeta, rng: np.random.Generator) -> str:
  """'a traditional reel', 'a Bach chorale', 'a string quartet movement by Joseph Haydn'."""
  source = meta.source + (" movement" if meta.source == "string quartet" else "")
  if meta.composer == TRADITIONAL:
    return _a(_pick(rng, [f"traditional {source}", source, f"{source} from the folk tradition"]))
  short = _short_composer(meta.composer)
  if short in source:
    return _a(source)
  return _pick(
    rng, [f"{_a(source)} by {meta.composer}", f"{_a(source)} by {short}", _a(f"{short} {source}")]
  )


def _counted(names: Sequence[str]) -> list[str]:
  """['violin', 'violin', 'cello'] -> ['two violins', 'cello'] in order of first appearance."""
  numbers = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
  out = []
  for name in dict.fromkeys(names):
    n = list(names).count(name)
    out.append(name if n == 1 else f"{numbers.get(n, n)} {name}s")
  return out


def _players(meta: ClipMeta, rng: np.random.Generator) -> str:
  """'a string quartet', 'flute, oboe and two bassoons', 'the piano'."""
  if meta.ensemble and not meta.ensemble.startswith("solo") and len(set(meta.instruments)) > 1:
    return _a(meta.ensemble) if rng.random() < 0.6 else _join(_counted(meta.instruments))
  if len(set(meta.instruments)) == 1:
    return _pick(rng, [f"the {meta.instruments[0]}", _a(meta.instruments[0])])
  return _join(_counted(meta.instruments))


def _intro(meta: ClipMeta, rng: np.random.Generator) -> tuple[str, bool]:
  """The opening sentence, and whether it names the instruments."""
  subject, players = _subject(meta, rng), _players(meta, rng)
  texture = texture_word(meta.num_parts)
  verbs = ["play", "perform"] if " and " in players else ["plays", "performs"]
  options = [
    (f"This is {subject} performed on {players}.", True),
    (f"{_cap(players)} {_pick(rng, verbs)} {subject}.", True),
    (f"The song is an instrumental {meta.era} piece: {subject} played on {players}.", True),
    (f"{_cap(_a(texture))} arrangement of {subject} for {players}.", True),
    (f"Here we have {subject}, rendered with {players}.", True),
    (f"This {meta.era} music is {subject}.", False),
  ]
  return options[int(rng.integers(len(options)))]


def _all_voices(n: int) -> str:
  words = {2: "both voices", 3: "all three voices", 4: "all four voices", 5: "all five voices"}
  return words.get(n, f"all {n} voices")


def _roles(meta: ClipMeta, rng: np.random.Generator) -> str:
  """Who plays what: melody, bass line, inner voices."""
  names = meta.instruments
  if len(names) == 1:
    return _pick(
      rng,
      [
        f"The {names[0]} plays a single melodic line without accompaniment.",
        f"There is no accompaniment, just the {names[0]}.",
        f"A lone {names[0]} carries the tune.",
      ],
    )
  if len(set(names)) == 1:
    return _pick(
      rng,
      [
        f"{_cap(_all_voices(len(names)))} are played on the {names[0]}.",
        f"The {names[0]} plays every part, melody and harmony together.",
      ],
    )
  top, bass = names[0], names[-1]
  inner = [n for n in dict.fromkeys(names[1:-1]) if n not in (top, bass)]
  first = _pick(
    rng,
    [
      f"The {top} carries the melody while the {bass} plays the bass line.",
      f"The melody is played by the {top}, with the {bass} underneath.",
      f"The {top} leads and the {bass} holds down the low end.",
    ],
  )
  if inner:
    first += f" The {_join(inner)} {'fills' if len(inner) == 1 else 'fill'} in the harmony."
  return first


def _tempo_key(meta: ClipMeta, rng: np.random.Generator) -> str:
  word, bpm = tempo_word(meta.tempo_bpm), meta.tempo_bpm
  meter, mw = meta.meter, meter_word(meta.meter)
  italian = meta.tempo_text.lower() if meta.tempo_text else italian_tempo(bpm)
  options = [
    f"The tempo is {word} at about {bpm} bpm and the piece is in {meta.key}.",
    f"It is in {meta.key} at {_a(word)} tempo.",
    f"Set in {meta.key}, the music moves at {_a(italian)} pace.",
    f"The key is {meta.key} and the tempo {word}, around {bpm} beats per minute.",
  ]
  if meter:
    options += [
      f"It is in {meta.key}, in {meter} time, at {_a(word)} tempo.",
      f"The piece moves at {_a(word)} pace in {mw} meter, in {meta.key}.",
    ]
  return _pick(rng, options)


def _mood(meta: ClipMeta, rng: np.random.Generator) -> str:
  moods = _moods(meta)
  a, b = rng.choice(len(moods), size=2, replace=False)
  dyn = {
    "soft": "played softly",
    "moderate": "played at a moderate volume",
    "loud": "played loudly",
  }
  return _pick(
    rng,
    [
      f"The overall mood is {moods[a]}.",
      f"It sounds {moods[a]} and {moods[b]}.",
      f"The atmosphere is {moods[a]}, and it is {dyn[meta.dynamics]}.",
    ],
  )


def _extra(meta: ClipMeta, rng: np.random.Generator) -> str:
  usage = {
    "folk": ["in a documentary about rural life", "for a village festival scene"],
    "renaissance": ["in a historical drama", "for a scene in an old church"],
    "baroque": ["as background music in a period drama", "at a formal reception"],
    "classical": ["as background music in a period drama", "in an elegant dinner scene"],
    "romantic": ["in a romantic film scene", "in a ballroom scene"],
    "ragtime": ["in a silent film", "for an old-time saloon scene"],
  }.get(meta.era, ["as background music"])
  return _pick(
    rng,
    [
      "There are no vocals.",
      "This is an instrumental piece with no singing.",
      f"This music could be used {_pick(rng, usage)}.",
      "The sound is clean, with a little room reverb.",
    ],
  )


def caption(meta: ClipMeta, rng: np.random.Generator) -> str:
  """A MusicCaps-like caption of a few sentences.

  Args:
    meta: what is true of the clip.
    rng: seeded generator choosing templates, synonyms, optional sentences and their order.

  Returns:
    The caption; it always names the instruments.
  """
  intro, names_players = _intro(meta, rng)
  middle = [_tempo_key(meta, rng)]
  if not names_players or rng.random() < 0.75:
    middle.append(_roles(meta, rng))
  if rng.random() < 0.7:
    middle.append(_mood(meta, rng))
  middle = [middle[i] for i in rng.permutation(len(middle))]
  if rng.random() < 0.5:
    middle.append(_extra(meta, rng))
  return " ".join([intro, *middle])


def aspects(meta: ClipMeta, rng: np.random.Generator) -> list[str]:
  """A MusicCaps-like aspect list: ensemble, instruments, source, era, tempo, key, meter, mood.

  Args:
    meta: what is true of the clip.
    rng: seeded generator dropping and ordering the optional aspects.

  Returns:
    Lower-case aspect phrases without duplicates.
  """
  head = ([meta.ensemble] if meta.ensemble else []) + list(dict.fromkeys(meta.instruments))
  style = [meta.source.lower(), f"{meta.era} music" if meta.era != "folk" else "folk music"]
  style += list(meta.tags)
  feel = [tempo_aspect(meta.tempo_bpm), f"{meta.key.split()[-1]} key"]
  if meter_word(meta.meter):
    feel.append(f"{meter_word(meta.meter)} meter")
  optional = [
    texture_word(meta.num_parts) + (" harmony" if meta.num_parts > 1 else ""),
    _pick(rng, _moods(meta)),
    f"{meta.dynamics} dynamics",
    "instrumental",
    "no vocals",
  ]
  optional = [a for a in optional if rng.random() < 0.75]
  out = head + [style[i] for i in rng.permutation(len(style))] + feel + optional
  return list(dict.fromkeys(a.lower() for a in out))
