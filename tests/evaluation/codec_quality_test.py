"""Codec vs Opus quality: SI-SNR, the Opus round trip on a real rendered clip, the comparison table
and `musiclm-jax bench codec-quality` on a fitted spectral codec."""

from __future__ import annotations

import glob
import json
import shutil

import numpy as np
import pytest

from musiclm_jax.checkpoints import CheckpointConfig
from musiclm_jax.data import audio_io
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.data.builders import build
from musiclm_jax.data.render.corpus import render_corpus
from musiclm_jax.evaluation import codec_quality
from musiclm_jax.jobs import spectral_codec as spectral_codec_job
from musiclm_jax.main import cli
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers.soundstream.codec import SoundStreamCodec
from tests.size_configs import size_config

SR = 24_000
needs_opus = pytest.mark.skipif(
  shutil.which("opusenc") is None or shutil.which("opusdec") is None,
  reason="opusenc/opusdec absent: install the Debian package opus-tools (make system-deps)",
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> str:
  manual_dir = tmp_path_factory.mktemp("rendered")
  render_corpus(str(manual_dir), num_clips=12, clip_seconds=2.0, seed=0, progress=False)
  return str(manual_dir)


@pytest.fixture(scope="module")
def clip(rendered) -> np.ndarray:
  path = sorted(glob.glob(f"{rendered}/**/*.wav", recursive=True))[0]
  return audio_io.load_audio(path, SR)


def _sine_and_cosine(seconds: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  t = np.arange(int(SR * seconds)) / SR
  return np.sin(2 * np.pi * 100 * t), np.cos(2 * np.pi * 100 * t)  # whole periods: orthogonal


def test_si_snr_of_identity_is_very_high():
  s, _ = _sine_and_cosine()
  assert codec_quality.si_snr(s, s) > 80.0


def test_si_snr_of_a_known_error_and_its_scale_invariance():
  s, c = _sine_and_cosine()
  estimate = s + np.sqrt(0.1) * c  # error orthogonal to s with a tenth of its energy: 10 dB
  np.testing.assert_allclose(codec_quality.si_snr(estimate, s), 10.0, atol=1e-6)
  np.testing.assert_allclose(codec_quality.si_snr(-3.0 * estimate + 0.5, s), 10.0, atol=1e-6)


def test_si_snr_falls_with_added_noise_per_clip():
  s, _ = _sine_and_cosine()
  noise = np.random.default_rng(0).standard_normal(s.shape)
  batch = np.stack([s + 0.01 * noise, s + 0.1 * noise, s + 1.0 * noise])
  values = codec_quality.si_snr(batch, np.stack([s] * 3))
  assert values.shape == (3,) and values[0] > values[1] > values[2]
  with pytest.raises(ValueError, match="one shape"):
    codec_quality.si_snr(s, s[:-1])


def test_missing_opusenc_names_the_package(monkeypatch):
  monkeypatch.setenv("PATH", "")
  with pytest.raises(FileNotFoundError, match="opus-tools"):
    codec_quality.opus_round_trip(np.zeros(SR, np.float32), SR, 6.0)


@needs_opus
def test_opus_round_trip_is_aligned_and_better_at_higher_bitrates(clip):
  decoded = {kbps: codec_quality.opus_round_trip(clip, SR, kbps) for kbps in (6.0, 12.0, 128.0)}
  assert all(d.shape == clip.shape and d.dtype == np.float32 for d in decoded.values())
  snr = {kbps: float(codec_quality.si_snr(d, clip)) for kbps, d in decoded.items()}
  # A sample of misalignment would cost a high-bitrate round trip most of its SI-SNR.
  assert snr[128.0] > 20.0, snr
  assert snr[12.0] > snr[6.0], snr
  shifted = codec_quality.si_snr(np.roll(decoded[128.0], 1), clip)
  assert shifted < snr[128.0] - 3.0, (shifted, snr)


@needs_opus
def test_comparison_rows_of_a_random_codec(clip):
  codec = SoundStreamCodec.random_init(size_config("soundstream", "tiny"))
  clips = np.stack([clip[: SR // 2], clip[SR // 2 : SR]])
  rows = codec_quality.compare_with_opus(codec, clips)
  assert [(r["system"], r["levels"], r["kbps"]) for r in rows] == [
    ("soundstream", 1, 0.2),
    ("soundstream", 4, 0.8),
    ("soundstream", 6, 1.2),
    ("opus", None, 6.0),
    ("opus", None, 12.0),
    ("original", None, None),
  ]
  metrics = ("mel_distance", "si_snr_db", "chroma_cosine")
  assert all(r["num_clips"] == 2 and np.isfinite([r[k] for k in metrics]).all() for r in rows)
  assert rows[-1]["chroma_cosine"] == pytest.approx(1.0) and rows[-1]["mel_distance"] < 1e-6
  # An untrained codec is far worse than Opus at 12 kbps, notes included.
  assert rows[2]["mel_distance"] > rows[-2]["mel_distance"]
  assert rows[2]["chroma_cosine"] < rows[-2]["chroma_cosine"]


@needs_opus
@pytest.mark.slow
def test_bench_codec_quality_on_a_fitted_spectral_codec(rendered, tmp_path, capsys):
  # The quickstart's codec: fitted in seconds, where one SoundStream GAN step compiles for minutes.
  data_dir = str(tmp_path / "tfds")
  build.build_dataset("rendered_music", data_dir=data_dir, manual_dir=rendered)
  source = AudioSource("rendered_music/24khz", data_dir)
  model_dir = str(tmp_path / "codec")
  spectral_codec_job.fit_spectral_codec(
    config=size_config("spectral_codec", "tiny"),
    source=source,
    model_dir=model_dir,
    fit=spectral_codec_job.FitConfig(
      crop_samples=2 * SR, batch_size=4, kmeans_iters=2, kmeans_init_samples=1024
    ),
    eval_split=None,
    partitioner=Partitioner(MeshConfig(num_devices=1, ici_data=1)),
    checkpoint=CheckpointConfig(async_save=False, save_on_sigterm=False),
  )
  out = tmp_path / "quality.json"
  argv = ["bench", "codec-quality", f"--model_dir={model_dir}", f"--data_dir={data_dir}"]
  argv += ["--num_clips=1", "--seconds=1", f"--json={out}"]
  assert cli.main(argv) == 0
  rows = json.loads(out.read_text())["rows"]
  assert [r["system"] for r in rows] == ["spectral_codec"] * 3 + ["opus"] * 2 + ["original"]
  assert "| opus |" in capsys.readouterr().out
  # From the rendered corpus itself: the clips' MIDI gives note F1 (the original's is the ceiling).
  argv = ["bench", "codec-quality", f"--model_dir={model_dir}", f"--corpus_dir={rendered}"]
  argv += ["--split=train", "--num_clips=2", "--seconds=2", f"--json={out}"]
  assert cli.main(argv) == 0
  rows = json.loads(out.read_text())["rows"]
  assert all(0.0 <= r["note_f1"] <= 1.0 for r in rows)
  # The transcriber finds most of the renderer's notes in the original (0.83 here); a fitted codec
  # may score as high (a transcription error it happens to fix), so it is not bounded by it.
  assert rows[-1]["note_f1"] > 0.5, rows[-1]
