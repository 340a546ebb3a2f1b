"""Copies of the transformers-built fixture checkpoints, edited to test what the importers refuse."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

Tensors = dict[str, np.ndarray]


def copy_checkpoint(
  source: str,
  tmp_path,
  edit_tensors: Callable[[Tensors], Tensors] | None = None,
  edit_config: Callable[[dict], dict] | None = None,
) -> str:
  """`source` copied under tmp_path/ckpt, its model.safetensors and config.json edited."""
  directory = str(tmp_path / "ckpt")
  shutil.copytree(source, directory)
  if edit_tensors is not None:
    path = os.path.join(directory, "model.safetensors")
    save_file(edit_tensors(load_file(path)), path)
  if edit_config is not None:
    path = os.path.join(directory, "config.json")
    with open(path) as f:
      config = json.load(f)
    with open(path, "w") as f:
      json.dump(edit_config(config), f)
  return directory
