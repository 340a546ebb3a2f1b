"""Tests of audio reading, conditioning and writing, including every kind of bad file."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr

from musiclm_jax.data import audio_io
from musiclm_jax.data.audio_io import AudioError

SR = audio_io.DEFAULT_SAMPLE_RATE
HAS_MP3 = "MP3" in sf.available_formats()


def _tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
  return (amp * np.sin(2 * np.pi * freq * np.arange(round(seconds * sr)) / sr)).astype(np.float32)


def _peak_hz(audio: np.ndarray, sr: int) -> float:
  spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
  return float(np.fft.rfftfreq(len(audio), 1 / sr)[np.argmax(spectrum)])


def _write(path, audio, sr, **kwargs) -> str:
  sf.write(path, audio, sr, **kwargs)
  return os.fspath(path)


def _cut_in_half(path) -> str:
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  return os.fspath(path)


@pytest.mark.parametrize("file_rate", [44_100, 48_000, 24_000, 16_000])
def test_load_resamples_to_exact_length_and_keeps_pitch(tmp_path, file_rate):
  path = _write(tmp_path / "tone.wav", _tone(1000.0, 2.0, file_rate), file_rate)
  audio = audio_io.load_audio(path, SR)
  assert audio.dtype == np.float32 and audio.shape == (2 * SR,)
  assert abs(_peak_hz(audio, SR) - 1000.0) <= 1.0
  assert np.abs(audio[SR // 2 : -SR // 2]).max() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_is_averaged_to_mono(tmp_path, channels):
  tone = _tone(440.0, 0.5, SR)
  stereo = np.zeros((len(tone), channels), np.float32)
  stereo[:, 0] = tone
  path = _write(tmp_path / "multi.wav", stereo, SR, subtype="FLOAT")
  np.testing.assert_allclose(audio_io.load_audio(path, SR), tone / channels, atol=1e-6)
  assert audio_io.probe(path).channels == channels


@pytest.mark.parametrize(
  "name, kwargs, tolerance",
  [
    ("clip.flac", {}, 0),
    ("clip.ogg", {}, 0),
    pytest.param(
      "clip.mp3",
      {"format": "MP3"},
      2000,
      marks=pytest.mark.skipif(not HAS_MP3, reason="this libsndfile has no MP3 support"),
    ),
  ],
)
def test_compressed_formats_round_trip(tmp_path, name, kwargs, tolerance):
  path = _write(tmp_path / name, _tone(1000.0, 1.0, 48_000), 48_000, **kwargs)
  audio = audio_io.load_audio(path, SR)
  assert abs(len(audio) - SR) <= tolerance
  assert abs(_peak_hz(audio, SR) - 1000.0) <= 2.0
  assert np.isfinite(audio).all()


def _garbage(tmp_path):
  path = tmp_path / "garbage.wav"
  path.write_bytes(np.random.default_rng(0).bytes(4000))
  return path


def _zero_bytes(tmp_path):
  path = tmp_path / "zero.wav"
  path.write_bytes(b"")
  return path


def _no_frames(tmp_path):
  return _write(tmp_path / "no_frames.wav", np.zeros(0, np.float32), SR)


def _truncated(name, **kwargs):
  def make(tmp_path):
    return _cut_in_half(_write(tmp_path / name, _tone(440.0, 1.0, SR), SR, **kwargs))

  return make


def _with_sample(value):
  def make(tmp_path):
    audio = _tone(440.0, 1.0, SR)
    audio[1234] = value
    return _write(tmp_path / "bad_sample.wav", audio, SR, subtype="FLOAT")

  return make


def _silence(tmp_path):
  audio = np.random.default_rng(0).normal(0, 1e-5, SR).astype(np.float32)  # ~ -100 dBFS hiss
  return _write(tmp_path / "silence.wav", audio, SR, subtype="FLOAT")


def _missing(tmp_path):
  return tmp_path / "nowhere.wav"


def _directory(tmp_path):
  (tmp_path / "folder.wav").mkdir()
  return tmp_path / "folder.wav"


BAD_FILES = [
  pytest.param(_garbage, "corrupt", "not an audio format", id="garbage"),
  pytest.param(_zero_bytes, "empty", "0 bytes", id="zero_bytes"),
  pytest.param(_no_frames, "empty", "0 audio frames", id="no_frames"),
  pytest.param(_truncated("a.wav"), "truncated", "header claims", id="truncated_pcm16"),
  pytest.param(
    _truncated("a.wav", subtype="FLOAT"), "truncated", "header claims", id="truncated_float"
  ),
  pytest.param(_truncated("a.aiff"), "truncated", "header claims", id="truncated_aiff"),
  pytest.param(
    _truncated("a.wav", format="RF64"), "truncated", "header claims", id="truncated_rf64"
  ),
  pytest.param(_truncated("a.flac"), "truncated", "decoding failed", id="truncated_flac"),
  pytest.param(
    _truncated("a.mp3", format="MP3"),
    "truncated",
    "the data ends",
    id="truncated_mp3",
    marks=pytest.mark.skipif(not HAS_MP3, reason="this libsndfile has no MP3 support"),
  ),
  pytest.param(_with_sample(np.nan), "nonfinite", "frame 1234", id="nan"),
  pytest.param(_with_sample(np.inf), "nonfinite", "frame 1234", id="inf"),
  pytest.param(_with_sample(-np.inf), "nonfinite", "frame 1234", id="minus_inf"),
  pytest.param(_silence, "silent", "below silence_db", id="silence"),
  pytest.param(_missing, "unreadable", "no such file", id="missing"),
  pytest.param(_directory, "unreadable", "directory", id="directory"),
]


@pytest.mark.parametrize("make, reason, text", BAD_FILES)
def test_bad_files_raise_actionable_errors(tmp_path, make, reason, text):
  path = os.fspath(make(tmp_path))
  with pytest.raises(AudioError) as info:
    audio_io.load_audio(path, SR)
  error = info.value
  assert (error.path, error.reason) == (path, reason)
  message = str(error)
  assert message.startswith(path) and reason in message and text in message
  assert "What to do:" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_permissions(tmp_path):
  path = _write(tmp_path / "locked.wav", _tone(440.0, 0.2, SR), SR)
  os.chmod(path, 0)
  with pytest.raises(AudioError, match="unreadable: cannot open"):
    audio_io.load_audio(path, SR)


def test_silence_is_returned_when_allowed(tmp_path):
  path = _silence(tmp_path)
  assert audio_io.load_audio(path, SR, allow_silent=True).shape == (SR,)
  assert audio_io.load_audio(path, SR, silence_db=-120.0).shape == (SR,)


def test_windows_past_the_end(tmp_path):
  path = _write(tmp_path / "one_second.wav", _tone(440.0, 1.0, SR), SR)
  with pytest.raises(AudioError, match=r"too_short: the window \[0.50, 1.50\) s runs past"):
    audio_io.load_audio(path, SR, offset_s=0.5, duration_s=1.0)
  with pytest.raises(AudioError, match="too_short: the window starts at 2.00 s"):
    audio_io.load_audio(path, SR, offset_s=2.0, duration_s=1.0, allow_short=True)
  assert audio_io.load_audio(path, SR, offset_s=0.5, duration_s=1.0, allow_short=True).shape == (
    SR // 2,
  )


def test_blocked_reading_matches_one_shot_resampling(tmp_path):
  audio = _tone(1000.0, 1.0, 44_100) + _tone(3000.0, 1.0, 44_100, amp=0.2)
  path = _write(tmp_path / "tone.wav", audio, 44_100, subtype="FLOAT")
  blocked = audio_io.load_audio(path, SR, offset_s=0.25, duration_s=0.5, block_seconds=0.01)
  one_shot = soxr.resample(audio[11_025 : 11_025 + 22_050], 44_100, SR, quality="HQ")
  np.testing.assert_allclose(blocked, one_shot, atol=1e-5)


@pytest.fixture(scope="module")
def long_file(tmp_path_factory) -> str:
  """20 minutes of 8 kHz int16 (19 MB), written a minute at a time."""
  path = os.fspath(tmp_path_factory.mktemp("long") / "twenty_minutes.wav")
  minute = _tone(500.0, 60.0, 8000)
  with sf.SoundFile(path, "w", 8000, 1, subtype="PCM_16") as f:
    for _ in range(20):
      f.write(minute)
  return path


def test_long_files_are_read_in_bounded_memory(long_file):
  size = os.path.getsize(long_file)
  tracemalloc.start()
  try:
    window = audio_io.load_audio(long_file, SR, offset_s=900.0, duration_s=2.0)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert window.shape == (2 * SR,) and abs(_peak_hz(window, SR) - 500.0) <= 1.0
  assert peak < size / 20, f"peak allocation {peak} bytes for a {size}-byte file"


def test_long_files_need_a_window(long_file):
  with pytest.raises(AudioError, match="too_long: 1200.0 s of audio .* max_seconds=600") as info:
    audio_io.load_audio(long_file, SR)
  assert "pass duration_s" in str(info.value)


def test_probe_reads_the_header(tmp_path):
  path = _write(tmp_path / "x.flac", np.zeros((4800, 2), np.float32), 48_000)
  info = audio_io.probe(path)
  assert (info.sample_rate, info.channels, info.num_frames, info.format) == (
    48_000,
    2,
    4800,
    "FLAC",
  )
  assert info.duration_s == pytest.approx(0.1)


def test_k_weighting_matches_the_standard_at_48k():
  expected = [
    [1.53512485958697, -2.69169618940638, 1.19839281085285, 1, -1.69065929318241, 0.73248077421585],
    [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
  ]
  np.testing.assert_allclose(audio_io.k_weighting_sos(48_000), expected, atol=1e-12)


@pytest.mark.parametrize("sr", [48_000, 24_000])
def test_full_scale_997_hz_sine_measures_minus_3_lufs(sr):
  # BS.1770: a 0 dBFS 1 kHz sine in one channel reads -3.01 LKFS.
  assert audio_io.integrated_loudness(_tone(997.0, 3.0, sr, amp=1.0), sr) == pytest.approx(
    -3.01, abs=0.05
  )


def test_peak_normalization():
  out = audio_io.normalize(_tone(440.0, 0.5, SR, amp=0.1), "peak", peak_db=-1.0)
  assert np.abs(out).max() == pytest.approx(10 ** (-1 / 20), rel=1e-5)


@pytest.mark.parametrize("start_lufs, target_lufs", [(-30.0, -23.0), (-30.0, -3.0), (-10.0, -23.0)])
def test_loudness_normalization(start_lufs, target_lufs):
  tone = _tone(440.0, 3.0, SR, amp=1.0)
  tone *= 10 ** ((start_lufs - audio_io.integrated_loudness(tone, SR)) / 20)
  assert audio_io.integrated_loudness(tone, SR) == pytest.approx(start_lufs, abs=0.01)
  out = audio_io.normalize(tone, "loudness", sample_rate=SR, target_lufs=target_lufs)
  assert np.abs(out).max() <= 1.0
  if target_lufs == -3.0:  # a 440 Hz sine at -3 LUFS would clip; peak-limited to 1.0 instead
    assert np.abs(out).max() == pytest.approx(1.0)
  else:
    assert audio_io.integrated_loudness(out, SR) == pytest.approx(target_lufs, abs=0.5)


def test_loudness_normalization_when_loading(tmp_path):
  path = _write(tmp_path / "quiet.wav", _tone(440.0, 2.0, SR, amp=0.02), SR)
  audio = audio_io.load_audio(path, SR, normalization="loudness")
  assert audio_io.integrated_loudness(audio, SR) == pytest.approx(-23.0, abs=0.5)


def test_normalizing_silence_leaves_it_alone():
  zeros = np.zeros(SR, np.float32)
  for mode in ("peak", "loudness"):
    np.testing.assert_array_equal(audio_io.normalize(zeros, mode), zeros)


CLIP = np.arange(10, dtype=np.float32)


@pytest.mark.parametrize(
  "num, crop, pad, expected",
  [
    (4, "start", "zeros", [0, 1, 2, 3]),
    (4, "center", "zeros", [3, 4, 5, 6]),
    (10, "center", "error", list(range(10))),
    (13, "start", "zeros", list(range(10)) + [0, 0, 0]),
    (13, "start", "repeat", list(range(10)) + [0, 1, 2]),
    (25, "start", "repeat", list(range(10)) * 2 + [0, 1, 2, 3, 4]),
  ],
)
def test_crop_or_pad_policies(num, crop, pad, expected):
  np.testing.assert_array_equal(audio_io.crop_or_pad(CLIP, num, crop=crop, pad=pad), expected)


def test_random_crop_is_deterministic_for_a_seeded_rng():
  def crops(seed):
    rng = np.random.default_rng(seed)
    return [audio_io.crop_or_pad(CLIP, 3, rng=rng)[0] for _ in range(20)]

  assert crops(0) == crops(0)
  assert crops(0) != crops(1)
  assert set(crops(0)) <= set(range(8)) and len(set(crops(0))) > 1


def test_crop_or_pad_keeps_channels():
  stereo = np.stack([CLIP, -CLIP], axis=1)
  assert audio_io.crop_or_pad(stereo, 12, pad="repeat").shape == (12, 2)


@pytest.mark.parametrize("clip", [CLIP, CLIP[:0]])
def test_pad_error_names_the_file(clip):
  pad = "error" if len(clip) else "repeat"
  with pytest.raises(AudioError, match=r"^song\.wav: too_short: the clip has \d+ samples but 20"):
    audio_io.crop_or_pad(clip, 20, pad=pad, path="song.wav")


def test_write_wav_clips_and_is_atomic(tmp_path):
  audio = np.array([0.0, 0.5, 1.5, -3.0, -0.25], np.float32)
  path = tmp_path / "sub" / "out.wav"
  audio_io.write_wav(path, audio, SR)
  read, sr = sf.read(path, dtype="float32")
  assert sr == SR and sf.info(path).subtype == "PCM_16"
  np.testing.assert_allclose(read, [0.0, 0.5, 1.0, -1.0, -0.25], atol=1e-4)
  assert os.listdir(tmp_path / "sub") == ["out.wav"]


def test_write_wav_refuses_nonfinite_and_leaves_nothing(tmp_path):
  with pytest.raises(ValueError, match="NaN/inf"):
    audio_io.write_wav(tmp_path / "bad.wav", np.array([0.0, np.nan], np.float32), SR)
  assert os.listdir(tmp_path) == []
