"""Imports a transformers `HubertModel` checkpoint directory (HuBERT, or MERT, which saves the
same layout) as our HuBERT params, without torch.

The directory holds `config.json` (`model_type` 'hubert' or MERT's 'mert_model') and
`model.safetensors`. The sample rate is MERT's `sample_rate` field in config.json, otherwise the
`sampling_rate` of `preprocessor_config.json` (as the hub's HuBERT directories ship it), otherwise
HuBERT's 16 kHz. Tensor names may carry the `hubert.` prefix of HubertFor* checkpoints; heads and
`masked_spec_embed` (used only in pre-training) are ignored. torch Linear weights [out, in] become
kernels [in, out]; Conv1d weights [out, in, width] become [width, in, out]; the positional
convolution's weight norm (over the width axis: g [1, 1, width]) is folded in.

Refused with the reason: MERT's CQT front end (`feature_extractor_cqt`), a BatchNorm positional
convolution (`conv_pos_batch_norm`), adapters, activations other than GELU.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from musiclm_jax.tokenizers import hf_checkpoint
from musiclm_jax.tokenizers.hubert.config import ACTIVATIONS, HubertEncoderConfig

CONFIG_FILE = hf_checkpoint.CONFIG_FILE
WEIGHTS_FILE = hf_checkpoint.WEIGHTS_FILE
PREPROCESSOR_FILE = "preprocessor_config.json"
MODEL_TYPES = ("hubert", "mert_model")
_PREFIXES = ("hubert.",)
_IGNORED = ("masked_spec_embed",)
_HEADS = ("lm_head.", "classifier.", "projector.", "final_proj.", "label_embs_concat")
_POSITIONAL = "encoder.pos_conv_embed.conv"


# --- config -----------------------------------------------------------------------------------


def _sample_rate(hf: Mapping[str, Any], directory: str) -> int:
  if "sample_rate" in hf:  # MERT
    return int(hf["sample_rate"])
  preprocessor = os.path.join(directory, PREPROCESSOR_FILE)
  if os.path.isfile(preprocessor):
    return int(hf_checkpoint.read_json(preprocessor).get("sampling_rate", 16_000))
  return 16_000


def _refuse_unsupported(hf: Mapping[str, Any], path: str) -> None:
  checks = (
    (
      hf.get("model_type") in MODEL_TYPES,
      f"model_type {hf.get('model_type')!r} is not one of {list(MODEL_TYPES)}",
    ),
    (
      not hf.get("feature_extractor_cqt", False),
      "feature_extractor_cqt=true (MERT's CQT front end)",
    ),
    (not hf.get("conv_pos_batch_norm", False), "conv_pos_batch_norm=true"),
    (hf.get("adapter_attn_dim") is None, "adapter_attn_dim (attention adapters)"),
    (
      hf.get("feat_extract_activation", "gelu") == "gelu",
      f"feat_extract_activation {hf.get('feat_extract_activation')!r}",
    ),
    (hf.get("hidden_act", "gelu") in ACTIVATIONS, f"hidden_act {hf.get('hidden_act')!r}"),
  )
  for ok, what in checks:
    if not ok:
      raise ValueError(f"{path}: unsupported HuBERT config: {what}.")


def config_from_hf(directory: str) -> HubertEncoderConfig:
  """Our config of the `config.json` in `directory` (HuBERT or MERT)."""
  path = os.path.join(directory, CONFIG_FILE)
  hf = hf_checkpoint.read_json(path)
  _refuse_unsupported(hf, path)
  try:
    return HubertEncoderConfig(
      sample_rate=_sample_rate(hf, directory),
      conv_dim=tuple(int(c) for c in hf.get("conv_dim", (512,) * 7)),
      conv_stride=tuple(int(s) for s in hf.get("conv_stride", (5, 2, 2, 2, 2, 2, 2))),
      conv_kernel=tuple(int(k) for k in hf.get("conv_kernel", (10, 3, 3, 3, 3, 2, 2))),
      conv_bias=bool(hf.get("conv_bias", False)),
      feat_extract_norm=str(hf.get("feat_extract_norm", "group")),
      feat_proj_layer_norm=bool(hf.get("feat_proj_layer_norm", True)),
      hidden_size=int(hf.get("hidden_size", 768)),
      num_layers=int(hf.get("num_hidden_layers", 12)),
      num_heads=int(hf.get("num_attention_heads", 12)),
      intermediate_size=int(hf.get("intermediate_size", 3072)),
      hidden_act=str(hf.get("hidden_act", "gelu")),
      layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
      num_conv_pos_embeddings=int(hf.get("num_conv_pos_embeddings", 128)),
      num_conv_pos_embedding_groups=int(hf.get("num_conv_pos_embedding_groups", 16)),
      do_stable_layer_norm=bool(hf.get("do_stable_layer_norm", False)),
      model_type=str(hf["model_type"]),
    )
  except (ValueError, TypeError) as e:
    raise ValueError(f"{path}: {e}") from e


# --- tensors ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """One checkpoint tensor: HF name, torch shape, our path, and how it converts."""

  name: str
  shape: tuple[int, ...]
  path: tuple[str, ...]
  kind: str = "copy"  # 'copy', 'linear' ([out, in] -> [in, out]), 'conv' ([o, i, w] -> [w, i, o])


def _linear(hf: str, path: tuple[str, ...], out: int, inp: int) -> list[_Tensor]:
  return [
    _Tensor(f"{hf}.weight", (out, inp), path + ("kernel",), "linear"),
    _Tensor(f"{hf}.bias", (out,), path + ("bias",)),
  ]


def _norm(hf: str, path: tuple[str, ...], dim: int) -> list[_Tensor]:
  return [
    _Tensor(f"{hf}.weight", (dim,), path + ("scale",)),
    _Tensor(f"{hf}.bias", (dim,), path + ("bias",)),
  ]


def _feature_extractor(config: HubertEncoderConfig) -> Iterator[_Tensor]:
  inputs = 1
  for i, (dim, kernel) in enumerate(zip(config.conv_dim, config.conv_kernel)):
    hf, path = f"feature_extractor.conv_layers.{i}", ("feature_extractor",)
    yield _Tensor(
      f"{hf}.conv.weight", (dim, inputs, kernel), path + (f"conv_{i}", "kernel"), "conv"
    )
    if config.conv_bias:
      yield _Tensor(f"{hf}.conv.bias", (dim,), path + (f"conv_{i}", "bias"))
    if config.feat_extract_norm == "layer" or i == 0:
      yield from _norm(f"{hf}.layer_norm", path + (f"norm_{i}",), dim)
    inputs = dim


def _layer(config: HubertEncoderConfig, i: int) -> Iterator[_Tensor]:
  hidden, hf, path = config.hidden_size, f"encoder.layers.{i}", (f"layer_{i}",)
  for proj, ours in (
    ("q_proj", "query"),
    ("k_proj", "key"),
    ("v_proj", "value"),
    ("out_proj", "output"),
  ):
    yield from _linear(f"{hf}.attention.{proj}", path + (ours,), hidden, hidden)
  yield from _norm(f"{hf}.layer_norm", path + ("attention_norm",), hidden)
  ff = f"{hf}.feed_forward"
  yield from _linear(
    f"{ff}.intermediate_dense", path + ("intermediate",), config.intermediate_size, hidden
  )
  yield from _linear(
    f"{ff}.output_dense", path + ("output_dense",), hidden, config.intermediate_size
  )
  yield from _norm(f"{hf}.final_layer_norm", path + ("final_norm",), hidden)


def expected_tensors(config: HubertEncoderConfig) -> list[_Tensor]:
  """Every tensor a checkpoint of `config` holds, but the positional weight (`_positional`)."""
  hidden, conv_out = config.hidden_size, config.conv_dim[-1]
  tensors = list(_feature_extractor(config))
  if config.feat_proj_layer_norm:
    tensors += _norm(
      "feature_projection.layer_norm", ("feature_projection", "layer_norm"), conv_out
    )
  tensors += _linear(
    "feature_projection.projection", ("feature_projection", "dense"), hidden, conv_out
  )
  tensors.append(_Tensor("encoder.pos_conv_embed.conv.bias", (hidden,), ("positional", "bias")))
  tensors += _norm("encoder.layer_norm", ("encoder_norm",), hidden)
  for i in range(config.num_layers):
    tensors += _layer(config, i)
  return tensors


def expected_shapes(
  config: HubertEncoderConfig, tensors: Mapping[str, np.ndarray]
) -> dict[str, tuple[int, ...]]:
  """Name -> shape of every tensor a checkpoint of `config` must hold."""
  shapes = {t.name: t.shape for t in expected_tensors(config)}
  width, hidden = config.num_conv_pos_embeddings, config.hidden_size
  names = hf_checkpoint.weight_names(_POSITIONAL, tensors)
  if len(names) == 2:
    shapes[names[0]] = (1, 1, width)
  shapes[names[-1]] = (hidden, hidden // config.num_conv_pos_embedding_groups, width)
  return shapes


def read_tensors(path: str) -> dict[str, np.ndarray]:
  """A checkpoint's tensors by unprefixed name, heads and pre-training-only tensors dropped."""
  tensors = {}
  for name, value in hf_checkpoint.read_safetensors(path).items():
    for prefix in _PREFIXES:
      name = name.removeprefix(prefix)
    if name.startswith(_HEADS) or name in _IGNORED:
      continue
    tensors[name] = value
  return tensors


def convert(config: HubertEncoderConfig, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Checked HF tensors -> our params (numpy float32)."""
  params: dict[str, Any] = {}
  for t in expected_tensors(config):
    value = tensors[t.name]
    if t.kind == "linear":
      value = value.T
    elif t.kind == "conv":
      value = value.transpose(2, 1, 0)
    hf_checkpoint.set_path(params, t.path, np.ascontiguousarray(value, np.float32))
  # Weight norm over the width axis (dim=2): one gain per kernel tap.
  weight = hf_checkpoint.folded_weight(_POSITIONAL, tensors, norm_axes=(0, 1))
  hf_checkpoint.set_path(
    params, ("positional", "kernel"), np.ascontiguousarray(weight.transpose(2, 1, 0), np.float32)
  )
  return params


def random_params(config: HubertEncoderConfig, seed: int = 0) -> dict[str, Any]:
  """Random weights of `config`'s shape in our layout (benchmarks: speed does not depend on
  values). Norm scales are ones, biases zeros, kernels fan-in scaled normals."""
  rng = np.random.default_rng(seed)
  params: dict[str, Any] = {}
  tensors = expected_tensors(config)
  width = config.num_conv_pos_embeddings
  groups = config.num_conv_pos_embedding_groups
  positional = (width, config.hidden_size // groups, config.hidden_size)
  for t in tensors + [_Tensor("positional", positional[::-1], ("positional", "kernel"), "conv")]:
    shape = (
      t.shape[::-1] if t.kind == "conv" else (t.shape[::-1] if t.kind == "linear" else t.shape)
    )
    if t.path[-1] == "scale":
      value = np.ones(shape, np.float32)
    elif len(shape) == 1:
      value = np.zeros(shape, np.float32)
    else:
      value = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)
    hf_checkpoint.set_path(params, t.path, value)
  return params


def load_hf_hubert(directory: str | os.PathLike[str]) -> tuple[HubertEncoderConfig, dict[str, Any]]:
  """Imports a transformers HuBERT (or MERT) checkpoint directory.

  Returns:
    (config, params) for `model.hidden_states`.
  Raises:
    FileNotFoundError / ValueError naming the file: missing files, an unsupported config, a
    missing, misshapen or unexplained tensor.
  """
  directory = os.fspath(directory)
  config = config_from_hf(directory)
  weights = os.path.join(directory, WEIGHTS_FILE)
  tensors = read_tensors(weights)
  hf_checkpoint.check_tensors(
    expected_shapes(config, tensors),
    tensors,
    weights,
    extra_hint=f"do num_hidden_layers and conv_dim in {CONFIG_FILE} match it?",
  )
  return config, convert(config, tensors)
