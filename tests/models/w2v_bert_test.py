"""The w2v-BERT model wrapper: frame counts, sizes, loss and gradients, microbatches, sharding,
and a learning smoke test."""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax.models.w2v_bert import W2VBertModel
from musiclm_jax.partitioning import MeshConfig, Partitioner
from tests.size_configs import size_config

SAMPLES = 12000  # 0.5 s: 12 frames
# Dropout on, so that the sharded test also compares dropout masks.
MODEL = W2VBertModel(
  dataclasses.replace(size_config("w2v_bert", "tiny"), dropout_rate=0.1), SAMPLES
)
RNG = jax.random.key(42)
STEP = 10


def _batch(batch_size=4, seed=0):
  rng = np.random.RandomState(seed)
  audio = (0.1 * rng.randn(batch_size, SAMPLES)).astype(np.float32)
  mask = np.ones_like(audio)
  mask[1, 7000:] = 0.0  # a shorter clip
  mask[batch_size - 1] = 0.0  # an empty slot (e.g. the end of an eval set)
  audio[1, 7000:] = 5.0  # padding content, to be ignored
  return {"audio": audio, "audio_mask": mask}


@functools.cache
def _params():
  return jax.device_get(nn.unbox(jax.jit(MODEL.get_initial_variables)(jax.random.key(0))["params"]))


@functools.cache
def _single_device_grads():
  fn = jax.jit(jax.value_and_grad(lambda p, b: MODEL.loss_fn(p, b, RNG, None, STEP), has_aux=True))
  return jax.device_get(fn(_params(), _batch()))


def test_frames_and_zeros_batch():
  for samples in (960, 12000, 24959, 240000):
    assert MODEL.num_frames(samples) == samples // 960
  batch = MODEL.zeros_batch(3)
  assert batch["audio"].shape == batch["audio_mask"].shape == (3, SAMPLES)
  assert W2VBertModel.name == "w2v_bert"
  with pytest.raises(ValueError, match="shorter than one w2v-BERT frame"):
    W2VBertModel(size_config("w2v_bert", "tiny"), crop_samples=500)


@pytest.mark.parametrize("size, expected", [("base", 100e6), ("paper", 600e6)])
def test_config_sizes_and_ten_seconds_give_250_ids(size, expected):
  model = W2VBertModel(size_config("w2v_bert", size), crop_samples=10 * 24000)
  shapes = jax.eval_shape(model.get_initial_variables, jax.random.key(0))["params"]
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(shapes)))
  assert count == model.num_params()
  assert abs(count - expected) / expected < 0.05, count
  audio = jax.ShapeDtypeStruct((1, 10 * 24000), jnp.float32)
  embeddings = jax.eval_shape(model.embeddings, nn.unbox(shapes), audio)
  assert embeddings.shape == (1, 250, model.config.d_model)


def test_loss_is_finite_with_gradients_for_every_parameter():
  (loss, metrics), grads = _single_device_grads()
  assert np.isfinite(loss)
  summary = MODEL.summarize_metrics(metrics)
  for key in (
    "loss",
    "mlm_accuracy",
    "contrastive_loss",
    "mlm_loss",
    "diversity_loss",
    "codebook_perplexity",
    "contrastive_accuracy",
  ):
    assert np.isfinite(summary[key]), key
  assert float(metrics["num_examples"]) == 3.0
  np.testing.assert_allclose(loss, metrics["loss_sum"] / 3.0, rtol=1e-6)
  np.testing.assert_allclose(
    summary["loss"],
    summary["mlm_loss"]
    + summary["contrastive_loss"]
    + MODEL.config.diversity_weight * summary["diversity_loss"],
    rtol=1e-5,
  )
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  for path, grad in flat:
    assert np.all(np.isfinite(grad)), path
    assert np.abs(grad).max() > 0.0, jax.tree_util.keystr(path)


@functools.cache
def _eval_loss():
  return jax.jit(lambda p, b, n: MODEL.loss_fn(p, b, None, n))


def test_microbatch_losses_add_up_to_the_full_batch_and_eval_is_repeatable():
  batch = _batch()
  normalizer = MODEL.loss_normalizer(batch)
  assert float(normalizer) == 3.0
  full_loss, full_metrics = _eval_loss()(_params(), batch, normalizer)
  halves = [{k: v[i : i + 2] for k, v in batch.items()} for i in (0, 2)]
  parts = [_eval_loss()(_params(), half, normalizer) for half in halves]
  np.testing.assert_allclose(parts[0][0] + parts[1][0], full_loss, rtol=1e-5)
  for key, value in full_metrics.items():
    np.testing.assert_allclose(parts[0][1][key] + parts[1][1][key], value, rtol=1e-5, err_msg=key)
  again, _ = _eval_loss()(_params(), batch, normalizer)
  assert float(again) == float(full_loss)
  # The padding content of example 1 does not matter.
  other = {**batch, "audio": np.where(batch["audio_mask"] > 0, batch["audio"], -3.0)}
  np.testing.assert_allclose(_eval_loss()(_params(), other, normalizer)[0], full_loss, rtol=1e-5)


def test_sharded_loss_and_grads_equal_single_device():
  partitioner = Partitioner(MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2))
  _, shardings = partitioner.abstract_and_shardings(MODEL.get_initial_variables, jax.random.key(0))
  param_shardings = shardings["params"]
  batch_shardings = {k: partitioner.batch_sharding(2) for k in ("audio", "audio_mask")}
  fn = jax.jit(
    jax.value_and_grad(lambda p, b: MODEL.loss_fn(p, b, RNG, None, STEP), has_aux=True),
    in_shardings=(param_shardings, batch_shardings),
    out_shardings=partitioner.replicated,
  )
  params = jax.device_put(_params(), param_shardings)
  kernel = params["mlm"]["layer_0"]["ffn_in"]["wi"]["kernel"]
  assert not kernel.sharding.is_fully_replicated
  with partitioner.activate():
    (loss, metrics), grads = jax.device_get(fn(params, jax.device_put(_batch(), batch_shardings)))
  (expected_loss, expected_metrics), expected_grads = _single_device_grads()
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
  for key, value in expected_metrics.items():
    np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, atol=1e-5), grads, expected_grads)


def _note_clips(num_clips: int, samples: int) -> dict[str, np.ndarray]:
  """Clips of four 0.25 s notes (fundamental + 2 harmonics), different melodies per clip."""
  rng = np.random.RandomState(0)
  t = np.arange(samples // 4) / 24000.0
  clips = []
  for _ in range(num_clips):
    notes = [220.0 * 2 ** (rng.randint(0, 24) / 12) for _ in range(4)]
    clip = [sum(0.3 / h * np.sin(2 * np.pi * h * f * t) for h in (1, 2, 3)) for f in notes]
    clips.append(np.concatenate(clip))
  audio = np.stack(clips).astype(np.float32)
  return {"audio": audio, "audio_mask": np.ones_like(audio)}


@pytest.mark.slow
def test_mlm_loss_falls_and_accuracy_beats_chance():
  config = size_config("w2v_bert", "tiny")
  model = W2VBertModel(config, crop_samples=24000)
  params = nn.unbox(jax.jit(model.get_initial_variables)(jax.random.key(1))["params"])
  optimizer = optax.adam(3e-3)
  batch = _note_clips(4, 24000)

  @jax.jit
  def step(params, opt_state, index):
    rng = jax.random.fold_in(jax.random.key(2), index)
    grad_fn = jax.value_and_grad(model.loss_fn, has_aux=True)
    (_, metrics), grads = grad_fn(params, batch, rng, None, index)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, model.summarize_metrics(metrics)

  opt_state = optimizer.init(params)
  history = []
  for i in range(40):
    params, opt_state, summary = step(params, opt_state, i)
    history.append(jax.device_get(summary))
  mlm = np.array([h["mlm_loss"] for h in history])
  accuracy = np.array([h["mlm_accuracy"] for h in history])
  perplexity = np.array([h["codebook_perplexity"] for h in history])
  print("mlm", mlm.round(2), "acc", accuracy.round(2), "ppl", perplexity.round(1))
  assert np.all(np.isfinite(mlm))
  assert mlm[-5:].mean() < 0.75 * mlm[:3].mean()
  assert accuracy[-5:].mean() > 5.0 / config.codebook_size
  assert perplexity[-5:].mean() > 2.0  # the targets have not collapsed onto one code
