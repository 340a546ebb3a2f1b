"""Reading Hugging Face checkpoint directories (config.json + model.safetensors) without torch.

What every importer shares (`mulan.bert_import`, `encodec.hf_import`, `hubert.hf_import`): a config
read as JSON with errors naming the file, tensors read with `safetensors.numpy` (a truncated or
corrupt file is one clear error, not a Rust panic), the check that a checkpoint holds exactly the
tensors its config implies (naming the tensor, the file and both shapes), torch's weight norm in
either of its namings folded into one weight, and placing converted arrays in a nested tree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
from safetensors.numpy import load_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# torch's weight norm saves a (gain, direction) pair: `parametrizations.weight.original0/1` since
# torch's parametrizations, `weight_g` / `weight_v` before (as the hub's older checkpoints hold).
WEIGHT_NORM_NAMES = (
  ("parametrizations.weight.original0", "parametrizations.weight.original1"),
  ("weight_g", "weight_v"),
)


def read_json(path: str) -> dict[str, Any]:
  """The JSON object at `path`.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: not valid JSON, or not an object.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No {os.path.basename(path)} at {path}.")
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e
  if not isinstance(data, dict):
    raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}.")
  return data


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """Every tensor of the safetensors file at `path`, as numpy arrays by name.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: the file is truncated or not safetensors.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No {os.path.basename(path)} at {path}.")
  try:
    return load_file(path)
  except Exception as e:  # the Rust reader raises SafetensorError on corrupt headers or data
    raise ValueError(f"{path} is not a readable safetensors file: {e}") from e


def check_tensors(
  expected: Mapping[str, tuple[int, ...]],
  tensors: Mapping[str, np.ndarray],
  path: str,
  *,
  ignored: Collection[str] = (),
  extra_hint: str = "",
) -> None:
  """Raises ValueError unless `tensors` holds exactly the `expected` names with their shapes.

  Args:
    expected: tensor name -> the shape the config implies.
    tensors: what the file holds.
    path: the safetensors file, named in the error.
    ignored: names that may be present and are not used (buffers, heads).
    extra_hint: appended to the error about unexpected tensors (which config field to check).
  """
  for name, shape in expected.items():
    if name not in tensors:
      raise ValueError(f"{path} lacks tensor {name!r} (expected shape {tuple(shape)}).")
    saved = tuple(tensors[name].shape)
    if saved != tuple(shape):
      raise ValueError(
        f"{path}: tensor {name!r} has shape {saved}, but {CONFIG_FILE} implies {tuple(shape)}; "
        "the checkpoint does not match its config."
      )
  extra = sorted(set(tensors) - set(expected) - set(ignored))
  if extra:
    raise ValueError(
      f"{path} holds tensors this config does not use, e.g. {extra[:3]} ({len(extra)} in all)"
      f"{'; ' + extra_hint if extra_hint else ''}."
    )


def weight_names(module: str, tensors: Mapping[str, np.ndarray]) -> tuple[str, ...]:
  """How this checkpoint names `module`'s weight: a weight-norm pair (g, v) or (weight,)."""
  for g, v in WEIGHT_NORM_NAMES:
    if f"{module}.{g}" in tensors or f"{module}.{v}" in tensors:
      return f"{module}.{g}", f"{module}.{v}"
  return (f"{module}.weight",)


def folded_weight(
  module: str, tensors: Mapping[str, np.ndarray], norm_axes: tuple[int, ...]
) -> np.ndarray:
  """`module`'s weight in float64, a weight-norm pair folded: w = g · v / ‖v‖ over `norm_axes`
  (the axes other than torch's `dim`)."""
  names = weight_names(module, tensors)
  weight = tensors[names[-1]].astype(np.float64)
  if len(names) == 1:
    return weight
  norm = np.sqrt(np.sum(weight**2, axis=norm_axes, keepdims=True))
  return tensors[names[0]].astype(np.float64) * weight / norm


def set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  """tree[path[0]][path[1]]... = value, creating the dicts on the way."""
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value
