"""The MuLan model wrapper: shapes, gin configs, sizes, loss and gradients, global-batch negatives
on a sharded mesh, and a learning smoke test."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax.models.contrastive import mcc
from musiclm_jax.models.mulan import MuLanModel
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.training.trainer import Trainer, TrainState
from tests.size_configs import size_config

SAMPLES = 12000  # 0.5 s crops keep the tiny tower cheap; the tower is length-agnostic
BATCH = 8
# The tiny text tower has dropout 0.1, so the sharded test also compares dropout masks.
MODEL = MuLanModel(size_config("mulan", "tiny"), crop_samples=SAMPLES)
TRAIN_RNG = jax.random.key(42)
RNG = jax.random.fold_in(TRAIN_RNG, 0)  # the train step's key at step 0


def _tones(batch: int, samples: int = SAMPLES) -> np.ndarray:
  """Example i: a tone (with two harmonics) of its own pitch, 3 semitones apart."""
  t = np.arange(samples) / 24000.0
  freqs = 220.0 * 2.0 ** (3 * np.arange(batch)[:, None] / 12)
  audio = sum(0.3 / h * np.sin(2 * np.pi * h * freqs * t) for h in (1, 2, 3))
  return audio.astype(np.float32)


def _captions(batch: int) -> tuple[np.ndarray, np.ndarray]:
  """Example i: [CLS] 10+i 40+i [SEP] then padding (distinct sequences)."""
  ids = np.zeros((batch, MODEL.max_length), np.int32)
  mask = np.zeros_like(ids)
  ids[:, 0], ids[:, 3] = 1, 2
  ids[:, 1], ids[:, 2] = 10 + np.arange(batch), 40 + np.arange(batch)
  mask[:, :4] = 1
  return ids, mask


def _batch() -> dict[str, np.ndarray]:
  audio = _tones(BATCH)
  audio_mask = np.ones_like(audio)
  audio_mask[1, 7000:] = 0.0  # a shorter clip
  audio[1, 7000:] = 5.0  # padding content, to be ignored
  ids, text_mask = _captions(BATCH)
  audio_mask[BATCH - 1] = 0.0  # an empty slot (e.g. the end of an eval set)
  return {"audio": audio, "audio_mask": audio_mask, "text_ids": ids, "text_mask": text_mask}


@functools.cache
def _params():
  return jax.device_get(nn.unbox(jax.jit(MODEL.get_initial_variables)(jax.random.key(0))["params"]))


@functools.cache
def _single_device_grads():
  fn = jax.jit(jax.value_and_grad(lambda p, b: MODEL.loss_fn(p, b, RNG), has_aux=True))
  return jax.device_get(fn(_params(), _batch()))


def test_zeros_batch_and_crop():
  batch = MODEL.zeros_batch(3)
  assert batch["audio"].shape == batch["audio_mask"].shape == (3, SAMPLES)
  assert batch["text_ids"].shape == batch["text_mask"].shape == (3, 64)
  assert batch["text_ids"].dtype == batch["text_mask"].dtype == jnp.int32
  assert MuLanModel.name == "mulan"
  assert MuLanModel(size_config("mulan", "tiny")).crop_samples == 48000  # one 2 s window
  with pytest.raises(ValueError, match="shorter than"):
    MuLanModel(size_config("mulan", "tiny"), crop_samples=100)


def test_paper_size_by_shapes_only():
  model = MuLanModel(size_config("mulan", "paper"))
  assert model.crop_samples == 10 * 24000
  shapes = nn.unbox(jax.eval_shape(model.get_initial_variables, jax.random.key(0))["params"])
  audio = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["audio_tower"]))
  assert audio == model.config.audio.num_params()
  assert 23.0e6 < audio < 24.5e6, audio  # ResNet-50 + a 2048 × 128 projection
  assert 125e6 < model.num_params() < 140e6, model.num_params()  # + BERT-base (≈109M)
  clips = jax.ShapeDtypeStruct((2, 25 * 24000), jnp.float32)
  assert jax.eval_shape(
    functools.partial(model.clip_embedding, windows_per_call=4), shapes, clips
  ).shape == (2, 128)


def test_loss_is_finite_with_gradients_for_every_parameter():
  (loss, metrics), grads = _single_device_grads()
  assert np.isfinite(loss)
  assert float(metrics["num_examples"]) == BATCH - 1
  np.testing.assert_allclose(loss, metrics["loss_sum"] / (BATCH - 1), rtol=1e-6)
  summary = MODEL.summarize_metrics(metrics)
  for key in ("loss", "audio_to_text_accuracy", "text_to_audio_accuracy", "matched_cosine"):
    assert np.isfinite(summary[key]), key
  np.testing.assert_allclose(summary["temperature"], 0.07, rtol=1e-5)
  assert 0.0 <= summary["audio_to_text_accuracy"] <= 1.0
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  for path, grad in flat:
    assert np.all(np.isfinite(grad)), path
    assert np.abs(grad).max() > 0.0, jax.tree_util.keystr(path)
  assert "log_scale" in grads  # the temperature is learned


@functools.cache
def _eval_loss():
  return jax.jit(lambda p, b: MODEL.loss_fn(p, b, None))


def test_padding_is_ignored_and_the_embeddings_match_the_loss_path():
  batch, params = _batch(), _params()
  loss, _ = _eval_loss()(params, batch)
  other = {**batch, "audio": np.where(batch["audio_mask"] > 0, batch["audio"], -3.0)}
  np.testing.assert_allclose(_eval_loss()(params, other)[0], loss, rtol=1e-5)
  audio = np.asarray(jax.jit(MODEL.embed_audio)(params, batch["audio"][:2] * [[1.0], [0.0]]))
  text = np.asarray(
    jax.jit(MODEL.embed_text)(params, batch["text_ids"][:2], batch["text_mask"][:2])
  )
  assert audio.shape == text.shape == (2, 128)
  np.testing.assert_allclose(np.linalg.norm(audio, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(text, axis=-1), 1.0, rtol=1e-5)


def test_sharded_train_step_equals_single_device():
  """Through the core trainer on a 2×2×2 mesh: SGD with rate 1 exposes the gradients.

  The train step folds the step into the state's rng, so state.rng = TRAIN_RNG at step 0 gives
  the dropout key RNG of the single-device reference.
  """
  partitioner = Partitioner(MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2))
  trainer = Trainer(MODEL, optax.sgd(1.0), partitioner, batch_size=BATCH)
  shardings = trainer.state_shardings
  kernel = shardings.params["audio_tower"]["stage_1_block_0"]["conv_in"]["conv"]["kernel"]
  assert not kernel.is_fully_replicated
  params = _params()
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=trainer.optimizer.init(params),
    rng=jax.random.key_data(TRAIN_RNG),
  )
  state = jax.device_put(state, shardings)  # built directly: skips compiling a sharded init
  batch = partitioner.shard_batch(_batch())
  assert len(batch["audio"].sharding.device_set) == 8  # 4 data shards of 2 examples each
  state, summary = trainer.train_step(state, batch)
  (expected_loss, expected_metrics), expected_grads = _single_device_grads()
  np.testing.assert_allclose(summary["loss"], expected_loss, rtol=1e-5)
  expected_summary = MODEL.summarize_metrics(expected_metrics)
  for key, value in expected_summary.items():
    np.testing.assert_allclose(summary[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
  grads = jax.tree.map(lambda old, new: old - new, params, jax.device_get(state.params))
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, atol=1e-5), grads, expected_grads)


def test_negatives_span_the_global_batch_not_each_shard():
  """InfoNCE over the whole batch differs from the mean of per-shard (per-device) InfoNCE."""
  batch, params = _batch(), _params()
  full, full_metrics = _eval_loss()(params, batch)
  shards = [{k: v[i : i + 2] for k, v in batch.items()} for i in range(0, BATCH, 2)]
  parts = [_eval_loss()(params, shard)[1] for shard in shards]
  per_shard = sum(float(p["loss_sum"]) for p in parts) / float(full_metrics["num_examples"])
  assert abs(per_shard - float(full)) > 0.1, (per_shard, float(full))
  # With 2 candidates per shard the per-shard loss is much easier: at most log 2 at chance.
  assert per_shard < float(full)


@pytest.mark.slow
def test_retrieval_is_learned_on_tone_caption_pairs():
  params = _params()
  optimizer = optax.adam(3e-3)
  audio = _tones(BATCH)
  ids, mask = _captions(BATCH)
  batch = {"audio": audio, "audio_mask": np.ones_like(audio), "text_ids": ids, "text_mask": mask}

  @jax.jit
  def step(params, opt_state, index):
    rng = jax.random.fold_in(jax.random.key(3), index)
    (_, metrics), grads = jax.value_and_grad(MODEL.loss_fn, has_aux=True)(params, batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, MODEL.summarize_metrics(metrics)

  opt_state = optimizer.init(params)
  losses = []
  for i in range(50):
    params, opt_state, summary = step(params, opt_state, i)
    losses.append(float(summary["loss"]))
  summary = MODEL.summarize_metrics(_eval_loss()(params, batch)[1])
  print("loss", np.round(losses[::5], 3), {k: float(v) for k, v in summary.items()})
  assert losses[-1] < 0.5 * losses[0]
  assert summary["audio_to_text_accuracy"] >= 0.75  # chance: 1 / 8
  assert summary["text_to_audio_accuracy"] >= 0.75
  audio_emb = jax.jit(MODEL.embed_audio)(params, audio)
  text_emb = jax.jit(MODEL.embed_text)(params, ids, mask)
  matched = np.asarray(mcc(text_emb, audio_emb))
  unmatched = np.asarray(mcc(text_emb, jnp.roll(audio_emb, 1, axis=0)))
  assert matched.mean() > unmatched.mean() + 0.2, (matched, unmatched)
