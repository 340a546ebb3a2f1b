"""The codec training job on rendered music: resume equals an uninterrupted run, TensorBoard audio,
loading the codec back from its checkpoint, clear errors."""

from __future__ import annotations

import dataclasses
import glob
import json

import jax
import numpy as np
import pytest

from musiclm_jax.checkpoints import CheckpointConfig
from musiclm_jax.data.audio_batches import AudioSource, audio_crop_dataset
from musiclm_jax.data.builders import build
from musiclm_jax.data.render.corpus import render_corpus
from musiclm_jax.evaluation import codec_quality
from musiclm_jax.jobs import codec as codec_train_job
from musiclm_jax.models.soundstream import CodecLossConfig, SoundStreamGAN
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers.codec_api import load_codec
from musiclm_jax.training import optimizers
from musiclm_jax.training.gan_trainer import make_gan_trainer
from tests.size_configs import size_config

CROP = 480 * 10
BATCH = 8
# The learning test's crops and clips: 0.5 s, 25 frames; its steps.
LEARNING_CROP = 12_000
LEARNING_STEPS = 150


pytestmark = pytest.mark.usefixtures("persistent_compilation_cache")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> AudioSource:
  manual_dir = tmp_path_factory.mktemp("rendered")
  render_corpus(str(manual_dir), num_clips=16, clip_seconds=2.0, seed=0, progress=False)
  data_dir = tmp_path_factory.mktemp("tfds")
  build.build_dataset("rendered_music", data_dir=str(data_dir), manual_dir=str(manual_dir))
  return AudioSource("rendered_music/24khz", str(data_dir))


def _train(source: AudioSource, model_dir, num_steps: int, **overrides) -> dict[str, float]:
  adam = optimizers.OptimizerConfig(
    learning_rate=2e-3, schedule="constant", warmup_steps=0, b1=0.5, b2=0.9, weight_decay=0.0
  )
  settings = dict(
    model=SoundStreamGAN(
      size_config("soundstream", "tiny"),
      CodecLossConfig(adversarial_start_step=2),
      crop_samples=CROP,
    ),
    source=source,
    model_dir=str(model_dir),
    num_steps=num_steps,
    batch_size=BATCH,
    generator_optimizer=adam,
    discriminator_optimizer=adam,
    checkpoint=CheckpointConfig(save_interval_steps=2, max_to_keep=None, save_on_sigterm=False),
    log_every_steps=2,
    eval_batches=1,
    num_audio_summaries=2,
    # One device: 8 fake CPU devices on 2 cores only add overhead here; the trainer's sharded
    # equivalence is tested in gan_trainer_test.py.
    partitioner=Partitioner(MeshConfig(num_devices=1, ici_data=1)),
  )
  settings.update(overrides)
  return codec_train_job.train_codec(**settings)


def _final_state(model_dir) -> dict:
  codec = load_codec(str(model_dir))
  return jax.device_get(codec.variables)


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(source, tmp_path):
  _train(source, tmp_path / "straight", 4)
  _train(source, tmp_path / "resumed", 2)
  _train(source, tmp_path / "resumed", 4)  # restores step 2: state, RNG and data position
  straight, resumed = _final_state(tmp_path / "straight"), _final_state(tmp_path / "resumed")
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), straight, resumed
  )
  metrics = json.loads((tmp_path / "resumed" / "final_metrics.json").read_text())
  assert metrics["step"] == 4 and metrics["eval/mel_distance_all_levels"] > 0


@pytest.mark.slow
def test_audio_summaries_and_scalars_reach_tensorboard(source, tmp_path):
  from tensorboard.backend.event_processing import event_accumulator

  _train(source, tmp_path / "run", 2)
  (events,) = glob.glob(str(tmp_path / "run" / "events.out.tfevents.*"))
  accumulator = event_accumulator.EventAccumulator(events, size_guidance={"tensors": 0})
  accumulator.Reload()
  tags = set(accumulator.Tags()["tensors"])
  assert {"audio/original", "audio/all_levels", "audio/1_level"} <= tags
  assert {"generator/mel_loss", "discriminator/hinge_loss", "eval/mel_distance_1_level"} <= tags
  (audio_event,) = accumulator.Tensors("audio/all_levels")
  assert audio_event.step == 2


def test_dataset_at_another_rate_is_refused_before_training(tmp_path):
  with pytest.raises(ValueError, match="16000 Hz audio; the codec expects 24000 Hz"):
    _train(AudioSource("rendered_music/16khz", str(tmp_path), 16_000), tmp_path / "run", 2)


def test_metadata_round_trips_the_architecture():
  config = size_config("soundstream", "tiny")
  metadata = json.loads(json.dumps(codec_train_job.codec_metadata(SoundStreamGAN(config))))
  assert codec_train_job.config_from_metadata(metadata["architecture"]) == config


@pytest.fixture(scope="module")
def few_clips(tmp_path_factory) -> AudioSource:
  """Rendered music cut to clips as long as a training crop: every batch is the whole train
  split (8 clips), so 150 CPU steps train the tiny codec far enough that its deeper levels matter."""
  manual_dir = tmp_path_factory.mktemp("few_rendered")
  render_corpus(
    str(manual_dir), num_clips=10, clip_seconds=LEARNING_CROP / 24_000, seed=3, progress=False
  )
  data_dir = tmp_path_factory.mktemp("few_tfds")
  build.build_dataset("rendered_music", data_dir=str(data_dir), manual_dir=str(manual_dir))
  return AudioSource("rendered_music/24khz", str(data_dir))


def _clips(source: AudioSource, split: str, batch_size: int) -> np.ndarray:
  dataset = audio_crop_dataset(
    source, split=split, crop_samples=LEARNING_CROP, batch_size=batch_size, seed=0, shuffle=False
  )
  return next(dataset.as_numpy_iterator())["audio"]


@pytest.mark.slow
def test_codec_learns_rendered_music(few_clips, tmp_path):
  """Bounded-step learning on real (rendered) music, through the training job (GAN off):
  the mel distance of reconstructions falls well below the initial codec's, decoding with 12
  levels beats decoding with 1 on the music it learned, and the quantizer refines the latent
  level by level.

  On held-out clips the codec's reconstructions improve too (asserted), but at this budget only
  in what a clip-wide spectrum and the note onsets give: deeper levels do not help there yet
  (printed). That needs the decoder to render pitched partials of unseen music, which takes far
  more steps than a CPU test has (issue 4; BENCHMARKS.md has the longer runs). Measured here
  after 150 steps: start 3.13; train clips 1.17 (1 level) → 0.99 (4) → 0.96 (12); held out 1.30 (1)
  and 1.32 (12); latent RMS error 0.57 → 0.41 → 0.33. (400 steps reach 0.89 → 0.71 → 0.70 and
  0.72 → 0.40 → 0.25 at 2.6× the time; the SoundStream codec is no longer the quickstart's.)"""
  config = size_config("soundstream", "tiny")
  config = dataclasses.replace(
    config, rvq=dataclasses.replace(config.rvq, num_levels=12, codebook_size=2)
  )
  model = SoundStreamGAN(
    config, CodecLossConfig(adversarial_start_step=10**6), crop_samples=LEARNING_CROP
  )
  adam = optimizers.OptimizerConfig(
    learning_rate=3e-3, schedule="constant", warmup_steps=0, b1=0.5, b2=0.9, weight_decay=0.0
  )
  single = Partitioner(MeshConfig(num_devices=1, ici_data=1))
  trainer = make_gan_trainer(model, single, BATCH, adam, adam)
  start = codec_train_job.evaluate_codec(trainer, trainer.init_state(0), few_clips, "eval", 1, 0)
  final = _train(
    few_clips,
    tmp_path / "run",
    LEARNING_STEPS,
    model=model,
    generator_optimizer=adam,
    log_every_steps=100,
    # One checkpoint at the end, not one every 2 steps (75 GAN checkpoints cost minutes of CI).
    checkpoint=CheckpointConfig(
      save_interval_steps=LEARNING_STEPS, max_to_keep=1, save_on_sigterm=False
    ),
  )
  start_distance = start["mel_distance_all_levels"]
  assert final["eval/mel_distance_all_levels"] < 0.6 * start_distance, (start, final)
  assert final["eval/mel_distance_all_levels"] < 0.5 * final["eval/mel_distance_silence"]

  codec = load_codec(str(tmp_path / "run"))
  learned = _clips(few_clips, "train", BATCH)
  distances = codec_quality.reconstruction_distances(codec, learned, (1, 4, 12))
  held_out = codec_quality.reconstruction_distances(codec, _clips(few_clips, "eval", 2), (1, 12))
  errors = codec_quality.latent_errors(codec, learned, (1, 4, 12))
  print(
    f"mel distance: start {start_distance:.3f}; after {LEARNING_STEPS} steps by levels {distances} on the"
  )
  print(f"train clips, {held_out} held out; latent RMS error by levels {errors}")
  assert distances[12] < 0.9 * distances[1] and distances[4] < distances[1], distances
  assert errors[12] < 0.7 * errors[1] and errors[4] < errors[1], errors
