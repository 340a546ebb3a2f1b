"""Note transcription with basic-pitch and note-level F1 against a MIDI file.

`load_note_transcriber()` loads Spotify's basic-pitch (ICASSP 2022) polyphonic transcription model
once per process, as its TFLite file run through `tf.lite` (the SavedModel it also ships does not
load in recent TensorFlow). `NoteTranscriber.transcribe` turns an in-memory mono clip into notes
exactly as `basic_pitch.inference.predict` does for a file (the same windowing of 2-s windows with
30 frames of overlap, the same unwrapping and the same note creation with its default thresholds),
without writing temporary files.

`midi_notes` reads the reference notes of a rendered clip (`audio/{ytid}.mid`, times in seconds of
the clip) and `note_scores` compares the two with mir_eval's note-level precision, recall and F1 on
onset and pitch only.

Notes travel as float64 [n_notes, 3] arrays of (onset_s, offset_s, midi_pitch).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import warnings
from collections.abc import Iterator

import mir_eval
import numpy as np
import pretty_midi

from musiclm_jax.data import audio_io

BASIC_PITCH_PIP = "pip install --no-deps basic-pitch==0.4.0"
# The defaults of `basic_pitch.inference.predict` (0.4.0); a test checks they still agree.
ONSET_THRESHOLD = 0.5
FRAME_THRESHOLD = 0.3
MINIMUM_NOTE_LENGTH_MS = 127.70
MELODIA_TRICK = True
# `basic_pitch.inference.run_inference`'s window overlap, in model frames.
_OVERLAPPING_FRAMES = 30


class MidiError(ValueError):
  """A MIDI file cannot be read; the message names the file."""


class _DropBasicPitchWarnings(logging.Filter):
  """Drops basic-pitch's import-time warnings about optional backends it does not need here."""

  def filter(self, record: logging.LogRecord) -> bool:
    return f"{os.sep}basic_pitch{os.sep}" not in record.pathname


@contextlib.contextmanager
def _quiet_basic_pitch_import() -> Iterator[None]:
  # basic_pitch/__init__ calls the module-level `logging.warning`, which would also install a
  # root handler via basicConfig when none exists; a temporary NullHandler prevents that.
  root = logging.getLogger()
  drop, null = _DropBasicPitchWarnings(), logging.NullHandler()
  root.addFilter(drop)
  added = not root.handlers
  if added:
    root.addHandler(null)
  try:
    yield
  finally:
    root.removeFilter(drop)
    if added:
      root.removeHandler(null)


class NoteTranscriber:
  """basic-pitch's note transcription of in-memory audio (build with `load_note_transcriber`)."""

  def __init__(self, model):
    """Wraps a loaded `basic_pitch.inference.Model`."""
    self._model = model

  def model_output(self, audio: np.ndarray) -> dict[str, np.ndarray]:
    """The model's frame activations for mono audio at basic-pitch's rate (22050 Hz).

    Mirrors `basic_pitch.inference.run_inference` (half an overlap of zeros in front, windows of
    AUDIO_N_SAMPLES every AUDIO_N_SAMPLES - overlap, unwrapped and cut to the audio's length).

    Args:
      audio: float32 [samples] at 22050 Hz, at least one sample.
    Returns:
      {'note': [frames, 88], 'onset': [frames, 88], 'contour': [frames, 264]}.
    """
    from basic_pitch import constants, inference

    overlap = _OVERLAPPING_FRAMES * constants.FFT_HOP
    padded = np.concatenate([np.zeros(overlap // 2, np.float32), audio])
    outputs = {"note": [], "onset": [], "contour": []}
    for window, _ in inference.window_audio_file(padded, constants.AUDIO_N_SAMPLES - overlap):
      for name, value in self._model.predict(window[np.newaxis]).items():
        outputs[name].append(value)
    return {
      name: inference.unwrap_output(np.concatenate(parts), len(audio), _OVERLAPPING_FRAMES)
      for name, parts in outputs.items()
    }

  def transcribe(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Notes played in a mono clip.

    Args:
      audio: [samples] float audio in [-1, 1].
      sample_rate: its rate in Hz (resampled with soxr to basic-pitch's 22050 Hz).
    Returns:
      float64 [n_notes, 3] (onset_s, offset_s, midi_pitch), sorted by onset then pitch; [0, 3]
      for silence or a clip shorter than one model frame (~12 ms).
    Raises:
      ValueError: the audio is not 1-D or holds non-finite values.
    """
    from basic_pitch import constants, note_creation

    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
      raise ValueError(f"transcribe needs mono audio [samples], got shape {audio.shape}.")
    if not np.all(np.isfinite(audio)):
      raise ValueError("transcribe got audio with NaN or infinite samples.")
    audio = audio_io.resample(audio, sample_rate, constants.AUDIO_SAMPLE_RATE)
    if len(audio) * constants.ANNOTATIONS_FPS < constants.AUDIO_SAMPLE_RATE:
      return np.zeros((0, 3))
    frames_per_s = constants.AUDIO_SAMPLE_RATE / constants.FFT_HOP
    # On silence basic-pitch rescales an all-zero onset-inference curve by its max (0/0); the
    # NaNs it gets never pass a threshold, so its warning says nothing here.
    with np.errstate(invalid="ignore", divide="ignore"):
      _, events = note_creation.model_output_to_notes(
        self.model_output(audio),
        onset_thresh=ONSET_THRESHOLD,
        frame_thresh=FRAME_THRESHOLD,
        min_note_len=int(np.round(MINIMUM_NOTE_LENGTH_MS / 1000 * frames_per_s)),
        melodia_trick=MELODIA_TRICK,
      )
    return _sorted_notes([(onset, offset, pitch) for onset, offset, pitch, *_ in events])


def _sorted_notes(rows: list[tuple[float, float, float]]) -> np.ndarray:
  notes = np.asarray(rows, np.float64).reshape(-1, 3)
  return notes[np.lexsort((notes[:, 2], notes[:, 0]))]


@functools.cache
def load_note_transcriber() -> NoteTranscriber:
  """The basic-pitch transcriber (its TFLite model), loaded once per process.

  Raises:
    ImportError: basic-pitch or TensorFlow is not installed (names the pip command).
  """
  try:
    with _quiet_basic_pitch_import():
      import basic_pitch
      from basic_pitch import inference
  except ImportError as e:
    raise ImportError(
      f"Note transcription needs basic-pitch: `{BASIC_PITCH_PIP}` ({type(e).__name__}: {e})."
    ) from e
  if not (basic_pitch.TF_PRESENT or basic_pitch.TFLITE_PRESENT):
    raise ImportError(
      f"basic-pitch runs its model with TensorFlow Lite: install tensorflow ({BASIC_PITCH_PIP})."
    )
  path = pathlib.Path(basic_pitch.ICASSP_2022_MODEL_PATH).parent / "nmp.tflite"
  with warnings.catch_warnings():
    # TF >= 2.20 deprecates tf.lite.Interpreter in favour of ai_edge_litert; it still works.
    warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
    return NoteTranscriber(inference.Model(path))


def midi_notes(path: str) -> np.ndarray:
  """The notes of every non-drum instrument of a MIDI file.

  Args:
    path: a Standard MIDI file (e.g. a rendered clip's `audio/{ytid}.mid`).
  Returns:
    float64 [n_notes, 3] (onset_s, offset_s, midi_pitch), sorted by onset then pitch.
  Raises:
    FileNotFoundError: no such file.
    MidiError: the file is not a readable MIDI file (names it).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"MIDI file not found: {path}")
  try:
    midi = pretty_midi.PrettyMIDI(path)
  except Exception as e:  # mido and pretty_midi raise many types for malformed files
    raise MidiError(f"{path}: not a readable MIDI file ({type(e).__name__}: {e})") from e
  return _sorted_notes(
    [
      (note.start, note.end, note.pitch)
      for instrument in midi.instruments
      if not instrument.is_drum
      for note in instrument.notes
    ]
  )


def _intervals_and_hz(notes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  # Offsets play no part in the score, but mir_eval wants strictly positive durations.
  onsets = notes[:, 0]
  intervals = np.stack([onsets, np.maximum(notes[:, 1], onsets + 1e-3)], axis=1)
  return intervals, 440.0 * 2.0 ** ((notes[:, 2] - 69.0) / 12.0)


def _check_notes(notes: np.ndarray, name: str) -> np.ndarray:
  notes = np.asarray(notes, np.float64)
  if notes.ndim != 2 or notes.shape[1] != 3:
    raise ValueError(
      f"{name} notes must be [n_notes, 3] (onset_s, offset_s, midi_pitch), got shape {notes.shape}."
    )
  if notes.size and (np.min(notes[:, 0]) < 0 or not np.all(np.isfinite(notes))):
    raise ValueError(f"{name} notes need finite values and onsets >= 0.")
  return notes


def note_scores(
  estimated: np.ndarray, reference: np.ndarray, onset_tolerance: float = 0.05
) -> dict[str, float]:
  """Note-level precision, recall and F1 on onset and pitch (offsets are ignored).

  `mir_eval.transcription.precision_recall_f1_overlap` with offset_ratio=None: an estimated note
  matches an unmatched reference note when its onset is within `onset_tolerance` seconds and its
  pitch within 50 cents (a semitone apart never matches); matching is one-to-one (bipartite).

  Empty inputs: both empty scores 1 (nothing to find, nothing wrongly found); one empty scores 0.

  Args:
    estimated: [n, 3] (onset_s, offset_s, midi_pitch), e.g. from `NoteTranscriber.transcribe`.
    reference: [m, 3] the same layout, e.g. from `midi_notes`.
    onset_tolerance: seconds.
  Returns:
    {'precision', 'recall', 'f1'} floats in [0, 1].
  """
  estimated, reference = _check_notes(estimated, "estimated"), _check_notes(reference, "reference")
  if not len(estimated) or not len(reference):
    value = float(not len(estimated) and not len(reference))
    return {"precision": value, "recall": value, "f1": value}
  ref_intervals, ref_hz = _intervals_and_hz(reference)
  est_intervals, est_hz = _intervals_and_hz(estimated)
  precision, recall, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
    ref_intervals, ref_hz, est_intervals, est_hz, onset_tolerance=onset_tolerance, offset_ratio=None
  )
  return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
