"""Chroma cosine and music statistics on signals whose answer is known: tones, chords, a melody,
white noise, a click track, silence, and a FluidSynth-rendered piano melody."""

from __future__ import annotations

import numpy as np
import pytest

from musiclm_jax.data.render import synth
from musiclm_jax.evaluation import music_stats

SR = 24_000
A = 9  # chroma bin of A


def _tones(pitches, seconds: float, sample_rate: int = SR) -> np.ndarray:
  """A chord of harmonic tones (four partials, amplitudes 2^-k) held for `seconds`."""
  t = np.arange(int(seconds * sample_rate)) / sample_rate
  out = np.zeros_like(t)
  for pitch in pitches:
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    out += sum(0.5**k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 5))
  return (0.3 * out / np.max(np.abs(out))).astype(np.float32)


def _melody(pitches, note_seconds: float) -> np.ndarray:
  return np.concatenate([_tones([p], note_seconds) for p in pitches])


def _white_noise(seconds: float, seed: int = 0) -> np.ndarray:
  return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


C_MAJOR = [60, 64, 67]


@pytest.mark.parametrize("sample_rate", [16_000, SR, 44_100])
def test_chroma_of_an_a_has_its_peak_on_a_at_50_frames_per_second(sample_rate):
  c = music_stats.chroma(_tones([69], 2.0, sample_rate), sample_rate)
  assert c.dtype == np.float32 and c.shape == (2 * 50 + 1, 12)
  assert np.all(np.argmax(c, axis=1) == A)


def test_chroma_cosine_of_a_clip_with_itself_is_one():
  x = _melody([60, 62, 64, 65, 67], 0.4)
  assert music_stats.chroma_cosine(x, x, SR) == pytest.approx(1.0, abs=1e-5)
  # Only the last frame of the cut clip differs (it reaches past the cut).
  assert music_stats.chroma_cosine(x, x[: len(x) // 2], SR) == pytest.approx(1.0, abs=1e-3)


def test_a_transposed_chord_scores_lower_and_an_octave_up_does_not():
  chord = _tones(C_MAJOR, 2.0)
  itself = music_stats.chroma_cosine(chord, chord, SR)
  octave_up = music_stats.chroma_cosine(chord, _tones([p + 12 for p in C_MAJOR], 2.0), SR)
  whole_tone_up = music_stats.chroma_cosine(chord, _tones([p + 2 for p in C_MAJOR], 2.0), SR)
  tritone_up = music_stats.chroma_cosine(chord, _tones([p + 6 for p in C_MAJOR], 2.0), SR)
  assert octave_up > 0.9
  assert whole_tone_up < itself - 0.3 and tritone_up < itself - 0.3, (whole_tone_up, tritone_up)


def test_frames_silent_in_both_clips_are_left_out():
  silence = np.zeros(SR, np.float32)
  x = np.concatenate([_tones([60], 1.0), silence])
  # Counted, the silent second half would give cosines of 0 and a mean near 0.5.
  assert music_stats.chroma_cosine(x, x, SR) == pytest.approx(1.0, abs=1e-5)
  half_silent = music_stats.chroma_cosine(x, np.concatenate([_tones([60], 1.0)] * 2), SR)
  assert 0.4 < half_silent < 0.65
  assert music_stats.chroma_cosine(silence, silence, SR) == 1.0


def test_white_noise_is_not_tonal_and_a_held_tone_is():
  assert music_stats.music_statistics(_white_noise(4.0), SR)["tonal_fraction"] <= 0.05
  held = music_stats.music_statistics(_tones([57], 4.0), SR)
  assert held["tonal_fraction"] >= 0.95
  assert music_stats.music_statistics(_tones(C_MAJOR, 4.0), SR)["tonal_fraction"] >= 0.95


def test_a_melody_changes_chroma_and_a_held_tone_does_not():
  pitches = [60, 64, 67, 72, 69, 65, 62, 67]  # 7 changes, each to another pitch class
  melody = music_stats.music_statistics(_melody(pitches, 0.5), SR)
  held = music_stats.music_statistics(_tones([60], 4.0), SR)
  # Each jump between pitch classes adds about sqrt(2) (a bit less: neighbouring bins leak).
  expected = 7 * np.sqrt(2) / 4.0
  assert 0.6 * expected < melody["chroma_change_per_s"] < 1.3 * expected, melody
  assert held["chroma_change_per_s"] < 0.1 * melody["chroma_change_per_s"], held
  assert melody["seconds"] == pytest.approx(4.0)


def test_onset_rate_of_a_4_hz_click_track():
  clicks = np.zeros(10 * SR, np.float32)
  for k in range(40):
    start = k * SR // 4
    clicks[start : start + 48] = 0.9 * np.hanning(48)
  assert music_stats.music_statistics(clicks, SR)["onset_rate_per_s"] == pytest.approx(
    4.0, abs=0.25
  )


def test_a_steady_tone_has_no_onsets():
  # librosa alone finds ~4 onsets/s here (its envelope is scaled by its own tiny maximum).
  assert music_stats.music_statistics(_tones([45], 4.0), SR)["onset_rate_per_s"] <= 0.25


def test_rendered_piano_melody_is_tonal_with_onsets_and_chroma_change():
  pitches = [60, 64, 67, 72, 69, 65, 62, 67]
  notes = [np.array([(0.5 * i, 0.45, p, 90) for i, p in enumerate(pitches)], np.float64)]
  try:
    audio = synth.synthesize(
      notes, [0], sample_rate=SR, num_samples=4 * SR, soundfont=synth.resolve_soundfont()
    )
  except (synth.RenderError, FileNotFoundError) as e:
    pytest.skip(f"FluidSynth rendering unavailable: {e}")
  stats = music_stats.music_statistics(synth.finish(audio, SR), SR)
  assert stats["tonal_fraction"] >= 0.9, stats
  assert 1.0 <= stats["onset_rate_per_s"] <= 2.5, stats
  assert stats["chroma_change_per_s"] >= 1.5, stats


def test_silence_gives_zeros_and_bad_audio_raises():
  stats = music_stats.music_statistics(np.zeros(SR, np.float32), SR)
  assert stats == {
    "seconds": 1.0,
    "chroma_change_per_s": 0.0,
    "onset_rate_per_s": 0.0,
    "tonal_fraction": 0.0,
  }
  with pytest.raises(ValueError, match="non-empty mono"):
    music_stats.music_statistics(np.zeros(0, np.float32), SR)
  with pytest.raises(ValueError, match="non-empty mono"):
    music_stats.chroma(np.zeros((SR, 2), np.float32), SR)
  with pytest.raises(ValueError, match="NaN"):
    music_stats.chroma_cosine(np.full(SR, np.nan), np.zeros(SR), SR)


def test_chroma_correlation_scores_noise_near_zero():
  """Raw chroma cosine rates flat (noise) chroma far above other notes; correlation puts it at 0,
  between music that shares pitch classes (> 0) and music that avoids them (< 0)."""
  rate = 24_000
  t = np.arange(2 * rate) / rate
  c_major = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)) / 3
  f_sharp = sum(np.sin(2 * np.pi * f * t) for f in (369.99, 466.16, 277.18)) / 3
  noise = np.random.default_rng(0).standard_normal(len(t)) * 0.2
  corr = music_stats.chroma_correlation
  assert corr(c_major, c_major, rate) == pytest.approx(1.0, abs=1e-5)
  assert abs(corr(noise, c_major, rate)) < 0.2
  assert corr(f_sharp, c_major, rate) < -0.2  # disjoint pitch classes
  cosine = music_stats.chroma_cosine
  assert cosine(noise, c_major, rate) > cosine(f_sharp, c_major, rate) + 0.3  # the blind spot
