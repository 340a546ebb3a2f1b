"""Tests of register-aware General-MIDI instrumentation."""

from __future__ import annotations

import numpy as np
import pytest

from musiclm_jax.data.render import instruments

QUARTET = [(67, 79), (60, 72), (53, 65), (40, 55)]  # soprano, alto, tenor, bass


@pytest.mark.parametrize("seed", range(20))
def test_every_part_fits_its_instrument(seed):
  rng = np.random.default_rng(seed)
  for ranges in (QUARTET, [(62, 81)], [(72, 88), (36, 52)], QUARTET + [(45, 60)]):
    programs = instruments.choose_instrumentation(ranges, rng)
    assert len(programs) == len(ranges)
    for program, (low, high) in zip(programs, ranges):
      assert instruments.INSTRUMENTS[program].fits(low, high), (program, low, high)


def test_bass_parts_get_low_instruments():
  rng = np.random.default_rng(0)
  bass = {instruments.choose_instrumentation([(70, 84), (28, 45)], rng)[1] for _ in range(50)}
  assert bass and all(instruments.INSTRUMENTS[p].low <= 28 for p in bass)
  assert not bass & {40, 73, 56}  # violin, flute, trumpet


@pytest.mark.parametrize("ranges", [QUARTET, [(62, 81)], [(60, 62)]])
def test_variants_differ(ranges):
  rng = np.random.default_rng(1)
  chosen: list[list[int]] = []
  for _ in range(4):
    chosen.append(instruments.choose_instrumentation(ranges, rng, avoid=chosen))
  sets = [frozenset(c) for c in chosen]
  assert len(set(sets)) == len(sets)


def test_ensemble_names():
  assert instruments.ensemble_name([40, 40, 41, 42]) == "string quartet"
  assert instruments.ensemble_name([73, 68, 71, 70]) == "woodwind quartet"
  assert instruments.ensemble_name([0]) == "solo piano"
  assert instruments.ensemble_name([0, 0, 0]) == "piano"
  assert instruments.ensemble_name([40, 0]) is None
