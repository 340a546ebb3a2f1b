"""An imported HuBERT / MERT as a semantic encoder: audio at any rate -> one layer's hidden states.

`HubertEncoder(config, params)` runs `model.hidden_states` up to the asked layer in one jitted
program per input shape. `save_hubert` writes an import as a checkpoint of ours (model "hubert",
the architecture and the source in its metadata); `load_hubert` reads it back.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax import architecture, checkpoints
from musiclm_jax.checkpoints import CheckpointConfig, Checkpointer
from musiclm_jax.tokenizers.hubert import model, resample
from musiclm_jax.tokenizers.hubert.config import HubertEncoderConfig

MODEL_NAME = "hubert"


class HubertEncoder:
  """Hidden states of an imported HuBERT or MERT.

  Attributes:
    config: the `HubertEncoderConfig` (its sample_rate is the rate the model expects).
    params: the imported weights, on the device.
  """

  def __init__(self, config: HubertEncoderConfig, params: dict[str, Any]):
    self.config = config
    self.params = jax.device_put(params)
    self._layer_fn = jax.jit(self._layer, static_argnums=2)

  def _layer(self, params: dict, audio: jax.Array, layer: int) -> jax.Array:
    return model.hidden_states(self.config, params, audio, num_layers=layer)[layer]

  def hidden_states(self, audio: np.ndarray | jax.Array, layer: int) -> jax.Array:
    """[batch, samples] audio at `config.sample_rate` -> [batch, frames, hidden_size].

    Args:
      audio: float audio at the model's rate, numpy or jax (a sharded batch stays sharded).
      layer: 0 for the encoder's input, l in 1..num_layers for layer l's output (transformers'
        `hidden_states[layer]`).
    Raises:
      ValueError: layer out of range, audio not [batch, samples] or shorter than one frame.
    """
    if not 0 <= layer <= self.config.num_layers:
      raise ValueError(f"layer {layer} is not in [0, {self.config.num_layers}].")
    if len(audio.shape) != 2 or self.config.num_frames(audio.shape[1]) < 1:
      raise ValueError(
        f"Expected audio [batch, samples] of at least one frame, got shape {tuple(audio.shape)}."
      )
    return self._layer_fn(self.params, audio, layer)

  def embed_at(self, audio: np.ndarray | jax.Array, sample_rate: int, layer: int) -> jax.Array:
    """`hidden_states` of audio at any rate, resampled to the model's on the device first
    (`resample.resample`, a polyphase windowed-sinc filter)."""
    audio = jnp.asarray(audio, jnp.float32)
    return self.hidden_states(resample.resample(audio, sample_rate, self.config.sample_rate), layer)


def save_hubert(model_dir: str, config: HubertEncoderConfig, params: dict, source: dict) -> str:
  """Writes an imported HuBERT / MERT as step 0 of `model_dir/checkpoints`; returns that dir."""
  directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
  metadata = {
    "model": MODEL_NAME,
    "architecture": architecture.to_json(config),
    "imported_from": source,
  }
  options = CheckpointConfig(save_interval_steps=1, max_to_keep=1, save_on_sigterm=False)
  with Checkpointer(directory, options, metadata=metadata) as checkpointer:
    checkpointer.save(0, {"params": jax.tree.map(np.asarray, params)}, {}, force=True)
  return directory


def load_hubert(model_dir: str, step: int | None = None) -> HubertEncoder:
  """The imported HuBERT / MERT in `model_dir` (written by `import-weights --kind=hubert|mert`).

  Raises:
    FileNotFoundError: no complete checkpoint.
    CheckpointMismatchError: the checkpoint is not an imported HuBERT / MERT.
  """
  directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
  metadata, tree, _ = checkpoints.restore_trained(
    directory, MODEL_NAME, "an imported HuBERT or MERT", step=step
  )
  config = architecture.from_json(HubertEncoderConfig, metadata["architecture"])
  return HubertEncoder(config, tree["params"])
