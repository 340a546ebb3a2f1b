"""A trained MuLan, rebuilt from its model dir alone (the architecture is in its checkpoint).

`load_mulan(model_dir)` is what the MuLan tokenizer (`tokens.load_mulan_tokenizer`) and the
quantizer job read: the architecture, the parameters (no optimizer state is read), the text
tokenizer the text tower was trained with, and which checkpoint they came from. The training
wrapper (`models.mulan.MuLanModel`) is the caller's to build from `config` if it needs one.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from musiclm_jax import architecture, checkpoints
from musiclm_jax.tokenizers.mulan.config import MuLanConfig
from musiclm_jax.tokenizers.mulan.text_tokenizer import TextTokenizer

PyTree = Any

# The "model" a MuLan checkpoint's metadata names (models/mulan.py's MuLanModel.name).
MODEL_NAME = "mulan"
# The text tokenizer a MuLan run saves beside its checkpoints (the ids its text tower knows).
TOKENIZER_FILE = "text_tokenizer.json"


@dataclasses.dataclass(frozen=True)
class TrainedMuLan:
  """A trained MuLan: architecture, parameters, text tokenizer and their origin.

  Attributes:
    config: the architecture it was trained with.
    params: its (unboxed) parameters, on the host.
    tokenizer: the text tokenizer of its text tower.
    step: the checkpoint step the parameters were read from.
    directory: the checkpoint directory (`<model_dir>/checkpoints`).
  """

  config: MuLanConfig
  params: PyTree
  tokenizer: TextTokenizer
  step: int
  directory: str


def load_mulan(model_dir: str, step: int | None = None) -> TrainedMuLan:
  """The trained MuLan in `model_dir` with its text tokenizer (architecture from the metadata).

  Args:
    model_dir: the MuLan job's model dir (checkpoints and the text tokenizer).
    step: step to load; None for the latest complete one.

  Raises:
    FileNotFoundError: no complete checkpoint, or no text tokenizer, in `model_dir`.
    CheckpointMismatchError: the checkpoint is not a MuLan model.
  """
  tokenizer_path = os.path.join(model_dir, TOKENIZER_FILE)
  directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
  metadata, tree, step = checkpoints.restore_trained(
    directory, MODEL_NAME, "a MuLan model", step=step
  )
  if not os.path.exists(tokenizer_path):
    raise FileNotFoundError(f"{tokenizer_path} is missing: MuLan's text tokenizer is saved there.")
  config = architecture.from_json(MuLanConfig, metadata["architecture"])
  return TrainedMuLan(
    config, tree["params"], TextTokenizer.from_file(tokenizer_path), step, directory
  )
