"""A planned passage -> a MIDI file and FluidSynth audio at the target sample rate.

Each clip gets a fresh FluidSynth synthesizer (no reverb tail or controller state carries over
from another clip) rendering float samples directly at the target rate; note events are applied
at their sample positions. The mono mix is peak-normalised to -1 dBFS, cut to exactly the clip
length with a short fade, and written as 16-bit PCM WAV through a temporary file and
`os.replace`, so an interrupted run never leaves a half-written WAV under its final name.
"""

from __future__ import annotations

import ctypes
import io
import os
import wave
from collections.abc import Sequence

import numpy as np

SYSTEM_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
PEAK_DBFS = -1.0
FADE_SECONDS = 0.05
CHANNELS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15)  # channel 9 is GM percussion
_INSTALL_HINT = (
  "Install the FluidSynth library: `apt-get install fluidsynth` (Debian/Ubuntu) or "
  "`brew install fluid-synth` (macOS), and the binding: `pip install pyfluidsynth`."
)


class RenderError(Exception):
  """Synthesis cannot run or produced no sound; the message says what to do."""


def bundled_soundfont() -> str:
  """Path of the small GM soundfont (TimGM6mb.sf2, 6 MB) that pretty_midi ships."""
  import pretty_midi

  return os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")


def resolve_soundfont(path: str | None = None) -> str:
  """The soundfont to use: `path`, else Debian's FluidR3_GM.sf2, else pretty_midi's TimGM6mb.

  Raises:
    FileNotFoundError: `path` is given and does not exist, or no soundfont is found.
  """
  if path:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"soundfont not found: {path}")
    return os.path.abspath(path)
  for candidate in (SYSTEM_SOUNDFONT, bundled_soundfont()):
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(
    f"no soundfont: pass --soundfont, or `apt-get install fluid-soundfont-gm` ({SYSTEM_SOUNDFONT})"
  )


def load_fluidsynth():
  """Imports pyfluidsynth (`fluidsynth`), which loads libfluidsynth.

  Raises:
    RenderError: the binding or the library is missing, with install instructions.
  """
  try:
    import fluidsynth
  except (ImportError, OSError) as e:
    raise RenderError(f"cannot load FluidSynth ({type(e).__name__}: {e}). {_INSTALL_HINT}") from e
  if not hasattr(fluidsynth, "Synth"):
    raise RenderError(f"the `fluidsynth` module is not pyfluidsynth. {_INSTALL_HINT}")
  return fluidsynth


def _write_float(fluidsynth):
  """ctypes binding of fluid_synth_write_float (pyfluidsynth only wraps the 16-bit, dithered
  writer, whose dither table depends on the C library's global rand() state)."""
  f = fluidsynth.cfunc(
    "fluid_synth_write_float",
    ctypes.c_int,
    ("synth", ctypes.c_void_p, 1),
    ("len", ctypes.c_int, 1),
    ("lout", ctypes.c_void_p, 1),
    ("loff", ctypes.c_int, 1),
    ("lincr", ctypes.c_int, 1),
    ("rout", ctypes.c_void_p, 1),
    ("roff", ctypes.c_int, 1),
    ("rincr", ctypes.c_int, 1),
  )
  if f is None:
    raise RenderError(f"libfluidsynth lacks fluid_synth_write_float. {_INSTALL_HINT}")
  return f


def _events(
  notes: Sequence[np.ndarray], sample_rate: int, num_samples: int
) -> list[tuple[int, int, int, int, int]]:
  """Sorted (sample, is_on, channel, pitch, velocity); note-offs sort before note-ons."""
  events = []
  for channel, part in zip(CHANNELS, notes):
    for onset, dur, pitch, vel in part:
      on = int(round(onset * sample_rate))
      off = int(round((onset + dur) * sample_rate))
      if on < num_samples:
        events.append((on, 1, channel, int(pitch), int(vel)))
        if off < num_samples:
          events.append((off, 0, channel, int(pitch), 0))
  return sorted(events)


def synthesize(
  notes: Sequence[np.ndarray],
  programs: Sequence[int],
  *,
  sample_rate: int,
  num_samples: int,
  soundfont: str,
) -> np.ndarray:
  """Renders parts with FluidSynth at `sample_rate`.

  Args:
    notes: per part [num_notes, 4] (onset seconds, duration seconds, MIDI pitch, velocity).
    programs: GM program per part (bank 0).
    sample_rate: output rate in Hz; FluidSynth synthesises at this rate directly.
    num_samples: output length; notes still sounding at the end are cut.
    soundfont: path of a .sf2 file.

  Returns:
    Mono float32 audio [num_samples] (the mean of FluidSynth's stereo output, unnormalised).

  Raises:
    RenderError: FluidSynth cannot be loaded or cannot load the soundfont.
  """
  fluidsynth = load_fluidsynth()
  write = _write_float(fluidsynth)
  synth = fluidsynth.Synth(gain=0.2, samplerate=sample_rate, **{"synth.dynamic-sample-loading": 1})
  try:
    sfid = synth.sfload(soundfont)
    if sfid < 0:
      raise RenderError(f"FluidSynth cannot load the soundfont {soundfont}")
    for channel, program in zip(CHANNELS, programs):
      synth.program_select(channel, sfid, 0, int(program))
    stereo = np.zeros((num_samples, 2), np.float32)
    address, pos = stereo.ctypes.data, 0
    for sample, is_on, channel, pitch, vel in _events(notes, sample_rate, num_samples):
      if sample > pos:
        write(synth.synth, sample - pos, address, 2 * pos, 2, address, 2 * pos + 1, 2)
        pos = sample
      synth.noteon(channel, pitch, vel) if is_on else synth.noteoff(channel, pitch)
    if num_samples > pos:
      write(synth.synth, num_samples - pos, address, 2 * pos, 2, address, 2 * pos + 1, 2)
  finally:
    synth.delete()
  return stereo.mean(axis=1)


def finish(audio: np.ndarray, sample_rate: int) -> np.ndarray:
  """Peak-normalises to PEAK_DBFS and fades out the last FADE_SECONDS.

  Args:
    audio: [num_samples] float.
    sample_rate: Hz.

  Returns:
    float32 [num_samples] with peak exactly 10**(PEAK_DBFS / 20) < 1.

  Raises:
    RenderError: the audio is silent.
  """
  audio = np.asarray(audio, np.float64).copy()
  fade = min(len(audio), int(FADE_SECONDS * sample_rate))
  if fade:
    audio[-fade:] *= np.linspace(1.0, 0.0, fade)
  peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
  if not np.isfinite(peak) or peak < 1e-6:
    raise RenderError("the rendered audio is silent")
  return (audio * (10 ** (PEAK_DBFS / 20) / peak)).astype(np.float32)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
  """16-bit PCM mono WAV file contents of float audio in [-1, 1] [num_samples]."""
  pcm = np.clip(np.round(audio.astype(np.float64) * 32767.0), -32768, 32767).astype("<i2")
  buf = io.BytesIO()
  with wave.open(buf, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(sample_rate)
    w.writeframes(pcm.tobytes())
  return buf.getvalue()


def midi_bytes(
  notes: Sequence[np.ndarray], programs: Sequence[int], tempo_qpm: float, label: str
) -> bytes:
  """Standard MIDI file contents of the rendered notes (one track per part).

  Args:
    notes: per part [num_notes, 4] (onset seconds, duration seconds, MIDI pitch, velocity).
    programs: GM program per part.
    tempo_qpm: quarter notes per minute written as the file's tempo.
    label: text event stored at time 0 (the render settings, so a rerun can tell whether an
      existing clip matches its plan).

  Returns:
    The file's bytes.
  """
  import pretty_midi

  pm = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=float(tempo_qpm))
  for i, (part, program) in enumerate(zip(notes, programs)):
    inst = pretty_midi.Instrument(program=int(program), name=f"part {i}")
    for onset, dur, pitch, vel in part:
      inst.notes.append(
        pretty_midi.Note(velocity=int(vel), pitch=int(pitch), start=onset, end=onset + dur)
      )
    pm.instruments.append(inst)
  pm.text_events.append(pretty_midi.Text(label, 0.0))
  buf = io.BytesIO()
  pm.write(buf)
  return buf.getvalue()
