"""A trained w2v-BERT, rebuilt from its checkpoint alone (the architecture is in its metadata).

`load_w2v_bert(model_dir)` is what the semantic tokenizer (`semantic.load_semantic_tokenizer`)
and the k-means job read: the architecture, the parameters (no optimizer state is read) and
which checkpoint they came from. The training wrapper (`models.w2v_bert.W2VBertModel`) is the
caller's to build from `config` if it needs one.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from musiclm_jax import architecture, checkpoints
from musiclm_jax.tokenizers.w2v_bert.config import W2VBertConfig

PyTree = Any

# The "model" a w2v-BERT checkpoint's metadata names (models/w2v_bert.py's W2VBertModel.name).
MODEL_NAME = "w2v_bert"


@dataclasses.dataclass(frozen=True)
class TrainedW2VBert:
  """A trained w2v-BERT: its architecture, its parameters and where they came from.

  Attributes:
    config: the architecture it was trained with.
    params: its (unboxed) parameters, on the host.
    step: the checkpoint step they were read from.
    directory: the checkpoint directory (`<model_dir>/checkpoints`).
  """

  config: W2VBertConfig
  params: PyTree
  step: int
  directory: str


def load_w2v_bert(model_dir: str, step: int | None = None) -> TrainedW2VBert:
  """The trained w2v-BERT in `model_dir` (architecture from the checkpoint's metadata).

  Args:
    model_dir: the w2v-BERT job's model dir (checkpoints in `model_dir/checkpoints`).
    step: step to load; None for the latest complete one.

  Raises:
    FileNotFoundError: no complete checkpoint in `model_dir/checkpoints`.
    CheckpointMismatchError: the checkpoint is not a w2v-BERT model.
  """
  directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
  metadata, tree, step = checkpoints.restore_trained(
    directory, MODEL_NAME, "a w2v-BERT model", step=step
  )
  config = architecture.from_json(W2VBertConfig, metadata["architecture"])
  return TrainedW2VBert(config, tree["params"], step, directory)
