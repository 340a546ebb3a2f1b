"""HuBERT / MERT imported from transformers checkpoints equals transformers' own hidden states.

The fixtures (`tests/fixtures/hubert/<variant>/`) are small random HubertModels that transformers
built and saved, with its `output_hidden_states` on fixed clips (`make_reference.py`). Together
they cover group / layer norm in the feature extractor, with and without conv biases, post-LN and
pre-LN ("stable") layers, even and odd positional kernels, erf and tanh GELU, 16 and 24 kHz.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gin
from musiclm_jax.main import cli, gin_utils
from musiclm_jax.tokenizers.hubert import (
  HubertEncoder,
  hf_import,
  load_hf_hubert,
  load_hubert,
  model,
)
from musiclm_jax.tokenizers.hubert import semantic as hubert_semantic
from tests.hf_fixtures import copy_checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "hubert")
VARIANTS = ("base_like", "stable_layer_norm")
BASE = os.path.join(FIXTURES, VARIANTS[0])
ATOL = 2e-5  # the import matched transformers to 3.6e-6 (float32, both on CPU)


def _reference(directory: str) -> dict[str, np.ndarray]:
  with np.load(os.path.join(directory, "reference.npz")) as data:
    return dict(data)


@pytest.fixture(scope="module", params=VARIANTS)
def imported(request):
  directory = os.path.join(FIXTURES, request.param)
  config, params = load_hf_hubert(directory)
  return HubertEncoder(config, params), _reference(directory)


def test_hidden_states_equal_transformers(imported):
  encoder, ref = imported
  states = model.hidden_states(encoder.config, encoder.params, ref["audio"])
  assert len(states) == len(ref["hidden_states"])
  for got, expected in zip(states, ref["hidden_states"]):
    np.testing.assert_allclose(got, expected, atol=ATOL)
  last = model.last_hidden_state(encoder.config, encoder.params, ref["audio"])
  np.testing.assert_allclose(last, ref["last_hidden_state"], atol=ATOL)
  assert encoder.config.num_frames(ref["audio"].shape[1]) == ref["last_hidden_state"].shape[1]


def test_one_layer_sharded_equals_unsharded_and_the_reference(imported):
  encoder, ref = imported
  audio = np.concatenate([ref["audio"]] * 4)  # 8 clips
  mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
  sharded = jax.device_put(audio, NamedSharding(mesh, PartitionSpec("data")))
  np.testing.assert_allclose(
    encoder.hidden_states(sharded, 1), encoder.hidden_states(audio, 1), atol=1e-6
  )
  np.testing.assert_allclose(
    encoder.hidden_states(audio, 1)[:2], ref["hidden_states"][1], atol=ATOL
  )
  with pytest.raises(ValueError, match="layer 9 is not in"):
    encoder.hidden_states(audio, 9)


def test_embed_at_resamples_to_the_model_rate(imported):
  encoder, ref = imported
  rate = encoder.config.sample_rate
  at_48k = np.stack(
    [np.interp(np.arange(0, len(c), rate / 48_000), np.arange(len(c)), c) for c in ref["audio"]]
  )
  got = np.asarray(encoder.embed_at(at_48k.astype(np.float32), 48_000, 1))
  assert got.shape == ref["hidden_states"][1].shape
  # Resampled twice (linear up, windowed sinc down): close to the original's states, not equal.
  cosine = np.sum(got * ref["hidden_states"][1], -1) / (
    np.linalg.norm(got, axis=-1) * np.linalg.norm(ref["hidden_states"][1], axis=-1)
  )
  assert cosine.mean() > 0.9, cosine.mean()


def _copy_fixture(tmp_path, edit_tensors=None, edit_config=None) -> str:
  return copy_checkpoint(BASE, tmp_path, edit_tensors, edit_config)


def test_prefixed_legacy_checkpoints_import_the_same(tmp_path):
  """HubertFor* checkpoints prefix `hubert.`; older ones name weight norm weight_g / weight_v."""

  def legacy(tensors):
    renamed = {}
    for name, value in tensors.items():
      name = name.replace("parametrizations.weight.original0", "weight_g")
      renamed["hubert." + name.replace("parametrizations.weight.original1", "weight_v")] = value
    renamed["lm_head.weight"] = np.zeros((4, 16), np.float32)  # a CTC head: ignored
    return renamed

  _, expected = load_hf_hubert(BASE)
  _, got = load_hf_hubert(_copy_fixture(tmp_path, legacy))
  jax.tree.map(np.testing.assert_array_equal, got, expected)


def test_mert_config_imports_at_its_sample_rate(tmp_path):
  mert = {"model_type": "mert_model", "sample_rate": 24_000, "feature_extractor_cqt": False}
  config, _ = load_hf_hubert(_copy_fixture(tmp_path, edit_config=lambda c: {**c, **mert}))
  assert (config.model_type, config.sample_rate, config.frame_rate) == ("mert_model", 24_000, 300)


@pytest.mark.parametrize(
  "edit, message",
  [
    (
      lambda t: {**t, "encoder.layers.1.attention.k_proj.weight": np.zeros((16, 15), np.float32)},
      r"model\.safetensors: tensor 'encoder\.layers\.1\.attention\.k_proj\.weight' has shape "
      r"\(16, 15\), but config\.json implies \(16, 16\)",
    ),
    (
      lambda t: {
        k: v for k, v in t.items() if k != "feature_extractor.conv_layers.0.layer_norm.bias"
      },
      r"lacks tensor 'feature_extractor\.conv_layers\.0\.layer_norm\.bias' \(expected shape \(8,\)\)",
    ),
    (
      lambda t: {**t, "encoder.layers.3.layer_norm.bias": np.zeros(16, np.float32)},
      r"holds tensors this config does not use, e\.g\. \['encoder\.layers\.3\.layer_norm\.bias'\]",
    ),
  ],
)
def test_wrong_missing_or_extra_tensors_are_named(tmp_path, edit, message):
  with pytest.raises(ValueError, match=message):
    load_hf_hubert(_copy_fixture(tmp_path, edit))


def _import(tmp_path, kind, directory, *flags) -> int:
  argv = ["import-weights", f"--kind={kind}", f"--checkpoint_dir={directory}"]
  return cli.main([*argv, f"--out_dir={tmp_path / 'out'}", *flags])


def test_import_weights_writes_an_encoder_that_load_hubert_reads(tmp_path, capsys):
  assert _import(tmp_path, "hubert", BASE) == 0
  assert "3 layers of 16" in capsys.readouterr().out
  encoder = load_hubert(str(tmp_path / "out"))
  ref = _reference(BASE)
  np.testing.assert_allclose(
    encoder.hidden_states(ref["audio"], 2), ref["hidden_states"][2], atol=ATOL
  )


@pytest.mark.parametrize(
  "kind, edit_config, message",
  [
    ("mert", None, "--kind=mert but its config.json says model_type 'hubert'"),
    ("hubert", lambda c: {**c, "model_type": "wav2vec2"}, "model_type 'wav2vec2' is not one of"),
    (
      "mert",
      lambda c: {**c, "model_type": "mert_model", "feature_extractor_cqt": True},
      "feature_extractor_cqt=true",
    ),
    ("hubert", lambda c: {**c, "hidden_act": "relu"}, "hidden_act 'relu'"),
    ("encodec", None, "model_type 'hubert' is not 'encodec'"),
  ],
)
def test_bad_checkpoints_exit_2_with_one_line(tmp_path, capsys, kind, edit_config, message):
  assert _import(tmp_path, kind, _copy_fixture(tmp_path, edit_config=edit_config)) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("name, rate, pool", [("base", 16_000, 2), ("mert_95m", 24_000, 3)])
def test_gin_files_are_the_published_architectures(name, rate, pool):
  """`bench semantic --gin_file=gin/models/hubert/*.gin` times the real models' shapes.

  transformers' HubertModel(HubertConfig()) has 94,371,712 parameters: ours plus its
  `masked_spec_embed` (768, pre-training only) and the positional weight-norm gains (128),
  which the import folds into the kernel."""
  gin_utils.parse([f"gin/models/hubert/{name}.gin"], [])
  try:
    config = gin_utils.macro("HUBERT_CONFIG")
  finally:
    gin.clear_config()
  assert (config.sample_rate, config.hop_length) == (rate, 320)
  assert hubert_semantic.semantic_frames(config, 24_000, 25).pool == pool
  params = hf_import.random_params(config)
  assert sum(x.size for x in jax.tree.leaves(params)) == 94_370_816
