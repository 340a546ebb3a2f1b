"""Tests of MIDI writing, FluidSynth synthesis, normalisation and atomic WAV writing."""

from __future__ import annotations

import io
import os
import sys
import wave

import numpy as np
import pretty_midi
import pytest

from musiclm_jax.data.render import synth

SCALE = [np.array([(0.25 * i, 0.24, 60 + i, 90) for i in range(8)], float)]


def _render(notes=SCALE, programs=(0,), seconds=2.5, rate=16_000):
  return synth.synthesize(
    notes, programs, sample_rate=rate, num_samples=int(seconds * rate),
    soundfont=synth.bundled_soundfont(),
  )  # fmt: skip


def test_synthesize_exact_length_and_deterministic():
  a, b = _render(), _render()
  assert a.shape == (40_000,) and a.dtype == np.float32
  assert np.array_equal(a, b) and np.abs(a).max() > 1e-3


def test_instruments_sound_different():
  assert not np.allclose(_render(programs=(0,)), _render(programs=(73,)), atol=1e-3)


def test_finish_normalises_without_clipping():
  out = synth.finish(_render(), 16_000)
  peak = np.abs(out).max()
  assert peak == pytest.approx(10 ** (-1 / 20), rel=1e-5) and peak < 1
  assert out[-1] == 0  # faded out
  with pytest.raises(synth.RenderError, match="silent"):
    synth.finish(np.zeros(100), 16_000)


def test_wav_bytes_round_trip():
  audio = np.sin(np.linspace(0, 100, 1000)).astype(np.float32) * 0.5
  with wave.open(io.BytesIO(synth.wav_bytes(audio, 24_000))) as w:
    assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (
      24_000, 1, 2, 1000,
    )  # fmt: skip
    pcm = np.frombuffer(w.readframes(1000), "<i2") / 32767
  np.testing.assert_allclose(pcm, audio, atol=1e-4)


def test_midi_bytes_round_trip():
  data = synth.midi_bytes(SCALE * 2, (40, 42), 96.0, "label")
  pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
  assert [i.program for i in pm.instruments] == [40, 42]
  starts = [round(n.start, 3) for n in pm.instruments[0].notes]
  assert starts == [0.25 * i for i in range(8)]
  assert [n.pitch for n in pm.instruments[1].notes] == list(range(60, 68))
  assert pm.text_events[0].text == "label"
  assert data == synth.midi_bytes(SCALE * 2, (40, 42), 96.0, "label")


def test_missing_fluidsynth_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "fluidsynth", None)  # import raises ImportError
  with pytest.raises(synth.RenderError, match="apt-get install fluidsynth"):
    synth.load_fluidsynth()


def test_soundfont_resolution(tmp_path):
  assert os.path.isfile(synth.resolve_soundfont(None))
  sf = tmp_path / "x.sf2"
  sf.write_bytes(b"")
  assert synth.resolve_soundfont(str(sf)) == str(sf)
  with pytest.raises(FileNotFoundError, match="missing.sf2"):
    synth.resolve_soundfont(str(tmp_path / "missing.sf2"))
