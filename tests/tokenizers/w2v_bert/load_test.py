"""load_w2v_bert: a w2v-BERT job's checkpoint back as config + params, without a trainer."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from musiclm_jax.checkpoints import (
  CHECKPOINT_SUBDIR,
  CheckpointConfig,
  Checkpointer,
  CheckpointMismatchError,
)
from musiclm_jax.jobs import w2v_bert as w2v_bert_train_job
from musiclm_jax.models.w2v_bert import W2VBertModel
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers.w2v_bert.load import load_w2v_bert
from musiclm_jax.training import trainer as trainer_lib
from tests.size_configs import size_config

NO_SIGTERM = CheckpointConfig(async_save=False, save_on_sigterm=False)


def test_loads_what_the_job_saves_without_building_a_trainer(tmp_path, monkeypatch):
  config = size_config("w2v_bert", "tiny")
  model = W2VBertModel(config, crop_samples=config.samples_per_frame * 4)
  single = Partitioner(MeshConfig(num_devices=1, ici_data=1))
  state = trainer_lib.Trainer(model, optax.adam(1e-3), single, batch_size=1).init_state(0)
  directory = tmp_path / CHECKPOINT_SUBDIR
  metadata = w2v_bert_train_job.w2v_bert_metadata(model)
  with Checkpointer(directory, NO_SIGTERM, metadata=metadata) as checkpointer:
    checkpointer.save(5, state, {"data_batches": 5}, force=True)

  def refuse(*args, **kwargs):
    raise AssertionError("load_w2v_bert built a Trainer")

  monkeypatch.setattr(trainer_lib.Trainer, "__init__", refuse)
  trained = load_w2v_bert(str(tmp_path))
  assert (trained.config, trained.step, trained.directory) == (config, 5, str(directory))
  jax.tree.map(np.testing.assert_array_equal, trained.params, jax.device_get(state.params))


def test_another_models_checkpoint_is_refused(tmp_path):
  directory = tmp_path / "codec" / CHECKPOINT_SUBDIR
  with Checkpointer(directory, NO_SIGTERM, metadata={"model": "soundstream"}) as checkpointer:
    checkpointer.save(1, {"params": {"w": jax.numpy.zeros(3)}}, {}, force=True)
  with pytest.raises(CheckpointMismatchError, match=f"{directory} .*not a w2v-BERT model"):
    load_w2v_bert(str(tmp_path / "codec"))
