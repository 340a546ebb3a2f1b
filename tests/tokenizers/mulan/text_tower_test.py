"""Tests of MuLan's text tower (BERT encoder, pooling, projection) on the tiny config."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers.mulan.text_tower import (
  BertEncoder,
  TextTower,
  TextTowerConfig,
  masked_mean,
)
from tests.size_configs import size_config

TINY = size_config("mulan", "tiny").text
LENGTHS = (10, 3, 7, 1)


def _batch(length: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """[4, length] random ids (pad id 0 after each row's real tokens) and the mask."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, TINY.vocab_size, (len(LENGTHS), length)).astype(np.int32)
  mask = (np.arange(length)[None] < np.asarray(LENGTHS)[:, None]).astype(np.int32)
  return np.where(mask == 1, ids, 0).astype(np.int32), mask


def _init(config: TextTowerConfig = TINY):
  ids, mask = _batch()
  return TextTower(config).init(jax.random.PRNGKey(0), ids, mask)


@pytest.fixture(scope="module")
def variables():
  return jax.jit(lambda: nn.unbox(_init()))()


@jax.jit
def _encode(variables, ids, mask):
  return TextTower(TINY).apply(variables, ids, mask, method=lambda m, i, k: m.encoder(i, k))


def test_embedding_is_unit_norm_of_embed_dim(variables):
  ids, mask = _batch()
  out = jax.jit(TextTower(TINY).apply)(variables, ids, mask)
  assert out.shape == (4, 128) and out.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-5)
  assert np.all(np.isfinite(out))


def test_outputs_at_real_tokens_ignore_padding(variables):
  ids, mask = _batch(10)
  longer_ids, longer_mask = np.pad(ids, ((0, 0), (0, 6))), np.pad(mask, ((0, 0), (0, 6)))
  longer_ids[:, 10:] = 7  # what padding positions hold must not matter either
  longer_ids[1, 3:] = 9
  short = np.asarray(_encode(variables, ids, mask))
  long = np.asarray(_encode(variables, longer_ids, longer_mask))
  real = mask.astype(bool)
  np.testing.assert_allclose(long[:, :10][real], short[real], atol=1e-5)
  np.testing.assert_allclose(masked_mean(long, longer_mask), masked_mean(short, mask), atol=1e-5)


def test_pooled_is_masked_mean_of_hidden_states(variables):
  ids, mask = _batch()
  hidden = np.asarray(_encode(variables, ids, mask))
  pooled = jax.jit(functools.partial(TextTower(TINY).apply, method=TextTower.pooled))(
    variables, ids, mask
  )
  for row, n in enumerate(LENGTHS):
    np.testing.assert_allclose(pooled[row], hidden[row, :n].mean(0), atol=1e-5)


def test_dropout_only_when_not_deterministic(variables):
  ids, mask = _batch()
  tower = TextTower(TINY)

  @jax.jit
  def both(key):
    train = tower.apply(variables, ids, mask, deterministic=False, rngs={"dropout": key})
    return train, tower.apply(variables, ids, mask)

  train, evaluation = both(jax.random.PRNGKey(1))
  again, _ = both(jax.random.PRNGKey(1))
  np.testing.assert_array_equal(train, again)
  assert np.max(np.abs(train - evaluation)) > 1e-3


def test_sharded_equals_single_device(variables):
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices for a 2x2x2 mesh (tests/conftest.py fakes them on CPU)")
  partitioner = Partitioner(MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2))
  tower = TextTower(TINY)
  ids, mask = _batch()
  expected = jax.jit(tower.apply)(variables, ids, mask)
  _, shardings = partitioner.abstract_and_shardings(_init)
  assert shardings["params"]["encoder"]["embeddings"]["word_embeddings"].spec == P("tensor", "fsdp")
  with partitioner.activate():
    sharded_vars = jax.device_put(variables, shardings)
    sharded_ids, sharded_mask = partitioner.shard_batch((ids, mask))
    got = jax.jit(tower.apply)(sharded_vars, sharded_ids, sharded_mask)
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_param_names_follow_bert_layout(variables):
  params = variables["params"]
  assert set(params) == {"encoder", "projection"}
  encoder = params["encoder"]
  assert set(encoder) == {"embeddings", "layer_0", "layer_1"}
  assert set(encoder["layer_0"]) == {
    "attention",
    "attention_layer_norm",
    "intermediate",
    "output",
    "output_layer_norm",
  }
  assert encoder["layer_0"]["attention"]["query"]["kernel"].shape == (32, 4, 8)
  assert encoder["layer_0"]["attention"]["query"]["bias"].shape == (4, 8)
  assert encoder["layer_0"]["attention"]["output"]["kernel"].shape == (4, 8, 32)


@pytest.mark.parametrize(
  "changes, message",
  [
    ({"num_heads": 5}, r"hidden_size=32 is not divisible by num_heads=5"),
    ({"hidden_act": "swish"}, r"hidden_act='swish' is not supported"),
    ({"max_length": 65}, r"max_length=65 must be in \[1, max_position_embeddings=64\]"),
  ],
)
def test_bad_configs_are_rejected(changes, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(TINY, **changes)


def test_presets():
  base = size_config("mulan", "base").text
  assert base.num_layers == 12 and base.hidden_size == 768
  paper = size_config("mulan", "paper").text
  assert (paper.vocab_size, paper.num_heads, paper.intermediate_size) == (30522, 12, 3072)
  assert paper.embed_dim == 128


@pytest.mark.parametrize(
  "ids, mask, message",
  [
    (np.zeros(4, np.int32), np.ones(4, np.int32), r"token_ids must be \[batch, length\]"),
    (np.zeros((2, 4), np.int32), np.ones((2, 5), np.int32), r"attention_mask shape"),
    (np.zeros((1, 65), np.int32), np.ones((1, 65), np.int32), r"65 tokens exceed"),
  ],
)
def test_bad_inputs_are_rejected(variables, ids, mask, message):
  with pytest.raises(ValueError, match=message):
    BertEncoder(TINY).apply({"params": variables["params"]["encoder"]}, ids, mask)
