"""Held-out sampling check of a trained stage LM: does cached sampling reproduce real targets?

Restores a stage's newest checkpoint, samples the targets of held-out examples from their
inputs with the KV-cached sampler, and reports how often sampled ids equal the held-out ones,
and that every sampled id decodes to a valid token of the stage.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import seqio

from musiclm_jax import optimizers
from musiclm_jax.checkpoints import CheckpointConfig, Checkpointer
from musiclm_jax.data import stage_tasks
from musiclm_jax.models.stage_lm import SamplingConfig, StageLM
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.train_job import model_metadata
from musiclm_jax.trainer import Trainer


def restore_params(model: StageLM, model_dir: str, partitioner: Partitioner | None = None):
  """Parameters of the newest checkpoint in `model_dir/checkpoints`."""
  partitioner = partitioner or Partitioner()
  trainer = Trainer(
    model,
    optimizers.make_optimizer(optimizers.OptimizerConfig()),
    partitioner,
    batch_size=partitioner.data_parallel_size,
  )
  with Checkpointer(
    os.path.join(model_dir, "checkpoints"), CheckpointConfig(), metadata=model_metadata(model)
  ) as checkpointer:
    state, _ = checkpointer.restore(trainer.abstract_state)
  return state.params


def sample_heldout(
  model: StageLM,
  params,
  task: str | seqio.Task,
  *,
  split: str = "validation",
  batch_size: int = 8,
  seed: int = 0,
  temperature: float | None = None,
) -> dict[str, float]:
  """Samples targets for one held-out batch and compares them with the real targets."""
  batch = next(
    stage_tasks.get_stage_dataset(
      task,
      model.layout,
      split=split,
      batch_size=batch_size,
      seed=seed,
      shuffle=False,
    ).as_numpy_iterator()
  )
  inputs_length = model.layout.inputs_length
  inputs = batch["decoder_target_tokens"][:, :inputs_length]
  targets = batch["decoder_target_tokens"][:, inputs_length:]
  sampling_config = model.sampling_config if temperature is None else SamplingConfig(temperature)
  predict = jax.jit(lambda p, x, r: model.predict_batch(p, x, r, sampling_config=sampling_config))
  sampled = np.asarray(predict(params, inputs, jax.random.key(seed)).tokens)
  model.layout.decode_targets(sampled)  # raises if any id is invalid for its position
  weights = targets != 0
  return {
    "sampled_token_accuracy": float(((sampled == targets) & weights).sum() / weights.sum()),
    "num_sampled_tokens": int(weights.sum()),
  }
