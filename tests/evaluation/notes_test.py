"""basic-pitch transcription (real TFLite model) of tones with known notes, MIDI reading and the
note-level scores."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

from musiclm_jax.data.render import synth
from musiclm_jax.evaluation import notes

# (onset_s, duration_s, midi_pitch): a melody of eight half-second notes, leaps and steps.
MELODY = np.array(
  [(0.25 + 0.5 * i, 0.4, p) for i, p in enumerate([60, 64, 67, 72, 69, 65, 62, 67])]
)
SECONDS = 4.5


def _harmonic_tones(sample_rate: int) -> np.ndarray:
  """MELODY as plucked harmonic tones (six partials, amplitudes 2^-k, decaying, 10 ms attack).

  With a brighter, sawtooth-like 1/k spectrum basic-pitch also reports the strong 5th partial
  as a note (precision 0.57), so the partials fall off faster here, as in most instruments.
  """
  audio = np.zeros(int(SECONDS * sample_rate))
  for onset, duration, pitch in MELODY:
    t = np.arange(int(duration * sample_rate)) / sample_rate
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    tone = sum(np.sin(2 * np.pi * k * f0 * t) * 0.5**k for k in range(1, 7))
    envelope = np.minimum(t / 0.01, 1.0) * np.exp(-3.0 * t) * np.minimum((duration - t) / 0.02, 1.0)
    start = int(onset * sample_rate)
    audio[start : start + len(t)] += tone * envelope
  return (0.5 * audio / np.max(np.abs(audio))).astype(np.float32)


def _parts() -> list[np.ndarray]:
  velocity = np.full((len(MELODY), 1), 90.0)
  return [np.concatenate([MELODY, velocity], axis=1)]


@pytest.fixture(scope="module")
def transcriber() -> notes.NoteTranscriber:
  return notes.load_note_transcriber()


@pytest.fixture(scope="module")
def melody_midi(tmp_path_factory) -> str:
  """MELODY written by the renderer's own MIDI writer (piano, 120 qpm)."""
  path = str(tmp_path_factory.mktemp("midi") / "melody.mid")
  with open(path, "wb") as f:
    f.write(synth.midi_bytes(_parts(), [0], tempo_qpm=120.0, label="test"))
  return path


def test_midi_notes_reads_the_renderers_file(melody_midi):
  got = notes.midi_notes(melody_midi)
  want = np.stack([MELODY[:, 0], MELODY[:, 0] + MELODY[:, 1], MELODY[:, 2]], axis=1)
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, want, atol=2e-3)


@pytest.mark.parametrize("sample_rate", [16_000, 24_000, 44_100])
def test_harmonic_tones_are_transcribed(transcriber, melody_midi, sample_rate):
  estimated = transcriber.transcribe(_harmonic_tones(sample_rate), sample_rate)
  assert estimated.shape[1] == 3 and estimated.dtype == np.float64
  scores = notes.note_scores(estimated, notes.midi_notes(melody_midi))
  assert scores["f1"] >= 0.9, (scores, estimated)


def test_fluidsynth_piano_is_transcribed(transcriber, melody_midi):
  sr = 24_000
  try:
    audio = synth.synthesize(
      _parts(),
      [0],
      sample_rate=sr,
      num_samples=int(SECONDS * sr),
      soundfont=synth.resolve_soundfont(),
    )
  except (synth.RenderError, FileNotFoundError) as e:
    pytest.skip(f"FluidSynth rendering unavailable: {e}")
  scores = notes.note_scores(
    transcriber.transcribe(synth.finish(audio, sr), sr), notes.midi_notes(melody_midi)
  )
  assert scores["f1"] >= 0.8, scores


def test_white_noise_scores_low_against_the_melody(transcriber, melody_midi):
  noise = 0.3 * np.random.default_rng(0).standard_normal(int(SECONDS * 24_000))
  scores = notes.note_scores(transcriber.transcribe(noise, 24_000), notes.midi_notes(melody_midi))
  assert scores["f1"] <= 0.2, scores


@pytest.mark.parametrize("samples", [0, 100, 24_000])
def test_silence_and_tiny_clips_give_no_notes(transcriber, samples):
  got = transcriber.transcribe(np.zeros(samples, np.float32), 24_000)
  assert got.shape == (0, 3)


def test_transcribe_rejects_stereo_and_nan(transcriber):
  with pytest.raises(ValueError, match="mono"):
    transcriber.transcribe(np.zeros((24_000, 2), np.float32), 24_000)
  with pytest.raises(ValueError, match="NaN"):
    transcriber.transcribe(np.full(24_000, np.nan, np.float32), 24_000)


def test_note_scores_match_onset_within_tolerance_and_pitch_within_a_semitone():
  reference = np.array([[1.0, 1.5, 60.0], [2.0, 2.5, 64.0]])
  shifted = reference + [0.03, 0.3, 0.0]  # offsets play no part
  assert notes.note_scores(shifted, reference) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
  late = reference + [0.08, 0.0, 0.0]
  assert notes.note_scores(late, reference)["f1"] == 0.0
  assert notes.note_scores(late, reference, onset_tolerance=0.1)["f1"] == 1.0
  sharp = reference + [0.0, 0.0, 1.0]
  assert notes.note_scores(sharp, reference)["f1"] == 0.0
  half = notes.note_scores(reference[:1], reference)
  assert half["precision"] == 1.0 and half["recall"] == 0.5 and half["f1"] == pytest.approx(2 / 3)


def test_note_scores_of_empty_inputs():
  one = np.array([[0.5, 1.0, 60.0]])
  empty = np.zeros((0, 3))
  assert notes.note_scores(empty, empty) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
  assert notes.note_scores(empty, one) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
  assert notes.note_scores(one, empty) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
  with pytest.raises(ValueError, match=r"\[n_notes, 3\]"):
    notes.note_scores(np.zeros((2, 2)), one)


def test_unreadable_midi_names_the_file(tmp_path):
  bad = tmp_path / "broken.mid"
  bad.write_bytes(b"RIFF this is not a MIDI file")
  with pytest.raises(notes.MidiError, match="broken.mid"):
    notes.midi_notes(str(bad))
  with pytest.raises(FileNotFoundError, match="missing.mid"):
    notes.midi_notes(str(tmp_path / "missing.mid"))


def test_thresholds_are_basic_pitchs_predict_defaults(transcriber):
  from basic_pitch import inference

  defaults = {k: p.default for k, p in inspect.signature(inference.predict).parameters.items()}
  assert defaults["onset_threshold"] == notes.ONSET_THRESHOLD
  assert defaults["frame_threshold"] == notes.FRAME_THRESHOLD
  assert defaults["minimum_note_length"] == notes.MINIMUM_NOTE_LENGTH_MS
  assert defaults["melodia_trick"] == notes.MELODIA_TRICK
  assert notes.load_note_transcriber() is transcriber


def test_loading_prints_no_backend_or_deprecation_warnings():
  code = "from musiclm_jax.evaluation import notes; notes.load_note_transcriber(); print('ok')"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  run = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
  )
  # pyfluidsynth (imported by pretty_midi) prints where it found libfluidsynth when CI is set.
  assert run.returncode == 0 and run.stdout.strip().splitlines()[-1] == "ok", run.stderr
  for noise in ("is not installed", "deprecated", "WARNING:root"):
    assert noise not in run.stderr, run.stderr
