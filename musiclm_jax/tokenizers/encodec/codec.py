"""Inference API of an imported EnCodec (`codec_api.AudioCodec`), and its checkpoint.

`EncodecCodec(config, variables)` encodes and decodes like transformers' `EncodecModel` (codes
equal, audio within float tolerance) through our codec API, so `musiclm-jax codec`, the token
cache and the decoding pipeline take it where they take a SoundStream. `save_encodec` writes an
import as a checkpoint of ours (model "encodec", the architecture and the source in its
metadata); `codec_api.load_codec(model_dir)` reads it back through `load_encodec_codec`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from musiclm_jax import architecture, checkpoints
from musiclm_jax.checkpoints import CheckpointConfig, Checkpointer
from musiclm_jax.tokenizers.codec_api import ENCODEC, AudioCodec
from musiclm_jax.tokenizers.encodec import hf_import, model
from musiclm_jax.tokenizers.encodec.config import EncodecCodecConfig
from musiclm_jax.tokenizers.rvq import QUANTIZER

MODEL_NAME = ENCODEC


class EncodecCodec(AudioCodec):
  """An imported EnCodec.

  Attributes:
    config: the `EncodecCodecConfig`.
    variables: {"params": {"encoder", "decoder"}, "quantizer": {"codebooks"}}.
  """

  name = MODEL_NAME

  @classmethod
  def random_init(cls, config: EncodecCodecConfig, seed: int = 0) -> EncodecCodec:
    """Random weights of `config`'s shape (fan-in scaled), for benchmarks and shape tests."""
    shapes = hf_import.variable_shapes(config)
    rng = np.random.default_rng(seed)

    def weight(shape: tuple[int, ...]) -> np.ndarray:
      if len(shape) == 1:  # a bias
        return np.zeros(shape, np.float32)
      fan_in = np.prod(shape[:-1])  # kernels [width, in, out], LSTM weights [in, 4H]
      return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    is_shape = lambda x: isinstance(x, tuple)  # noqa: E731
    params = jax.tree.map(weight, shapes["params"], is_leaf=is_shape)
    codebooks = rng.standard_normal(shapes[QUANTIZER]["codebooks"]).astype(np.float32)
    return cls(config, {"params": params, QUANTIZER: {"codebooks": codebooks}})

  def _encode_fn(self, variables: dict, audio: jax.Array, levels: int) -> jax.Array:
    return model.encode(self.config, variables, audio, levels)

  def _decode_fn(self, variables: dict, codes: jax.Array) -> jax.Array:
    return model.decode(self.config, variables, codes)


def save_encodec(
  model_dir: str, config: EncodecCodecConfig, variables: dict, source: dict[str, Any]
) -> str:
  """Writes an imported EnCodec as step 0 of `model_dir/checkpoints`; returns that directory.

  Args:
    model_dir: the codec's model dir (what `--codec_dir` and the tokenizer bundle name).
    config: its architecture, recorded in the metadata.
    variables: {"params", "quantizer"} as `hf_import.convert` returns them.
    source: where it came from (directory, file digest, ...), recorded in the metadata.
  """
  directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
  metadata = {
    "model": MODEL_NAME,
    "architecture": architecture.to_json(config),
    "imported_from": source,
  }
  state = jax.tree.map(np.asarray, {"params": variables["params"], QUANTIZER: variables[QUANTIZER]})
  config_ = CheckpointConfig(save_interval_steps=1, max_to_keep=1, save_on_sigterm=False)
  with Checkpointer(directory, config_, metadata=metadata) as checkpointer:
    checkpointer.save(0, state, {}, force=True)
  return directory


def load_encodec_codec(checkpoint_dir: str, step: int | None = None) -> EncodecCodec:
  """The imported EnCodec in `checkpoint_dir` (`<model_dir>/checkpoints`).

  Raises:
    FileNotFoundError: no complete checkpoint in `checkpoint_dir`.
    CheckpointMismatchError: the checkpoint is not an imported EnCodec.
  """
  metadata, tree, _ = checkpoints.restore_trained(
    checkpoint_dir,
    MODEL_NAME,
    "an imported EnCodec",
    subtrees=(("params",), (QUANTIZER,)),
    step=step,
  )
  config = architecture.from_json(EncodecCodecConfig, metadata["architecture"])
  return EncodecCodec(config, {"params": tree["params"], QUANTIZER: tree[QUANTIZER]})
