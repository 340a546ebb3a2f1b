"""An imported HuBERT as the semantic model: k-means job → tokenizer → the tokenizer bundle.

The `base_like` fixture (16 kHz, 200 Hz frames) stands in for a real HuBERT: the token_world's
24 kHz audio is resampled inside the program and its frames averaged 8 to 1 into 25 Hz tokens.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest
import soxr

import gin
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.data.token_bundle import bundle_token_spec, load_bundle
from musiclm_jax.jobs import semantic_kmeans as semantic_kmeans_job
from musiclm_jax.main import cli, gin_utils
from musiclm_jax.tokenizers import kmeans
from musiclm_jax.tokenizers.hubert import load_hubert, resample
from musiclm_jax.tokenizers.hubert import semantic as hubert_semantic
from musiclm_jax.tokenizers.w2v_bert.semantic import load_semantic_tokenizer

pytestmark = pytest.mark.xdist_group("token_world")

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "hubert", "base_like")
RATE = 24_000


@pytest.fixture(scope="module")
def hubert_world(token_world, tmp_path_factory):
  root = tmp_path_factory.mktemp("hubert_world")
  argv = ["import-weights", "--kind=hubert", f"--checkpoint_dir={FIXTURE}"]
  assert cli.main([*argv, f"--out_dir={root / 'hubert'}"]) == 0
  summary = semantic_kmeans_job.fit_semantic_kmeans(
    w2v_bert_dir=str(root / "hubert"),
    source=AudioSource("rendered_music/24khz", token_world.data_dir),
    output_dir=str(root / "kmeans"),
    config=kmeans.KMeansConfig(num_clusters=8, init_samples=512, num_epochs=1, seed=0),
    layer=2,
    crop_samples=RATE,
    batch_size=8,
    max_batches=2,
  )
  return token_world, root, summary


def _clips(seconds: float = 2.0) -> np.ndarray:
  t = np.arange(int(seconds * RATE)) / RATE
  return np.stack([0.4 * np.sin(2 * np.pi * f * t) for f in (220.0, 330.0, 440.0, 660.0)]).astype(
    np.float32
  )


def test_kmeans_fits_the_hubert_layer_and_the_tokenizer_loads(hubert_world):
  _, root, summary = hubert_world
  assert summary["dim"] == 16 and summary["num_clusters"] == 8
  tokenizer = load_semantic_tokenizer(str(root / "hubert"), str(root / "kmeans"))
  assert tokenizer.frames.pool == 8 and tokenizer.config.samples_per_frame == 960
  tokens = tokenizer.semantic_tokens(_clips())
  assert tokens.shape == (4, 2 * RATE // 960) and tokens.dtype == np.int32
  assert 0 <= tokens.min() and tokens.max() < 8
  assert len(np.unique(tokens)) > 1  # four different tones do not all land in one cluster


def test_embeddings_are_the_pooled_layer_of_the_resampled_audio(hubert_world):
  """Against the model run on host-resampled (soxr) audio: the in-program resampler and the
  pooling give the same frames up to the resamplers' difference."""
  _, root, _ = hubert_world
  encoder = load_hubert(str(root / "hubert"))
  frames = hubert_semantic.semantic_frames(encoder.config, RATE, 25)
  clips = _clips()
  got = np.asarray(hubert_semantic.embeddings(encoder.config, frames, 2, encoder.params, clips))
  host = np.stack([soxr.resample(c, RATE, 16_000, quality="HQ") for c in clips])
  pad = max(0, hubert_semantic.receptive_field(encoder.config) - 80)  # as `embeddings` pads
  states = np.asarray(encoder.hidden_states(np.pad(host, ((0, 0), (0, pad))), 2))
  expected = states[:, : got.shape[1] * 8].reshape(4, -1, 8, 16).mean(2)
  assert got.shape == expected.shape == (4, 50, 16)
  np.testing.assert_allclose(got[:, 1:-1], expected[:, 1:-1], atol=0.05)
  assert resample.output_length(2 * RATE, RATE, 16_000) == host.shape[1]


def test_the_bundle_takes_the_imported_semantic_model(hubert_world):
  world, root, _ = hubert_world
  config = dataclasses.replace(
    world.bundle, w2v_bert_dir=str(root / "hubert"), kmeans_dir=str(root / "kmeans")
  )
  bundle = load_bundle(config)
  streams = bundle.tokenize(_clips())
  assert streams["semantic"].shape == (4, 50)
  assert streams["acoustic"].shape[1] == 2 * 50  # the codec's 50 Hz frames, two per token
  assert bundle_token_spec(config, 4) == bundle.token_spec(4)


def test_sharded_tokens_equal_unsharded(hubert_world):
  _, root, _ = hubert_world
  tokenizer = load_semantic_tokenizer(str(root / "hubert"), str(root / "kmeans"))
  clips = np.concatenate([_clips()] * 2)  # 8 clips
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:8]), ("data",))
  sharded = jax.device_put(
    clips, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  )
  direct = tokenizer.tokens_fn(*tokenizer._arguments, sharded)
  np.testing.assert_array_equal(np.asarray(direct), tokenizer.semantic_tokens(clips))


def test_a_model_whose_rate_does_not_pool_to_the_token_rate_is_refused(hubert_world):
  _, root, _ = hubert_world
  config = load_hubert(str(root / "hubert")).config
  with pytest.raises(ValueError, match="cannot give 30 Hz semantic tokens"):
    hubert_semantic.semantic_frames(config, RATE, 30)
  with pytest.raises(ValueError, match="audio_mask must be all ones"):
    load_semantic_tokenizer(str(root / "hubert"), str(root / "kmeans")).semantic_tokens(
      _clips(), np.zeros((4, 2 * RATE))
    )


def test_a_bundle_of_imported_encodec_and_hubert_tokenizes(hubert_world):
  """EnCodec's 75 Hz frames are 3 per 25 Hz token: the streams align as SoundStream's 2 do."""
  world, root, _ = hubert_world
  encodec_fixture = os.path.join(os.path.dirname(FIXTURE), "..", "encodec", "causal_24khz")
  argv = ["import-weights", "--kind=encodec", f"--checkpoint_dir={encodec_fixture}"]
  assert cli.main([*argv, f"--out_dir={root / 'encodec'}"]) == 0
  config = dataclasses.replace(
    world.bundle,
    codec_dir=str(root / "encodec"),
    w2v_bert_dir=str(root / "hubert"),
    kmeans_dir=str(root / "kmeans"),
  )
  bundle = load_bundle(config)
  streams = bundle.tokenize(_clips())
  assert streams["semantic"].shape == (4, 50)
  assert streams["acoustic"].shape == (4, 150, 8)
  spec = bundle.token_spec(4)
  assert (spec.acoustic_rate_hz, spec.acoustic_frames_per_semantic) == (75, 3)
  assert bundle_token_spec(config, 4) == spec


def test_the_imported_bundle_gin_file_replaces_a_run_files_bundle(hubert_world):
  world, root, _ = hubert_world
  dirs = {
    "CODEC_DIR": root / "encodec",
    "SEMANTIC_DIR": root / "hubert",
    "KMEANS_DIR": root / "kmeans",
    "MULAN_DIR": os.path.join(world.tokenizers_dir, "mulan"),
    "MULAN_QUANTIZER_DIR": os.path.join(world.tokenizers_dir, "mulan_quantizer"),
  }
  files = ["gin/runs/stage_rendered.gin", "gin/tokenizers/imported.gin"]
  gin_utils.parse(files, [f"{k} = '{v}'" for k, v in dirs.items()])
  try:
    bundle, tokens = gin_utils.macro("BUNDLE"), gin_utils.macro("TOKENS")
  finally:
    gin.clear_config()
  assert bundle.codec_dir == str(root / "encodec") and bundle.w2v_bert_dir == str(root / "hubert")
  assert (tokens.acoustic_rate_hz, tokens.acoustic_levels, tokens.semantic_codebook_size) == (
    75,
    8,
    8,
  )
