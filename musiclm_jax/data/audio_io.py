"""Reading, conditioning and writing audio files, with a defined outcome for every bad input.

`load_audio` returns float32 mono samples at the requested rate. Wrong sample rates and channel
counts are not errors (soxr resampling, mean downmix). Bad files raise `AudioError` with one of
the `AudioReason`s and a message that names the file, what is wrong and what to do (DESIGN §8).

Only the requested window is read: `SoundFile.seek` plus blocked reads, resampled block by block
with `soxr.ResampleStream`, so memory is O(window) even for hour-long files.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Literal

import numpy as np
import scipy.signal
import soundfile as sf
import soxr

from musiclm_jax.runtime.atomic import atomic_path

DEFAULT_SAMPLE_RATE = 24_000

AudioReason = Literal[
  "unreadable", "corrupt", "empty", "truncated", "nonfinite", "silent", "too_short", "too_long"
]
Normalization = Literal["none", "peak", "loudness"]
PathLike = str | os.PathLike

_ADVICE: dict[str, str] = {
  "unreadable": "check that the path exists, is a file and is readable by this user",
  "corrupt": "re-download the file or re-encode it (e.g. `ffmpeg -i IN -ar 24000 OUT.wav`)",
  "empty": "remove the file from the dataset or re-download it",
  "truncated": "the download or copy was probably interrupted: re-download or re-encode it",
  "nonfinite": "re-encode the file with finite samples, or drop it from the dataset",
  "silent": "drop the file, or pass allow_silent=True if silence is intended",
  "too_short": "request a shorter window, pass allow_short=True, or pad with crop_or_pad",
  "too_long": "pass duration_s (and offset_s) to read a window, or raise max_seconds",
}
_COMMON_FORMATS = ("WAV", "FLAC", "OGG", "MP3", "AIFF")
# Lossy decoders may stop a few codec frames short of the length the header estimates.
_LOSSY_FORMATS = ("MP3", "OGG")
_LOSSY_SHORTFALL_FRAMES = 4 * 1152
# WAV writers that stream put these placeholders in the data size; they are not truncation.
_SIZE_PLACEHOLDERS = (0xFFFFFFFF, 0x7FFFFFFF)
_LOUDNESS_BLOCK_S = 0.4
_LOUDNESS_STEP_S = 0.1
_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = -10.0


class AudioError(ValueError):
  """Bad audio input.

  Attributes:
    path: the file.
    reason: an `AudioReason`.
    detail: what exactly is wrong.
  """

  def __init__(self, path: str, reason: str, detail: str):
    self.path = os.fspath(path)
    self.reason = reason
    self.detail = detail
    advice = _ADVICE.get(reason, "")
    message = f"{self.path}: {reason}: {detail.rstrip('.')}"
    super().__init__(f"{message}. What to do: {advice}." if advice else message)

  def __reduce__(self):
    return (type(self), (self.path, self.reason, self.detail))


@dataclasses.dataclass(frozen=True)
class AudioInfo:
  """What an audio file's header says.

  Attributes:
    path: the file.
    sample_rate: frames per second.
    channels: channels per frame.
    num_frames: frames the decoder reports.
    duration_s: num_frames / sample_rate.
    format: libsndfile major format ('WAV', 'FLAC', 'OGG', 'MP3', ...).
    subtype: libsndfile subtype ('PCM_16', 'FLOAT', 'VORBIS', ...).
  """

  path: str
  sample_rate: int
  channels: int
  num_frames: int
  duration_s: float
  format: str
  subtype: str


def _check_readable(path: str) -> None:
  """Raises AudioError('unreadable' or 'empty') unless `path` is a non-empty readable file."""
  if not os.path.exists(path):
    raise AudioError(path, "unreadable", "no such file (or a broken symlink)")
  if os.path.isdir(path):
    raise AudioError(path, "unreadable", "is a directory, not an audio file")
  try:
    with open(path, "rb"):
      pass
  except OSError as e:
    raise AudioError(path, "unreadable", f"cannot open: {e.strerror or e}") from e
  if os.path.getsize(path) == 0:
    raise AudioError(path, "empty", "the file is 0 bytes")


def _open_error(path: str, error: Exception) -> AudioError:
  """Translates a libsndfile open failure into 'corrupt' with a hint about the format."""
  ext = os.path.splitext(path)[1].lower()
  text = re.sub(r"^Error opening .*?: ", "", str(error))
  if ext == ".mp3" and "MP3" not in sf.available_formats():
    detail = f"this libsndfile ({sf.__libsndfile_version__}) cannot decode MP3; convert to FLAC/WAV"
  elif "malformed" in text:
    detail = f"the header is malformed (truncated or mislabelled file?): {text}"
  elif "not recognised" in text.lower() or "not recognized" in text.lower():
    known = ", ".join(f for f in _COMMON_FORMATS if f in sf.available_formats())
    detail = f"not an audio format libsndfile can read (it reads {known} and more): {text}"
  else:
    detail = f"libsndfile cannot open it: {text}"
  return AudioError(path, "corrupt", detail)


def _header_shortfall(log: str) -> tuple[int, int, str] | None:
  """Finds a header that claims more data than the file holds in libsndfile's parse log.

  Args:
    log: `SoundFile.extra_info`.

  Returns:
    (claimed, present, unit) or None. libsndfile silently shortens such files, so the log is
    the only place the truncation shows.
  """
  block_align = re.search(r"Block Align\s*:\s*(\d+)", log)
  slack = int(block_align.group(1)) if block_align else 1
  for claimed, present in re.findall(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", log, re.M):
    claimed, present = int(claimed), int(present)
    if claimed not in _SIZE_PLACEHOLDERS and claimed - present >= slack:
      return claimed, present, "data bytes"
  frame_patterns = (  # (pattern, group of the claimed count, group of the present count)
    (r"Frame count read from '\w+' chunk \((\d+)\).*?chunk \((\d+)\)", 1, 2),  # AIFF
    (r"Calculated frame count (\d+) does not match value from '\w+' chunk of (\d+)", 2, 1),  # RF64
  )
  for pattern, claimed_group, present_group in frame_patterns:
    m = re.search(pattern, log, re.S)
    if m and int(m.group(claimed_group)) > int(m.group(present_group)):
      return int(m.group(claimed_group)), int(m.group(present_group)), "frames"
  return None


def probe(path: PathLike) -> AudioInfo:
  """Reads an audio file's header (no samples).

  Args:
    path: the file.

  Returns:
    Its `AudioInfo`.

  Raises:
    AudioError: 'unreadable', 'empty' (0 bytes), 'corrupt' (libsndfile rejects it) or
      'truncated' (the header claims more data than the file holds).
  """
  path = os.fspath(path)
  _check_readable(path)
  try:
    with sf.SoundFile(path) as f:
      info = AudioInfo(path, f.samplerate, f.channels, f.frames, 0.0, f.format, f.subtype)
      log = f.extra_info
  except (sf.LibsndfileError, RuntimeError) as e:
    raise _open_error(path, e) from e
  if info.sample_rate <= 0 or info.channels <= 0:
    raise AudioError(
      path, "corrupt", f"header says {info.sample_rate} Hz, {info.channels} channels"
    )
  shortfall = _header_shortfall(log)
  if shortfall is not None:
    claimed, present, unit = shortfall
    detail = f"the header claims {claimed} {unit} but the file holds only {present}"
    raise AudioError(path, "truncated", detail)
  duration_s = info.num_frames / info.sample_rate
  return dataclasses.replace(info, duration_s=duration_s)


def to_mono(audio: np.ndarray) -> np.ndarray:
  """Downmixes by averaging channels.

  Args:
    audio: [frames, channels] or [frames].

  Returns:
    float32 [frames].
  """
  audio = np.asarray(audio)
  if audio.ndim == 1:
    return audio.astype(np.float32, copy=False)
  if audio.ndim != 2:
    raise ValueError(f"expected [frames] or [frames, channels], got shape {audio.shape}")
  if audio.shape[1] == 1:
    return audio[:, 0].astype(np.float32, copy=False)
  return audio.mean(axis=1, dtype=np.float32)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
  """Resamples with soxr ('HQ').

  Args:
    audio: [frames] or [frames, channels].
    from_rate: its sample rate.
    to_rate: the wanted sample rate.

  Returns:
    float32 [round(frames * to_rate / from_rate)] (or with channels).
  """
  audio = np.asarray(audio, dtype=np.float32)
  if from_rate == to_rate:
    return audio
  return soxr.resample(audio, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def _window_frames(
  info: AudioInfo,
  offset_s: float,
  duration_s: float | None,
  max_seconds: float,
  allow_short: bool,
) -> tuple[int, int]:
  """The [start, start + count) frames of the file that `load_audio` reads."""
  if offset_s < 0 or (duration_s is not None and duration_s <= 0):
    raise ValueError(f"need offset_s >= 0 and duration_s > 0, got {offset_s}, {duration_s}")
  if info.num_frames == 0:
    raise AudioError(info.path, "empty", "the file has 0 audio frames")
  start = round(offset_s * info.sample_rate)
  if start >= info.num_frames:
    detail = f"the window starts at {offset_s:.2f} s but the file is {info.duration_s:.2f} s long"
    raise AudioError(info.path, "too_short", detail)
  available = info.num_frames - start
  if duration_s is None:
    if available / info.sample_rate > max_seconds:
      detail = (
        f"{available / info.sample_rate:.1f} s of audio from {offset_s:.2f} s is more than "
        f"max_seconds={max_seconds:g} (reading a whole file this long would hold it all in memory)"
      )
      raise AudioError(info.path, "too_long", detail)
    return start, available
  count = round(duration_s * info.sample_rate)
  if count > available:
    if not allow_short:
      detail = (
        f"the window [{offset_s:.2f}, {offset_s + duration_s:.2f}) s runs past the end of a "
        f"{info.duration_s:.2f} s file"
      )
      raise AudioError(info.path, "too_short", detail)
    count = available
  return start, count


class _Sink:
  """Copies resampled chunks into a preallocated [length] buffer, dropping rounding excess."""

  def __init__(self, length: int):
    self.out = np.zeros(length, np.float32)
    self.filled = 0

  def add(self, chunk: np.ndarray) -> None:
    n = min(len(chunk), len(self.out) - self.filled)
    self.out[self.filled : self.filled + n] = chunk[:n]
    self.filled += n


def _check_finite(path: str, mono: np.ndarray, first_frame: int, sample_rate: int) -> None:
  """Raises AudioError('nonfinite') at the first NaN/inf sample of a block."""
  bad = ~np.isfinite(mono)
  if bad.any():
    frame = first_frame + int(np.argmax(bad))
    detail = f"NaN/inf sample at frame {frame} ({frame / sample_rate:.3f} s)"
    raise AudioError(path, "nonfinite", detail)


def _truncated(info: AudioInfo, frame: int, what: str) -> AudioError:
  detail = (
    f"the header declares {info.num_frames} frames ({info.duration_s:.2f} s) but {what} "
    f"at frame {frame} ({frame / info.sample_rate:.2f} s)"
  )
  return AudioError(info.path, "truncated", detail)


def _read_resampled(
  info: AudioInfo, start: int, count: int, sample_rate: int, block_seconds: float
) -> np.ndarray:
  """Reads frames [start, start + count) in blocks, downmixes and resamples each block.

  Returns:
    float32 [round(count * sample_rate / info.sample_rate)].
  """
  sink = _Sink(round(count * sample_rate / info.sample_rate))
  stream = None
  if info.sample_rate != sample_rate:
    stream = soxr.ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32", quality="HQ")
  block = max(1, min(count, int(block_seconds * info.sample_rate)))
  buffer = np.empty((block, info.channels), np.float32)
  tolerance = _LOSSY_SHORTFALL_FRAMES if info.format in _LOSSY_FORMATS else 0
  with sf.SoundFile(info.path) as f:
    pos, end = start, start + count
    try:
      f.seek(start)
    except (sf.LibsndfileError, RuntimeError) as e:
      raise _truncated(info, start, f"seeking failed ({e})") from e
    while pos < end:
      n = min(block, end - pos)
      try:
        frames = f.read(frames=n, dtype="float32", always_2d=True, out=buffer[:n])
      except (sf.LibsndfileError, RuntimeError) as e:
        raise _truncated(info, pos, f"decoding failed ({e}) in the block starting") from e
      short = len(frames) < n
      if short and end - pos - len(frames) > tolerance:
        raise _truncated(info, pos + len(frames), "the data ends")
      mono = to_mono(frames)
      _check_finite(info.path, mono, pos, info.sample_rate)
      pos = end if short else pos + n
      sink.add(mono if stream is None else stream.resample_chunk(mono, last=pos >= end))
  return sink.out


def _check_not_silent(path: str, audio: np.ndarray, silence_db: float) -> None:
  """Raises AudioError('silent') if the RMS level is below `silence_db` dBFS."""
  mean_square = float(np.dot(audio, audio)) / max(1, len(audio))
  rms_db = 10.0 * np.log10(mean_square + 1e-20)
  if rms_db < silence_db:
    peak_db = 20.0 * np.log10(float(np.max(np.abs(audio), initial=0.0)) + 1e-10)
    detail = f"RMS {rms_db:.1f} dBFS (peak {peak_db:.1f} dBFS) is below silence_db={silence_db:g}"
    raise AudioError(path, "silent", detail)


def load_audio(
  path: PathLike,
  sample_rate: int = DEFAULT_SAMPLE_RATE,
  *,
  offset_s: float = 0.0,
  duration_s: float | None = None,
  normalization: Normalization = "none",
  max_seconds: float = 600.0,
  silence_db: float = -60.0,
  allow_silent: bool = False,
  allow_short: bool = False,
  block_seconds: float = 10.0,
) -> np.ndarray:
  """Loads a window of an audio file as mono float32 at `sample_rate`.

  Args:
    path: a file libsndfile reads (WAV, FLAC, OGG, MP3, ...), any rate and channel count.
    sample_rate: the output rate.
    offset_s: where the window starts in the file.
    duration_s: the window's length; None reads to the end (at most `max_seconds`).
    normalization: 'none', 'peak' or 'loudness' (see `normalize`).
    max_seconds: longest audio read when `duration_s` is None.
    silence_db: RMS level (dBFS) below which the window is 'silent'.
    allow_silent: return silent windows instead of raising.
    allow_short: return what there is when the window runs past the end of the file.
    block_seconds: frames read and resampled per step; bounds the working memory.

  Returns:
    float32 [round(frames * sample_rate / file_rate)], finite.

  Raises:
    AudioError: with reason 'unreadable', 'corrupt', 'empty', 'truncated', 'nonfinite',
      'silent', 'too_short' or 'too_long'.
  """
  if sample_rate <= 0:
    raise ValueError(f"sample_rate must be positive, got {sample_rate}")
  info = probe(path)
  start, count = _window_frames(info, offset_s, duration_s, max_seconds, allow_short)
  audio = _read_resampled(info, start, count, sample_rate, block_seconds)
  if not allow_silent:
    _check_not_silent(info.path, audio, silence_db)
  return normalize(audio, normalization, sample_rate=sample_rate)


# ITU-R BS.1770-4 K-weighting as published for 48 kHz: (b, a) of the shelf and high-pass stages.
_K_WEIGHTING_48K = (
  (
    [1.53512485958697, -2.69169618940638, 1.19839281085285],
    [1.0, -1.69065929318241, 0.73248077421585],
  ),
  ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621]),
)
_K_WEIGHTING_RATE = 48_000


def _to_analog(b: list[float], fs: float) -> np.ndarray:
  """Inverts the bilinear transform z = (2fs + s) / (2fs - s) for one biquad polynomial.

  Returns:
    [3] coefficients in descending powers of s.
  """
  k = 2.0 * fs
  return np.array([b[0] - b[1] + b[2], 2.0 * k * (b[0] - b[2]), k * k * (b[0] + b[1] + b[2])])


def k_weighting_sos(sample_rate: int) -> np.ndarray:
  """The ITU-R BS.1770 K-weighting filter at any sample rate.

  The standard gives biquad coefficients for 48 kHz only; each stage is mapped back to its
  analog prototype (inverse bilinear transform) and redesigned at `sample_rate`, which is exact
  at 48 kHz and matches its response well below the Nyquist frequency elsewhere.

  Args:
    sample_rate: Hz.

  Returns:
    float64 [2, 6] second-order sections for `scipy.signal.sosfilt`.
  """
  sections = []
  for b, a in _K_WEIGHTING_48K:
    num, den = _to_analog(b, _K_WEIGHTING_RATE), _to_analog(a, _K_WEIGHTING_RATE)
    bz, az = scipy.signal.bilinear(num, den, fs=sample_rate)
    sections.append(np.concatenate([bz, az]) / az[0])
  return np.stack(sections)


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
  """Gated integrated loudness per ITU-R BS.1770-4 (all channels weighted 1).

  Args:
    audio: [samples] or [samples, channels].
    sample_rate: Hz.

  Returns:
    LUFS; -inf when every 400 ms block is below the -70 LUFS absolute gate.
  """
  audio = np.asarray(audio, dtype=np.float64)
  audio = audio[:, None] if audio.ndim == 1 else audio
  weighted = scipy.signal.sosfilt(k_weighting_sos(sample_rate), audio, axis=0)
  power = np.sum(weighted * weighted, axis=1)
  block, step = round(_LOUDNESS_BLOCK_S * sample_rate), round(_LOUDNESS_STEP_S * sample_rate)
  if len(power) < block:  # shorter than one gating block: ungated mean
    mean_square = np.array([power.mean()]) if len(power) else np.zeros(1)
  else:
    cumulative = np.concatenate([[0.0], np.cumsum(power)])
    starts = np.arange(0, len(power) - block + 1, step)
    mean_square = (cumulative[starts + block] - cumulative[starts]) / block
  with np.errstate(divide="ignore"):
    block_lufs = -0.691 + 10.0 * np.log10(mean_square)
  kept = mean_square[block_lufs > _ABSOLUTE_GATE_LUFS]
  if len(kept) == 0:
    return float("-inf")
  relative_gate = -0.691 + 10.0 * np.log10(kept.mean()) + _RELATIVE_GATE_LU
  kept = mean_square[(block_lufs > _ABSOLUTE_GATE_LUFS) & (block_lufs > relative_gate)]
  return float(-0.691 + 10.0 * np.log10(kept.mean()))


def normalize(
  audio: np.ndarray,
  mode: Normalization,
  *,
  sample_rate: int = DEFAULT_SAMPLE_RATE,
  peak_db: float = -1.0,
  target_lufs: float = -23.0,
) -> np.ndarray:
  """Scales audio by one gain.

  Args:
    audio: [samples] or [samples, channels].
    mode: 'none'; 'peak' (peak at `peak_db` dBFS); 'loudness' (BS.1770 integrated loudness at
      `target_lufs`, then scaled down if any sample would exceed 1.0).
    sample_rate: Hz, for the loudness filter.
    peak_db: target peak for 'peak'.
    target_lufs: target loudness for 'loudness'.

  Returns:
    float32, same shape. Silent input (no peak, or loudness below the absolute gate) is
    returned unscaled.
  """
  audio = np.asarray(audio, dtype=np.float32)
  if mode == "none":
    return audio
  if mode == "peak":
    peak = float(np.max(np.abs(audio), initial=0.0))
    gain = 10.0 ** (peak_db / 20.0) / peak if peak > 0 else 1.0
  elif mode == "loudness":
    loudness = integrated_loudness(audio, sample_rate)
    gain = 10.0 ** ((target_lufs - loudness) / 20.0) if np.isfinite(loudness) else 1.0
    peak = float(np.max(np.abs(audio), initial=0.0)) * gain
    gain = gain / peak if peak > 1.0 else gain
  else:
    raise ValueError(f"normalization must be 'none', 'peak' or 'loudness', got {mode!r}")
  return (audio * np.float32(gain)).astype(np.float32, copy=False)


def crop_or_pad(
  audio: np.ndarray,
  num_samples: int,
  *,
  crop: Literal["random", "start", "center"] = "random",
  pad: Literal["zeros", "repeat", "error"] = "zeros",
  rng: np.random.Generator | None = None,
  path: str = "<array>",
) -> np.ndarray:
  """Makes audio exactly `num_samples` long along axis 0.

  Args:
    audio: [samples] or [samples, channels].
    num_samples: the wanted length.
    crop: where a longer clip is cut: a random start (from `rng`), the start or the centre.
    pad: how a shorter clip is lengthened: zeros at the end, repeating it, or AudioError.
    rng: the generator for crop='random'; a fresh unseeded one if None.
    path: the file the audio came from, for error messages.

  Returns:
    [num_samples] or [num_samples, channels], same dtype.

  Raises:
    AudioError: 'too_short' for pad='error' (or pad='repeat' of an empty clip).
  """
  if num_samples < 0:
    raise ValueError(f"num_samples must be >= 0, got {num_samples}")
  length = audio.shape[0]
  if length >= num_samples:
    if crop == "random":
      start = int((rng or np.random.default_rng()).integers(0, length - num_samples + 1))
    elif crop == "start":
      start = 0
    elif crop == "center":
      start = (length - num_samples) // 2
    else:
      raise ValueError(f"crop must be 'random', 'start' or 'center', got {crop!r}")
    return audio[start : start + num_samples]
  if pad == "zeros":
    widths = [(0, num_samples - length)] + [(0, 0)] * (audio.ndim - 1)
    return np.pad(audio, widths)
  if pad == "repeat" and length > 0:
    return np.take(audio, np.arange(num_samples) % length, axis=0)
  if pad not in ("repeat", "error"):
    raise ValueError(f"pad must be 'zeros', 'repeat' or 'error', got {pad!r}")
  detail = f"the clip has {length} samples but {num_samples} are needed (pad={pad!r})"
  raise AudioError(path, "too_short", detail)


def write_wav(path: PathLike, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
  """Writes a WAV file atomically (a temporary file in the same directory, then os.replace).

  Args:
    path: the destination; parent directories are created.
    audio: [samples] or [samples, channels], finite; clipped to [-1, 1] for PCM subtypes.
    sample_rate: Hz.
    subtype: libsndfile subtype ('PCM_16', 'PCM_24', 'FLOAT', ...).
  """
  path = os.fspath(path)
  audio = np.asarray(audio, dtype=np.float32)
  if not np.isfinite(audio).all():
    raise ValueError(f"{path}: refusing to write audio with NaN/inf samples")
  if subtype.startswith("PCM"):
    audio = np.clip(audio, -1.0, 1.0)
  with atomic_path(path) as tmp:
    sf.write(tmp, audio, sample_rate, subtype=subtype, format="WAV")
