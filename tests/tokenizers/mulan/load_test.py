"""load_mulan and load_mulan_tokenizer: what the MuLan jobs save, back without their trainers."""

from __future__ import annotations

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax.checkpoints import (
  CHECKPOINT_SUBDIR,
  CheckpointConfig,
  Checkpointer,
  CheckpointMismatchError,
)
from musiclm_jax.jobs import mulan as mulan_train_job
from musiclm_jax.jobs import mulan_quantizer as mulan_quantizer_job
from musiclm_jax.models.mulan import MuLanModel
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers.mulan.load import TOKENIZER_FILE, load_mulan
from musiclm_jax.tokenizers.mulan.text_tokenizer import TextTokenizer
from musiclm_jax.tokenizers.mulan.tokens import load_mulan_tokenizer
from musiclm_jax.tokenizers.rvq import ResidualVectorQuantizer, RVQConfig
from musiclm_jax.training import trainer as trainer_lib
from tests.size_configs import size_config

NO_SIGTERM = CheckpointConfig(async_save=False, save_on_sigterm=False)
CAPTIONS = ["calm piano melody", "lively violin tune", "calm cello", "lively piano"] * 3


@pytest.fixture(scope="module")
def mulan_dir(tmp_path_factory) -> tuple[str, dict]:
  """A MuLan model dir as the job leaves it (checkpoint + text tokenizer); its saved params."""
  model_dir = tmp_path_factory.mktemp("mulan")
  model = MuLanModel(size_config("mulan", "tiny"))
  single = Partitioner(MeshConfig(num_devices=1, ici_data=1))
  state = trainer_lib.Trainer(model, optax.adam(1e-3), single, batch_size=1).init_state(0)
  metadata = mulan_train_job.mulan_metadata(model)
  with Checkpointer(model_dir / CHECKPOINT_SUBDIR, NO_SIGTERM, metadata=metadata) as ckpt:
    ckpt.save(2, state, {"data_batches": 2}, force=True)
  TextTokenizer.train_wordpiece(CAPTIONS, 64).save(model_dir / TOKENIZER_FILE)
  return str(model_dir), jax.device_get(state.params)


def _save_quantizer(directory, trained, rvq: RVQConfig) -> dict:
  """An RVQ checkpoint as the quantizer job saves it; returns its variables."""
  variables = ResidualVectorQuantizer(rvq).init(
    jax.random.key(0), jnp.zeros((1, rvq.dim)), train=False
  )
  metadata = mulan_quantizer_job.quantizer_metadata(trained, rvq)
  with Checkpointer(directory, NO_SIGTERM, metadata=metadata) as checkpointer:
    checkpointer.save(3, variables, {"step": 3}, force=True)
  return jax.device_get(variables)


def test_load_mulan_reads_what_the_job_saves_without_building_a_trainer(mulan_dir, monkeypatch):
  model_dir, params = mulan_dir

  def refuse(*args, **kwargs):
    raise AssertionError("load_mulan built a Trainer")

  monkeypatch.setattr(trainer_lib.Trainer, "__init__", refuse)
  trained = load_mulan(model_dir)
  assert (trained.config, trained.step) == (size_config("mulan", "tiny"), 2)
  assert (
    trained.tokenizer.vocab_size
    == TextTokenizer.from_file(f"{model_dir}/{TOKENIZER_FILE}").vocab_size
  )
  jax.tree.map(np.testing.assert_array_equal, trained.params, params)


def test_load_mulan_without_its_text_tokenizer_says_where(mulan_dir, tmp_path):
  model_dir, _ = mulan_dir
  copy = tmp_path / "copy"
  shutil.copytree(f"{model_dir}/{CHECKPOINT_SUBDIR}", copy / CHECKPOINT_SUBDIR)
  with pytest.raises(FileNotFoundError, match=f"{copy}/{TOKENIZER_FILE} is missing"):
    load_mulan(str(copy))


def test_load_mulan_tokenizer_pairs_mulan_with_its_quantizer(mulan_dir, tmp_path):
  model_dir, _ = mulan_dir
  trained = load_mulan(model_dir)
  rvq = RVQConfig(num_levels=2, codebook_size=4, dim=trained.config.embed_dim)
  variables = _save_quantizer(tmp_path / "rvq", trained, rvq)
  tokenizer = load_mulan_tokenizer(model_dir, str(tmp_path / "rvq"))
  assert tokenizer.rvq == rvq
  jax.tree.map(np.testing.assert_array_equal, tokenizer.rvq_variables, variables)
  tokens = tokenizer.text_tokens(["calm piano melody", "lively violin"])
  assert tokens.shape == (2, 2) and tokens.max() < 4

  other_config = dataclasses.replace(trained.config, initial_temperature=0.5)
  _save_quantizer(tmp_path / "other", dataclasses.replace(trained, config=other_config), rvq)
  with pytest.raises(CheckpointMismatchError, match=f"{tmp_path / 'other'} was fitted on another"):
    load_mulan_tokenizer(model_dir, str(tmp_path / "other"))
  with pytest.raises(CheckpointMismatchError, match="holds a 'mulan' checkpoint, not a MuLan q"):
    load_mulan_tokenizer(model_dir, f"{model_dir}/{CHECKPOINT_SUBDIR}")
