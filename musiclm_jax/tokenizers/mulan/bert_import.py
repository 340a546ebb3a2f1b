"""Imports a pretrained Hugging Face BERT checkpoint directory into `TextTower` params, no torch.

A checkpoint directory holds `config.json` (a BertModel config, `model_type: "bert"`),
`model.safetensors` (read with `safetensors.numpy`) and `tokenizer.json` (see
`text_tokenizer.TextTokenizer.from_file`). Tensor names may carry the `bert.` prefix of
BertFor* checkpoints; pooler and pre-training-head tensors are ignored. HF Linear weights are
[out, in]; Flax kernels are [in, out], with the attention's head axis split out
([hidden, heads, head_dim] in, [heads, head_dim, hidden] out).

The MuLan projection (pooled hidden → embed_dim) is not part of BERT: `load_hf_bert` initialises
it freshly from `seed`, so two loads with the same seed give identical params.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from musiclm_jax import axes
from musiclm_jax.tokenizers import hf_checkpoint
from musiclm_jax.tokenizers.mulan.text_tower import (
  ACTIVATIONS,
  BiasedDense,
  TextTower,
  TextTowerConfig,
)

PyTree = Any
CONFIG_FILE = hf_checkpoint.CONFIG_FILE
WEIGHTS_FILE = hf_checkpoint.WEIGHTS_FILE
_IGNORED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")
_RENAMES = (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias"))


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """One checkpoint tensor: its HF name and shape, where it goes, whether it is a Linear weight."""

  name: str
  shape: tuple[int, ...]
  path: tuple[str, ...]
  linear: bool = False


def _layer_norm(hf: str, flax: tuple[str, ...], hidden: int) -> list[_Tensor]:
  return [
    _Tensor(f"{hf}.weight", (hidden,), flax + ("scale",)),
    _Tensor(f"{hf}.bias", (hidden,), flax + ("bias",)),
  ]


def _linear(hf: str, flax: tuple[str, ...], out: int, inp: int) -> list[_Tensor]:
  return [
    _Tensor(f"{hf}.weight", (out, inp), flax + ("kernel",), linear=True),
    _Tensor(f"{hf}.bias", (out,), flax + ("bias",)),
  ]


def _layer_tensors(config: TextTowerConfig, i: int) -> list[_Tensor]:
  hidden, inter = config.hidden_size, config.intermediate_size
  hf, flax = f"encoder.layer.{i}", ("encoder", f"layer_{i}")
  tensors = []
  for proj in ("query", "key", "value"):
    tensors += _linear(f"{hf}.attention.self.{proj}", flax + ("attention", proj), hidden, hidden)
  tensors += _linear(f"{hf}.attention.output.dense", flax + ("attention", "output"), hidden, hidden)
  tensors += _layer_norm(
    f"{hf}.attention.output.LayerNorm", flax + ("attention_layer_norm",), hidden
  )
  tensors += _linear(f"{hf}.intermediate.dense", flax + ("intermediate",), inter, hidden)
  tensors += _linear(f"{hf}.output.dense", flax + ("output",), hidden, inter)
  tensors += _layer_norm(f"{hf}.output.LayerNorm", flax + ("output_layer_norm",), hidden)
  return tensors


def expected_tensors(config: TextTowerConfig) -> list[_Tensor]:
  """Every BERT tensor a checkpoint of `config`'s shape must hold (HF names, unprefixed)."""
  hidden, emb = config.hidden_size, ("encoder", "embeddings")
  tensors = [
    _Tensor(
      "embeddings.word_embeddings.weight", (config.vocab_size, hidden), emb + ("word_embeddings",)
    ),
    _Tensor(
      "embeddings.position_embeddings.weight",
      (config.max_position_embeddings, hidden),
      emb + ("position_embeddings",),
    ),
    _Tensor(
      "embeddings.token_type_embeddings.weight",
      (config.type_vocab_size, hidden),
      emb + ("token_type_embeddings",),
    ),
  ]
  tensors += _layer_norm("embeddings.LayerNorm", emb + ("layer_norm",), hidden)
  for i in range(config.num_layers):
    tensors += _layer_tensors(config, i)
  return tensors


# --- config.json ------------------------------------------------------------------------------


def config_from_hf(path: str, *, embed_dim: int = 128, max_length: int = 64) -> TextTowerConfig:
  """A `TextTowerConfig` from a Hugging Face BertModel `config.json` at `path`."""
  hf = hf_checkpoint.read_json(path)
  if hf.get("model_type") != "bert":
    raise ValueError(
      f"{path}: model_type {hf.get('model_type')!r} is not supported; only BERT checkpoints "
      "(model_type 'bert') can be imported as the MuLan text tower."
    )
  act = hf.get("hidden_act", "gelu")
  if act not in ACTIVATIONS:
    raise ValueError(
      f"{path}: hidden_act {act!r} is not supported; use one of {sorted(ACTIVATIONS)}."
    )
  position = hf.get("position_embedding_type", "absolute")
  if position != "absolute":
    raise ValueError(
      f"{path}: position_embedding_type {position!r} is not supported (absolute only)."
    )
  required = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
  )
  missing = [k for k in required if k not in hf]
  if missing:
    raise ValueError(f"{path} lacks {missing}, which a BERT config must give.")
  try:
    return TextTowerConfig(
      vocab_size=int(hf["vocab_size"]),
      hidden_size=int(hf["hidden_size"]),
      num_layers=int(hf["num_hidden_layers"]),
      num_heads=int(hf["num_attention_heads"]),
      intermediate_size=int(hf["intermediate_size"]),
      max_position_embeddings=int(hf.get("max_position_embeddings", 512)),
      type_vocab_size=int(hf.get("type_vocab_size", 2)),
      layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
      hidden_act=act,
      dropout_rate=float(hf.get("hidden_dropout_prob", 0.1)),
      embed_dim=embed_dim,
      max_length=max_length,
    )
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e


# --- model.safetensors ------------------------------------------------------------------------


def read_tensors(path: str) -> dict[str, np.ndarray]:
  """The BERT tensors of a safetensors file, keyed by unprefixed HF names (heads dropped)."""
  tensors = {}
  for name, value in hf_checkpoint.read_safetensors(path).items():
    name = name.removeprefix("bert.")
    if name.startswith(_IGNORED_PREFIXES):
      continue
    for old, new in _RENAMES:
      name = name.replace(old, new)
    tensors[name] = value
  return tensors


def check_compatible(
  config: TextTowerConfig, tensors: Mapping[str, np.ndarray], directory: str
) -> None:
  """Raises ValueError unless `tensors` are exactly the BERT tensors of `config`'s shape.

  Args:
    config: the text tower the tensors must fill.
    tensors: checkpoint tensors by unprefixed HF name (`read_tensors`).
    directory: the checkpoint directory, named in the error.
  """
  hf_checkpoint.check_tensors(
    {t.name: t.shape for t in expected_tensors(config)},
    tensors,
    os.path.join(directory, WEIGHTS_FILE),
    extra_hint=f"is num_hidden_layers in {CONFIG_FILE} right?",
  )


# --- conversion -------------------------------------------------------------------------------


def convert(config: TextTowerConfig, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Checked HF tensors → the `encoder` subtree of TextTower params (Flax layouts, numpy)."""
  abstract = jax.eval_shape(
    lambda: nn.unbox(
      TextTower(config).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), jnp.int32)
      )
    )["params"]
  )
  params: dict[str, Any] = {}
  dtype = config.weight_dtype
  for t in expected_tensors(config):
    value = tensors[t.name].T if t.linear else tensors[t.name]
    target = abstract
    for key in t.path:
      target = target[key]
    hf_checkpoint.set_path(
      params, t.path, np.ascontiguousarray(value.reshape(target.shape)).astype(dtype)
    )
  return params["encoder"]


def init_projection(config: TextTowerConfig, seed: int) -> dict[str, np.ndarray]:
  """A fresh projection hidden → embed_dim ({kernel, bias}) initialised from `seed`."""
  dense = BiasedDense(
    config.embed_dim,
    (axes.EMBED, None),
    dtype=config.compute_dtype,
    param_dtype=config.weight_dtype,
  )
  init = jax.jit(lambda key: nn.unbox(dense.init(key, jnp.zeros((1, config.hidden_size)))))
  return jax.tree.map(np.asarray, init(jax.random.PRNGKey(seed))["params"])


def load_hf_bert(
  directory: str | os.PathLike[str], *, embed_dim: int = 128, max_length: int = 64, seed: int = 0
) -> tuple[TextTowerConfig, PyTree]:
  """Imports a Hugging Face BERT checkpoint directory as a MuLan text tower.

  Args:
    directory: holds `config.json` and `model.safetensors` (and `tokenizer.json`, which
      `TextTokenizer.from_file` reads).
    embed_dim: width of the MuLan joint space.
    max_length: tokens per caption.
    seed: seeds the freshly initialised projection (BERT has none).
  Returns:
    (config, params): params for `TextTower(config)` — {"encoder": imported BERT weights,
    "projection": fresh {kernel [hidden, embed_dim], bias [embed_dim]}} as float numpy arrays.
  Raises:
    FileNotFoundError / ValueError naming the file for missing files, unsupported configs and
    tensors whose shapes do not match the config.
  """
  directory = os.fspath(directory)
  config = config_from_hf(
    os.path.join(directory, CONFIG_FILE), embed_dim=embed_dim, max_length=max_length
  )
  tensors = read_tensors(os.path.join(directory, WEIGHTS_FILE))
  check_compatible(config, tensors, directory)
  params = {"encoder": convert(config, tensors), "projection": init_projection(config, seed)}
  return config, params
