"""EnCodec imported from transformers checkpoints equals transformers' own outputs.

The fixtures (`tests/fixtures/encodec/<variant>/`) are small random EncodecModels that
transformers built and saved, with transformers' codes and audio on fixed inputs
(`make_reference.py`). Two variants cover both sides of every option the import supports:
causal / non-causal, reflect / zero padding, conv / identity shortcuts, one / two residual blocks
and one / two LSTM layers.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gin
from musiclm_jax.main import cli, gin_utils
from musiclm_jax.tokenizers.codec_api import load_codec
from musiclm_jax.tokenizers.encodec import EncodecCodec, hf_import, load_hf_encodec, model
from tests.hf_fixtures import copy_checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "encodec")
VARIANTS = ("causal_24khz", "noncausal_16khz")
CAUSAL = os.path.join(FIXTURES, VARIANTS[0])
AUDIO_ATOL = 2e-6  # the import matched transformers to 1.5e-7 (float32, both on CPU)


def _reference(directory: str) -> dict[str, np.ndarray]:
  with np.load(os.path.join(directory, "reference.npz")) as data:
    return dict(data)


@pytest.fixture(scope="module", params=VARIANTS)
def imported(request):
  directory = os.path.join(FIXTURES, request.param)
  config, variables = load_hf_encodec(directory)
  return directory, EncodecCodec(config, variables), _reference(directory)


def test_encoder_codes_and_audio_equal_transformers(imported):
  _, codec, ref = imported
  latents = model.encoder(codec.config, codec.variables["params"]["encoder"], ref["audio"])
  np.testing.assert_allclose(latents, ref["embeddings"], atol=1e-5)
  np.testing.assert_array_equal(codec.encode(ref["audio"]), ref["codes"])
  np.testing.assert_allclose(codec.decode(ref["codes"]), ref["decoded"], atol=AUDIO_ATOL)
  np.testing.assert_allclose(codec.decode(ref["codes"][..., :2]), ref["decoded_2"], atol=AUDIO_ATOL)
  # Shorter than a hop: every deep layer pads more than its input is long.
  np.testing.assert_array_equal(codec.encode(ref["short_audio"], 2), ref["short_codes"])


def test_bandwidth_keeps_the_levels_transformers_uses(imported):
  directory, _, ref = imported
  for key in (k for k in ref if k.startswith("codes_")):
    config, variables = load_hf_encodec(directory, bandwidth=float(key.split("_")[1]))
    assert config.num_levels == ref[key].shape[2]
    np.testing.assert_array_equal(EncodecCodec(config, variables).encode(ref["audio"]), ref[key])


def test_sharded_batch_encodes_like_unsharded(imported):
  _, codec, ref = imported
  audio = np.concatenate([ref["audio"]] * 4)  # 8 clips
  mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
  sharded = jax.device_put(audio, NamedSharding(mesh, PartitionSpec("data")))
  np.testing.assert_array_equal(codec.encode(sharded), codec.encode(audio))


def _copy_fixture(tmp_path, edit_tensors=None, edit_config=None) -> str:
  return copy_checkpoint(CAUSAL, tmp_path, edit_tensors, edit_config)


def test_legacy_weight_norm_names_import_the_same(tmp_path):
  """Checkpoints saved before torch's parametrizations (the hub's) name the pair weight_g/_v."""

  def legacy(tensors):
    renamed = {}
    for name, value in tensors.items():
      name = name.replace("parametrizations.weight.original0", "weight_g")
      renamed[name.replace("parametrizations.weight.original1", "weight_v")] = value
    return renamed

  _, expected = load_hf_encodec(CAUSAL)
  _, got = load_hf_encodec(_copy_fixture(tmp_path, legacy))
  jax.tree.map(np.testing.assert_array_equal, got, expected)


def _drop(name):
  return lambda t: {k: v for k, v in t.items() if k != name}


def _cut(name):
  return lambda t: {**t, name: t[name][..., :-1]}


@pytest.mark.parametrize(
  "edit, message",
  [
    (
      _cut("encoder.layers.3.conv.parametrizations.weight.original1"),
      r"model\.safetensors: tensor 'encoder\.layers\.3\.conv\.parametrizations\.weight\."
      r"original1' has shape \(4, 2, 3\), but config\.json implies \(4, 2, 4\)",
    ),
    (
      _drop("decoder.layers.1.lstm.bias_hh_l1"),
      r"model\.safetensors lacks tensor 'decoder\.layers\.1\.lstm\.bias_hh_l1' \(expected "
      r"shape \(128,\)\)",
    ),
    (
      lambda t: {**t, "encoder.layers.99.conv.bias": np.zeros(2, np.float32)},
      r"holds tensors this config does not use, e\.g\. \['encoder\.layers\.99\.conv\.bias'\]",
    ),
  ],
)
def test_wrong_missing_or_extra_tensors_are_named(tmp_path, edit, message):
  directory = _copy_fixture(tmp_path, edit)
  with pytest.raises(ValueError, match=message) as error:
    load_hf_encodec(directory)
  assert os.path.join(directory, "model.safetensors") in str(error.value)


def _import(tmp_path, directory, *flags) -> int:
  argv = ["import-weights", "--kind=encodec", f"--checkpoint_dir={directory}"]
  return cli.main([*argv, f"--out_dir={tmp_path / 'out'}", *flags])


def test_import_weights_writes_a_codec_that_load_codec_reads(tmp_path, capsys):
  assert _import(tmp_path, CAUSAL, "--bandwidth=1.5") == 0
  assert "4 of 8 levels" in capsys.readouterr().out
  codec = load_codec(str(tmp_path / "out"))
  ref = _reference(CAUSAL)
  assert isinstance(codec, EncodecCodec) and codec.frame_rate == 75
  np.testing.assert_array_equal(codec.encode(ref["audio"]), ref["codes_1.5"])
  assert _import(tmp_path, CAUSAL) == 2  # the out_dir now holds a checkpoint
  assert "is not empty" in capsys.readouterr().err


def _stereo_48khz(config):
  return {
    **config,
    "sampling_rate": 48_000,
    "audio_channels": 2,
    "normalize": True,
    "chunk_length_s": 1.0,
    "overlap": 0.01,
    "norm_type": "time_group_norm",
  }


def _truncate(tmp_path) -> str:
  directory = _copy_fixture(tmp_path)
  path = os.path.join(directory, "model.safetensors")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  return directory


@pytest.mark.parametrize(
  "make, message",
  [
    (
      lambda p: _copy_fixture(p, edit_config=lambda c: {**c, "model_type": "hubert"}),
      "model_type 'hubert' is not 'encodec'",
    ),
    (
      lambda p: _copy_fixture(p, edit_config=_stereo_48khz),
      "unsupported EnCodec config: audio_channels=2",
    ),
    (
      lambda p: _copy_fixture(p, edit_config=lambda c: {**c, "norm_type": "time_group_norm"}),
      "norm_type 'time_group_norm'",
    ),
    (_truncate, "model.safetensors is not a readable safetensors file"),
  ],
)
def test_bad_checkpoints_exit_2_with_one_line(tmp_path, capsys, make, message):
  assert _import(tmp_path, make(tmp_path)) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and len(err.splitlines()) == 1, err
  assert not os.path.exists(tmp_path / "out" / "checkpoints")


def test_the_24khz_gin_file_is_transformers_24khz_architecture():
  """`bench codec --gin_file=gin/models/encodec/24khz.gin` times the real model's shape.

  transformers' EncodecModel(EncodecConfig()) has 14,851,810 parameters; the import folds its
  4,993 weight-norm gains into the kernels and sums each LSTM layer's two biases (8 × 1,024)."""
  gin_utils.parse(["gin/models/encodec/24khz.gin"], [])
  try:
    config = gin_utils.macro("CODEC_CONFIG")
  finally:
    gin.clear_config()
  assert (config.hop_length, config.frame_rate, config.num_quantizers) == (320, 75, 32)
  shapes = hf_import.variable_shapes(config)["params"]
  sizes = jax.tree.leaves(jax.tree.map(math.prod, shapes, is_leaf=lambda x: isinstance(x, tuple)))
  assert sum(sizes) == 14_838_625
