"""Tests of the Flax musicnn tagger against musicnn's own TF outputs and librosa's mel spectrogram.

The reference (`tests/fixtures/musicnn/musicnn_reference.npz`) was recorded by
`tests/fixtures/musicnn/record_musicnn_fixture.py` with musicnn 0.1.0's TF1 graph and
`batch_data`; the weights are those of the installed musicnn package.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import librosa
import numpy as np
import pytest

from musiclm_jax.data import audio_io
from musiclm_jax.data.render import synth
from musiclm_jax.evaluation import musicnn

# The weights ship in the musicnn package (the Makefile installs it: pip install --no-deps musicnn).
configuration = pytest.importorskip("musicnn.configuration", reason="musicnn package not installed")

FIXTURE = os.path.join(
  os.path.dirname(__file__), os.pardir, "fixtures", "musicnn", "musicnn_reference.npz"
)
CLIPS = ("tones_noise", "plucks")
SR = musicnn.SAMPLE_RATE


@pytest.fixture(scope="module")
def tagger() -> musicnn.MusicnnTagger:
  return musicnn.load_musicnn()


@pytest.fixture(scope="module")
def small_chunks(tagger) -> musicnn.MusicnnTagger:
  """The same model compiled for chunks of 4 windows, so a few clips span several chunks."""
  return dataclasses.replace(tagger, chunk_windows=4)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
  with np.load(FIXTURE) as data:
    return dict(data)


def _audio(reference, clip: str) -> np.ndarray:
  return (reference[f"{clip}/pcm"] / int(reference["pcm_scale"])).astype(np.float32)


def test_window_and_model_sizes(tagger):
  frames = librosa.time_to_frames(3, sr=SR, n_fft=musicnn.N_FFT, hop_length=musicnn.HOP_LENGTH)
  assert musicnn.window_frames() == frames + 1 == 187
  assert tagger.labels == tuple(configuration.MTT_LABELS) and len(tagger.labels) == 50
  assert musicnn.param_count(tagger) == 792_079  # + Adam's 2 beta powers = the TF file's 792,081


def test_load_is_cached_and_refuses_other_models(tagger):
  assert musicnn.load_musicnn("MTT_musicnn") is tagger
  with pytest.raises(ValueError, match="MTT_musicnn, MSD_musicnn"):
    musicnn.load_musicnn("MTT_vgg")


@pytest.mark.filterwarnings("ignore:n_fft=512 is too large")
@pytest.mark.parametrize("samples", [100, 16_001, 48_000])
def test_mel_power_matches_librosa(samples):
  rng = np.random.default_rng(samples)
  t = np.arange(samples) / SR
  audio = (0.1 * np.sin(2 * np.pi * 330 * t) + 0.02 * rng.standard_normal(samples)).astype(
    np.float32
  )
  expected = librosa.feature.melspectrogram(
    y=audio, sr=SR, n_fft=musicnn.N_FFT, hop_length=musicnn.HOP_LENGTH, n_mels=musicnn.N_MELS
  ).T
  ours = musicnn.mel_power(audio)
  assert ours.shape == expected.shape == (1 + samples // musicnn.HOP_LENGTH, musicnn.N_MELS)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_compress_is_musicnns_float16_log_and_saturates():
  mel = np.array([0.0, 1e-4, 0.37, 2.0, 6.5, 6.6, 500.0], np.float32)
  ours = musicnn.compress(mel)
  mel16 = mel.astype(np.float16)
  with np.errstate(over="ignore"):
    theirs = np.log10(10_000 * mel16 + 1)  # musicnn's batch_data, float16 throughout
  finite = np.isfinite(theirs)
  assert list(finite) == [True] * 5 + [False] * 2  # 10000 x overflows float16 above ~6.55
  np.testing.assert_array_equal(ours[finite], theirs[finite].astype(np.float32))
  np.testing.assert_allclose(ours[~finite], np.log10(65_505), atol=1e-3)
  assert np.all(np.diff(ours) >= 0)


def test_cut_windows_drops_the_tail_and_repeat_pads_short_clips():
  frames = np.arange(400 * 2, dtype=np.float32).reshape(400, 2)
  windows = musicnn.cut_windows(frames, 187)
  assert windows.shape == (2, 187, 2)
  np.testing.assert_array_equal(windows[1], frames[187:374])
  short = musicnn.cut_windows(frames[:80], 187)
  assert short.shape == (1, 187, 2)
  np.testing.assert_array_equal(short[0], np.concatenate([frames[:80]] * 3)[:187])


@pytest.mark.parametrize("clip", CLIPS)
def test_log_mel_matches_musicnn_batch_data(reference, clip):
  ours = musicnn.cut_windows(musicnn.log_mel(_audio(reference, clip)), musicnn.window_frames())
  theirs = reference[f"{clip}/log_mel"].astype(np.float32)
  assert ours.shape == theirs.shape
  # float32 FFT round-off can flip a float16 rounding: at most one float16 step, very rarely.
  assert np.abs(ours - theirs).max() <= 2e-3
  assert np.mean(ours != theirs) < 1e-3


@pytest.mark.parametrize("clip", CLIPS)
def test_outputs_match_musicnn_tensorflow(tagger, small_chunks, reference, clip):
  from_patches = tagger.analyze_patches(reference[f"{clip}/log_mel"])
  (from_audio,) = small_chunks.analyze([_audio(reference, clip)], SR)
  for out in (from_patches, from_audio):
    np.testing.assert_allclose(out.tags, reference[f"{clip}/tags"], atol=1e-4, rtol=0)
    for field, key in (("embeddings", "penultimate"), ("mean_pool", "mean_pool")):
      expected = reference[f"{clip}/{key}"]
      error = np.abs(getattr(out, field) - expected).max() / np.abs(expected).max()
      assert error < 1e-3, (field, error)


def test_analyze_shapes_windows_and_batch_independence(small_chunks, reference):
  mix = _audio(reference, "tones_noise")
  clips = [mix[:SR], mix, np.concatenate([mix, mix[: 4 * SR]]), mix]  # 1 s, 6 s, 10 s, 6 s
  outs = small_chunks.analyze(clips, SR)
  assert [o.tags.shape[0] for o in outs] == [1, 2, 3, 2]
  for out in outs:
    assert out.tags.dtype == out.embeddings.dtype == out.mean_pool.dtype == np.float32
    assert out.embeddings.shape[1:] == (200,) and out.mean_pool.shape[1:] == (753,)
    assert np.all((out.tags >= 0) & (out.tags <= 1))
  # Identical clips in other rows of the batch: equal up to the matmul kernels' row tiling,
  # which on some CPUs rounds edge rows differently (6e-8 seen).
  np.testing.assert_allclose(outs[1].tags, outs[3].tags, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(outs[2].tags[:2], outs[1].tags, atol=1e-6)  # same first 6 s
  (alone,) = small_chunks.analyze([mix], SR)
  np.testing.assert_allclose(alone.embeddings, outs[1].embeddings, atol=1e-5)
  assert small_chunks.analyze([], SR) == []


def test_analyze_resamples_to_16khz(small_chunks, reference):
  audio = _audio(reference, "plucks")
  (native,) = small_chunks.analyze([audio], SR)
  (resampled,) = small_chunks.analyze([audio_io.resample(audio, SR, 24_000)], 24_000)
  np.testing.assert_allclose(resampled.tags, native.tags, atol=1e-3)


@pytest.mark.parametrize(
  "clip, match",
  [
    (np.zeros((2, SR), np.float32), "clip 1: expected mono"),
    (np.full(SR, np.nan, np.float32), "clip 1 holds NaN"),
    (np.zeros(0, np.float32), "clip 1 is empty"),
    (np.zeros(SR, np.int16), "clip 1: expected float"),
  ],
)
def test_analyze_refuses_bad_clips(small_chunks, clip, match):
  with pytest.raises(ValueError, match=match):
    small_chunks.analyze([np.zeros(SR, np.float32), clip], SR)


def test_analyze_refuses_bad_sample_rate(small_chunks):
  with pytest.raises(ValueError, match="sample_rate"):
    small_chunks.analyze([np.zeros(SR, np.float32)], 0)


def _render(program: int) -> np.ndarray:
  """A 6 s arpeggio rendered with pretty_midi's GM soundfont, peak-normalised to -1 dBFS."""
  pitches = [60, 64, 67, 72, 67, 64, 60, 55, 60, 64, 67, 72, 76, 72, 67]
  notes = [np.array([(0.4 * i, 0.6, p, 90) for i, p in enumerate(pitches)], float)]
  audio = synth.synthesize(
    notes, [program], sample_rate=SR, num_samples=6 * SR, soundfont=synth.bundled_soundfont()
  )
  return synth.finish(audio, SR)


def test_tags_make_sense_on_rendered_instruments(small_chunks):
  rng = np.random.default_rng(0)
  noise = rng.standard_normal(6 * SR)
  clips = {"piano": _render(0), "guitar": _render(24), "noise": 0.9 * noise / np.abs(noise).max()}
  # Loud renders overflow musicnn's float16 front end in a few percent of bins (saturated here).
  assert musicnn.overflow_fraction(clips["piano"]) > 0
  outs = small_chunks.analyze([c.astype(np.float32) for c in clips.values()], SR)
  scores = {
    name: dict(zip(small_chunks.labels, o.tags.mean(axis=0))) for name, o in zip(clips, outs)
  }
  assert max(scores["piano"], key=scores["piano"].get) == "piano"
  assert scores["piano"]["piano"] > 0.5 and scores["noise"]["piano"] < 0.05
  assert scores["guitar"]["guitar"] > 5 * max(scores["piano"]["guitar"], scores["noise"]["guitar"])


def test_msd_model_loads_with_its_own_labels(reference):
  msd = musicnn.load_musicnn("MSD_musicnn")
  assert msd.labels == tuple(configuration.MSD_LABELS) and msd.model == "MSD_musicnn"
  out = msd.analyze_patches(reference["plucks/log_mel"])
  assert out.tags.shape == (1, 50) and np.all((out.tags >= 0) & (out.tags <= 1))
  assert not np.allclose(out.tags, reference["plucks/tags"], atol=1e-2)  # other weights


def test_missing_package_names_the_install_line(monkeypatch):
  monkeypatch.setitem(sys.modules, "musicnn", None)  # as if it were not installed
  monkeypatch.setitem(sys.modules, "musicnn.configuration", None)
  with pytest.raises(ModuleNotFoundError, match="pip install --no-deps musicnn==0.1.0"):
    musicnn.load_musicnn()
