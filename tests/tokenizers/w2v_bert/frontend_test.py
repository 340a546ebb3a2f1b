"""w2v-BERT front end: librosa-matching log-mel, exact 25 Hz frame counts, masks, normalisation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from musiclm_jax.layers import spectral
from musiclm_jax.tokenizers.w2v_bert import frontend
from musiclm_jax.tokenizers.w2v_bert.config import W2VBertConfig
from tests.size_configs import size_config

CONFIG = size_config("w2v_bert", "tiny")


def test_mel_filterbank_matches_librosa():
  ours = spectral.slaney_mel_filterbank(24000, 1024, 80)
  reference = librosa.filters.mel(sr=24000, n_fft=1024, n_mels=80, htk=False, norm="slaney")
  assert ours.shape == reference.T.shape == (513, 80)
  np.testing.assert_allclose(ours, reference.T, rtol=1e-4, atol=1e-7)


def test_log_mel_of_a_tone_matches_librosa():
  t = np.arange(24000) / 24000.0
  tone = (0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 3001.0 * t)).astype(
    np.float32
  )
  ours = np.asarray(jax.jit(lambda a: frontend.log_mel(a, CONFIG))(tone[None]))[0]
  mel = librosa.feature.melspectrogram(
    y=tone.astype(np.float64),
    sr=24000,
    n_fft=1024,
    hop_length=240,
    win_length=600,
    window="hann",
    center=True,
    pad_mode="constant",
    power=2.0,
    n_mels=80,
    htk=False,
    norm="slaney",
  ).T
  assert ours.shape == mel.shape == (101, 80)
  reference = np.log(np.maximum(mel, CONFIG.mel_floor))
  # Compare where there is energy; near the floor float32 rounding dominates the log.
  loud = mel > 1e-3 * mel.max()
  assert loud.sum() > 500
  np.testing.assert_allclose(ours[loud], reference[loud], atol=2e-3)
  assert np.abs(ours - reference).max() < 0.1


def _front_end_shapes(config: W2VBertConfig, num_samples: int):
  module = frontend.FeatureFrontEnd(config)
  audio = jax.ShapeDtypeStruct((2, num_samples), jnp.float32)

  def run(audio):
    variables = module.init(jax.random.key(0), audio)
    return module.apply(variables, audio)

  return jax.eval_shape(run, audio)


@pytest.mark.parametrize("num_samples", [960, 1919, 12345, 24000, 24959, 240000])
def test_frames_are_exactly_samples_over_960(num_samples):
  features, valid = _front_end_shapes(CONFIG, num_samples)
  assert features.shape == (2, num_samples // 960, CONFIG.d_model)
  assert valid.shape == (2, num_samples // 960)
  assert frontend.num_frames(num_samples, CONFIG) == num_samples // 960


def test_ten_seconds_give_250_frames():
  features, _ = _front_end_shapes(CONFIG, 10 * 24000)
  assert features.shape[1] == 250


def test_audio_shorter_than_a_frame_is_an_error():
  with pytest.raises(ValueError, match="shorter than one w2v-BERT frame"):
    _front_end_shapes(CONFIG, 959)


def test_frame_valid_marks_mostly_real_frames():
  mask = np.zeros((2, 960 * 3), np.float32)
  mask[0, :1440] = 1.0  # 1.5 frames of audio
  mask[1] = 1.0
  valid = np.asarray(frontend.frame_valid(jnp.asarray(mask), CONFIG))
  np.testing.assert_array_equal(valid, [[True, True, False], [True, True, True]])


@functools.cache
def _normalize(norm: str):
  config = size_config("w2v_bert", "tiny")
  config = type(config)(**{**config.__dict__, "feature_norm": norm})
  return jax.jit(lambda x, v: frontend.normalize(x, v, config))


def test_utterance_normalisation_uses_real_frames_only():
  rng = np.random.RandomState(0)
  x = (3.0 + 2.0 * rng.randn(2, 20, 80)).astype(np.float32)
  valid = np.ones((2, 20), bool)
  valid[1, 12:] = False
  x[1, 12:] = 1e4  # padding content must not reach the statistics
  out = np.asarray(_normalize("utterance")(x, valid))
  np.testing.assert_allclose(out[0].mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(out[0].std(0), 1.0, atol=1e-3)
  np.testing.assert_allclose(out[1, :12].mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(out[1, :12].std(0), 1.0, atol=1e-3)
  np.testing.assert_array_equal(out[1, 12:], 0.0)
  fixed = np.asarray(_normalize("fixed")(x, valid))
  np.testing.assert_allclose(fixed[0], (x[0] - CONFIG.feature_mean) / CONFIG.feature_std, rtol=1e-5)
