"""Tests of captions and aspect lists written from clip metadata."""

from __future__ import annotations

import ast
import re

import numpy as np
import pytest

from musiclm_jax.data.render import describe

META = describe.ClipMeta(
  composer="Johann Sebastian Bach",
  source="Bach chorale",
  era="baroque",
  tags=("chorale", "sacred music"),
  instruments=("violin", "violin", "viola", "cello"),
  ensemble="string quartet",
  tempo_bpm=66,
  tempo_text=None,
  key="D minor",
  meter="3/4",
  num_parts=4,
  dynamics="soft",
)
SOLO = describe.ClipMeta(
  composer="traditional",
  source="reel",
  era="folk",
  tags=("dance tune", "reel"),
  instruments=("flute",),
  ensemble="solo flute",
  tempo_bpm=118,
  tempo_text="Allegro",
  key="G major",
  meter="2/4",
  num_parts=1,
  dynamics="loud",
)


@pytest.mark.parametrize("meta", [META, SOLO])
def test_captions_vary_but_stay_true(meta):
  rng = np.random.default_rng(0)
  captions = [describe.caption(meta, rng) for _ in range(30)]
  assert len(set(captions)) > 20
  openings = {c.split()[0] for c in captions}
  assert len(openings) >= 3
  for c in captions:
    assert meta.instruments[-1] in c or (meta.ensemble or "") in c
    assert "major" not in c if meta.key.endswith("minor") else "minor" not in c
    assert re.fullmatch(r"[A-Z].*\.", c) and "  " not in c


def test_caption_is_seeded():
  assert describe.caption(META, np.random.default_rng(3)) == describe.caption(
    META, np.random.default_rng(3)
  )


def test_aspects():
  rng = np.random.default_rng(0)
  aspects = describe.aspects(META, rng)
  assert ast.literal_eval(repr(aspects)) == aspects
  for a in ("string quartet", "violin", "cello", "slow tempo", "minor key", "triple meter"):
    assert a in aspects
  assert aspects == [a.lower() for a in aspects] and len(set(aspects)) == len(aspects)


@pytest.mark.parametrize(
  "bpm, word, aspect",
  [(50, "very slow", "slow tempo"), (90, "moderate", "medium tempo"), (140, "fast", "fast tempo")],
)
def test_tempo_words(bpm, word, aspect):
  assert describe.tempo_word(bpm) == word and describe.tempo_aspect(bpm) == aspect


def test_meter_and_texture_words():
  assert describe.meter_word("6/8") == "compound duple" and describe.meter_word(None) is None
  assert describe.texture_word(1) == "solo" and describe.texture_word(4) == "four-part"
