"""w2v-BERT pre-training, the semantic k-means and the semantic tokenizer on rendered music.

The learning test is the point of semantic tokens: after a bounded CPU run, masked prediction is
well above chance, the contrastive loss has fallen, and the ids of one passage rendered with two
instruments agree far more than the ids of unrelated passages.
"""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest

from musiclm_jax.checkpoints import CheckpointConfig
from musiclm_jax.data import audio_io
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.data.builders import build
from musiclm_jax.data.render.corpus import CSV_NAME, render_corpus
from musiclm_jax.jobs import semantic_kmeans as semantic_kmeans_job
from musiclm_jax.jobs import w2v_bert as w2v_bert_train_job
from musiclm_jax.models.w2v_bert import W2VBertModel
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers import kmeans
from musiclm_jax.tokenizers.w2v_bert.load import load_w2v_bert
from musiclm_jax.tokenizers.w2v_bert.semantic import load_semantic_tokenizer
from musiclm_jax.training import optimizers
from tests.size_configs import size_config

CROP = 960 * 50  # 2 s: 50 frames
BATCH = 8
CLIP_SECONDS = 4.0
# One device: 8 fake CPU devices on 2 cores only add overhead; sharded == unsharded is tested in
# tests/models/w2v_bert_test.py and tests/tokenizers/kmeans_test.py.
SINGLE = MeshConfig(num_devices=1, ici_data=1)


pytestmark = pytest.mark.usefixtures("persistent_compilation_cache")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
  """48 clips × 4 s of rendered music in melody groups of two instruments, and its TFDS build."""
  manual_dir = tmp_path_factory.mktemp("rendered")
  render_corpus(
    str(manual_dir), num_clips=48, clip_seconds=CLIP_SECONDS, seed=1, progress=False, group_size=2
  )
  data_dir = tmp_path_factory.mktemp("tfds")
  build.build_dataset("rendered_music", data_dir=str(data_dir), manual_dir=str(manual_dir))
  return manual_dir, AudioSource("rendered_music/24khz", str(data_dir))


def _model() -> W2VBertModel:
  return W2VBertModel(size_config("w2v_bert", "tiny"), crop_samples=CROP)


def _train(source: AudioSource, model_dir, num_steps: int, **overrides) -> dict[str, float]:
  settings = dict(
    model=_model(),
    source=source,
    model_dir=str(model_dir),
    num_steps=num_steps,
    batch_size=BATCH,
    optimizer=optimizers.OptimizerConfig(
      learning_rate=2e-3, schedule="cosine", warmup_steps=20, decay_steps=max(num_steps, 21)
    ),
    checkpoint=CheckpointConfig(save_interval_steps=2, max_to_keep=None, save_on_sigterm=False),
    log_every_steps=2,
    eval_batches=2,
    partitioner=Partitioner(SINGLE),
  )
  settings.update(overrides)
  return w2v_bert_train_job.train_w2v_bert(**settings)


def _params(model_dir) -> dict:
  return load_w2v_bert(str(model_dir)).params


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(rendered, tmp_path):
  _, source = rendered
  _train(source, tmp_path / "straight", 4)
  _train(source, tmp_path / "resumed", 2)
  _train(source, tmp_path / "resumed", 4)  # restores step 2: state, RNG and data position
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
    _params(tmp_path / "straight"),
    _params(tmp_path / "resumed"),
  )
  metrics = json.loads((tmp_path / "resumed" / "final_metrics.json").read_text())
  assert metrics["step"] == 4 and 0.0 <= metrics["eval/mlm_accuracy"] <= 1.0


def test_dataset_at_another_rate_is_refused_before_training(tmp_path):
  with pytest.raises(ValueError, match="16000 Hz audio; w2v-BERT expects 24000 Hz"):
    _train(AudioSource("rendered_music/16khz", str(tmp_path), 16_000), tmp_path / "run", 2)


def _melody_pairs(manual_dir) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
  """(same-passage pairs with different instruments, unrelated pairs) of clip ids."""
  with open(manual_dir / CSV_NAME, newline="") as f:
    rows = list(csv.DictReader(f))
  groups: dict[str, list[str]] = {}
  for row in rows:
    groups.setdefault(row["melody_group"], []).append(row["ytid"])
  same = [tuple(ids[:2]) for ids in groups.values() if len(ids) >= 2]
  firsts = [ids[0] for ids in groups.values()]
  unrelated = list(zip(firsts, firsts[1:] + firsts[:1], strict=True))
  return same, unrelated


def _agreement(tokenizer, manual_dir, pairs) -> float:
  """Mean fraction of frames where the two clips of a pair get the same semantic id."""

  def tokens(ytid):
    audio = audio_io.load_audio(str(manual_dir / "audio" / f"{ytid}.wav"), sample_rate=24_000)
    return tokenizer.semantic_tokens(audio[None, :])[0]

  return float(np.mean([np.mean(tokens(a) == tokens(b)) for a, b in pairs]))


@pytest.mark.slow
def test_semantic_model_learns_and_its_tokens_follow_the_music(rendered, tmp_path):
  manual_dir, source = rendered
  model = _model()
  trainer = w2v_bert_train_job._make_trainer(
    model, Partitioner(SINGLE), BATCH, optimizers.OptimizerConfig()
  )
  start = w2v_bert_train_job.evaluate_w2v_bert(
    trainer, trainer.init_state(0).params, source, "eval", 2, 0
  )
  # One checkpoint at the end: the default of every 2 steps writes 500 of them (minutes of CI).
  final = _train(
    source,
    tmp_path / "w2v",
    1000,
    log_every_steps=100,
    checkpoint=CheckpointConfig(save_interval_steps=1000, max_to_keep=1, save_on_sigterm=False),
  )
  chance = 1.0 / model.config.codebook_size
  print("start", {k: round(v, 4) for k, v in start.items()})
  print("final", {k: round(v, 4) for k, v in final.items() if k.startswith("eval/")})
  assert final["eval/mlm_accuracy"] > 3 * chance, final
  # Chance against the codes actually in use (a collapsed codebook is easy to predict).
  assert final["eval/mlm_accuracy"] > 3 / final["eval/codebook_perplexity"], final
  assert final["eval/contrastive_loss"] < 0.8 * start["contrastive_loss"], (start, final)

  kmeans_dir = tmp_path / "kmeans"
  semantic_kmeans_job.fit_semantic_kmeans(
    w2v_bert_dir=str(tmp_path / "w2v"),
    source=source,
    output_dir=str(kmeans_dir),
    config=kmeans.KMeansConfig(num_clusters=16, init_samples=4096, num_epochs=2, seed=0),
    crop_samples=CROP,
    batch_size=BATCH,
    max_batches=8,
    partitioner=Partitioner(SINGLE),
  )
  tokenizer = load_semantic_tokenizer(str(tmp_path / "w2v"), str(kmeans_dir))
  same, unrelated = _melody_pairs(manual_dir)
  same_agreement = _agreement(tokenizer, manual_dir, same)
  unrelated_agreement = _agreement(tokenizer, manual_dir, unrelated)
  print(
    f"semantic id agreement: same passage {same_agreement:.3f}, unrelated {unrelated_agreement:.3f}"
  )
  assert same_agreement > 1.5 * unrelated_agreement
