"""The MuLan training job: contrastive audio–caption training, resumable; retrieval eval.

`train_mulan()` is what `musiclm-jax train` runs for gin/runs/mulan_rendered.gin. Each batch is
audio crops of one MuLan window with their clips' captions, tokenized on the host by the run's
text tokenizer: a WordPiece vocabulary learned from the training captions (the from-scratch
path, saved in the model dir so a resumed run and the loader use the same ids), or the
tokenizer of a pretrained BERT-family checkpoint whose weights initialise the text tower
(`pretrained_text_dir`, imported without torch). The contrastive loss sees the whole global
batch (negatives from every device). At the end the chief measures text→audio retrieval on the
held-out split: recall@1/@5 against chance. The trained model is read back by
`tokenizers.mulan.load.load_mulan(model_dir)`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from musiclm_jax import architecture
from musiclm_jax.checkpoints import CheckpointConfig
from musiclm_jax.data import audio_batches
from musiclm_jax.data.audio_batches import AudioSource, audio_crop_dataset
from musiclm_jax.evaluation.retrieval import recall_at_k
from musiclm_jax.models.mulan import MuLanModel
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.runtime.atomic import atomic_path
from musiclm_jax.tokenizers.mulan import bert_import
from musiclm_jax.tokenizers.mulan.load import TOKENIZER_FILE
from musiclm_jax.tokenizers.mulan.text_tokenizer import TextTokenizer
from musiclm_jax.training import loop as train_loop
from musiclm_jax.training import runner
from musiclm_jax.training.optimizers import OptimizerConfig, make_optimizer, make_schedule
from musiclm_jax.training.trainer import Trainer, TrainState

# The Flax MuLan module's submodule holding the text tower (what a pretrained import replaces).
TEXT_TOWER = "text_tower"


def mulan_metadata(model: MuLanModel) -> dict[str, Any]:
  """What a checkpoint must match to be restored into `model` (and what rebuilds it)."""
  return {"model": model.name, "architecture": architecture.to_json(model.config)}


# --- text ------------------------------------------------------------------------------------


def _captions(source: AudioSource, split: str) -> Iterator[str]:
  """The captions of a split, read without decoding any audio."""
  builder = tfds.builder(source.name, data_dir=source.data_dir)
  dataset = builder.as_dataset(split=split, decoders={"audio": tfds.decode.SkipDecoding()})
  for example in dataset.as_numpy_iterator():
    yield example["caption"].decode("utf-8")


def text_tokenizer_for_run(
  model_dir: str, source: AudioSource, split: str, vocab_size: int
) -> TextTokenizer:
  """The run's from-scratch tokenizer: loaded from `model_dir`, else learned from the captions.

  Learning is deterministic, so every host of a multi-host job builds the same vocabulary; the
  job saves it (`_save_tokenizer`) once its checkpoint is accepted, for resumed runs and loaders.
  """
  path = os.path.join(model_dir, TOKENIZER_FILE)
  if os.path.exists(path):
    return TextTokenizer.from_file(path)
  return TextTokenizer.train_wordpiece(_captions(source, split), vocab_size)


def _save_tokenizer(tokenizer: TextTokenizer, model_dir: str) -> None:
  """Atomically, by the chief: the ids every later run and loader of `model_dir` must use."""
  if jax.process_index() != 0:
    return
  path = os.path.join(model_dir, TOKENIZER_FILE)
  os.makedirs(model_dir, exist_ok=True)
  with atomic_path(path) as tmp:
    tokenizer.save(tmp)


def _with_text(
  batches: Iterator[dict[str, np.ndarray]], tokenizer: TextTokenizer, max_length: int
) -> Iterator[dict[str, np.ndarray]]:
  for batch in batches:
    captions = [c.decode("utf-8") for c in batch.pop("caption")]
    batch["text_ids"], batch["text_mask"] = tokenizer.encode_batch(captions, max_length)
    yield batch


def _batches(model, tokenizer, source, split, batch_size, seed, skip, shuffle=True):
  features = ("audio", "audio_mask", "caption")
  audio = audio_batches.host_audio_batches(
    source, split, model.crop_samples, batch_size, seed, skip, shuffle=shuffle, features=features
  )
  return _with_text(audio, tokenizer, model.config.text.max_length)


# --- setup -----------------------------------------------------------------------------------


def _with_pretrained_text(model: MuLanModel, directory: str | None):
  """(model with the imported text-tower config, imported tower params, its tokenizer) or Nones."""
  if directory is None:
    return model, None, None
  text = model.config.text
  config, params = bert_import.load_hf_bert(
    directory, embed_dim=text.embed_dim, max_length=text.max_length
  )
  config = dataclasses.replace(config, dropout_rate=text.dropout_rate)
  model = MuLanModel(dataclasses.replace(model.config, text=config), model.crop_samples)
  tokenizer = TextTokenizer.from_file(os.path.join(directory, "tokenizer.json"))
  return model, params, tokenizer


def _graft_text_tower(trainer: Trainer, state: TrainState, tower_params: Any) -> TrainState:
  """A fresh state whose text tower holds the imported weights (placed in their shardings)."""
  shardings = trainer.state_shardings.params[TEXT_TOWER]
  imported = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), tower_params, shardings)
  return state.replace(params={**state.params, TEXT_TOWER: imported})


def _make_trainer(model, partitioner, batch_size, optimizer) -> Trainer:
  return Trainer(
    model,
    make_optimizer(optimizer),
    partitioner,
    batch_size=batch_size,
    learning_rate_fn=make_schedule(optimizer),
  )


# --- evaluation ------------------------------------------------------------------------------


def held_out_pairs(
  source: AudioSource, split: str, clip_samples: int, max_clips: int | None = None
) -> tuple[np.ndarray, list[str]]:
  """Whole clips (cut or zero-padded to `clip_samples`) of a split and their captions, in order."""
  dataset = audio_crop_dataset(
    source,
    split=split,
    crop_samples=clip_samples,
    batch_size=1,
    seed=0,
    shuffle=False,
    num_epochs=1,
    with_captions=True,
    min_rms_db=None,
  )
  audio, captions = [], []
  for batch in dataset.as_numpy_iterator():
    audio.append(batch["audio"][0])
    captions.append(batch["caption"][0].decode("utf-8"))
    if max_clips is not None and len(audio) >= max_clips:
      break
  if not audio:
    raise ValueError(f"Split {split!r} of {source.name} holds no clip.")
  return np.stack(audio), captions


def evaluate_retrieval(
  model: MuLanModel,
  params: Any,
  tokenizer: TextTokenizer,
  audio: np.ndarray,
  captions: list[str],
) -> dict[str, float]:
  """Text→audio recall@1/@5 (and chance) of captions against their clips' clip embeddings."""
  clip_embedding = jax.jit(model.clip_embedding)
  audio_emb = np.concatenate([np.asarray(clip_embedding(params, clip[None])) for clip in audio])
  ids, mask = tokenizer.encode_batch(captions, model.config.text.max_length)
  text_emb = np.asarray(jax.jit(model.embed_text)(params, ids, mask))
  metrics = recall_at_k(text_emb, audio_emb, ks=(1, 5))
  metrics["mcc"] = float(np.mean(np.sum(text_emb * audio_emb, axis=-1)))
  return metrics


def _console_line(step: int, num_steps: int, scalars: Mapping[str, float]) -> str:
  return (
    f"step {step}/{num_steps}  loss {scalars['loss']:.4f}  "
    f"a→t {scalars['audio_to_text_accuracy']:.3f}  t→a {scalars['text_to_audio_accuracy']:.3f}  "
    f"τ {scalars['temperature']:.4f}  {scalars['audio_seconds_per_s']:.1f} audio-s/s  "
    f"{scalars['step_time_s']:.3f} s/step"
  )


# --- the job ---------------------------------------------------------------------------------


def train_mulan(
  *,
  model: MuLanModel,
  source: AudioSource,
  model_dir: str,
  num_steps: int,
  batch_size: int,
  optimizer: OptimizerConfig = OptimizerConfig(),
  partitioner: Partitioner | None = None,
  checkpoint: CheckpointConfig = CheckpointConfig(),
  vocab_size: int | None = None,
  pretrained_text_dir: str | None = None,
  seed: int = 0,
  data_seed: int = 0,
  train_split: str = "train",
  eval_split: str | None = "eval",
  eval_clip_seconds: float = 10.0,
  eval_max_clips: int | None = 200,
  log_every_steps: int = 10,
  max_nonfinite_steps: int = 20,
  eval_every_steps: int = 0,
  on_start: Callable[[], None] | None = None,
) -> dict[str, float]:
  """Trains MuLan on `source`'s clips and captions until `num_steps`, resuming if possible.

  Args:
    model: the MuLan wrapper (towers, crop = one audio window).
    source: a TFDS audio dataset with captions, at the audio tower's sample rate.
    model_dir: checkpoints, TensorBoard events, final metrics, the text tokenizer.
    num_steps: total optimizer steps (a resumed job runs the remainder).
    batch_size: global batch of (crop, caption) pairs: every other pair is a negative.
    optimizer: optimizer and schedule.
    partitioner: mesh and rules (default: every device on 'data').
    checkpoint: cadence and retention.
    vocab_size: WordPiece vocabulary learned from the captions (from-scratch text tower);
      None: the text tower's `vocab_size`.
    pretrained_text_dir: a Hugging Face BERT-family directory (config.json, model.safetensors,
      tokenizer.json) whose weights and tokenizer start the text tower instead.
    seed: init and dropout seed; data_seed: crops and shuffling.
    train_split, eval_split: dataset splits (eval_split None: no retrieval evaluation).
    eval_clip_seconds, eval_max_clips: held-out clips used for retrieval (whole clips, clip
      embedding = mean over windows).
    log_every_steps: metrics cadence.
    max_nonfinite_steps: abort after this many consecutive skipped (non-finite) steps.
    eval_every_steps: measure retrieval every N steps during training (0: only at the end).
    on_start: called on the chief once the checkpoint (if any) is accepted (`runner.run`).
  Returns:
    The last logged metrics, plus eval/recall@1, eval/recall@5, eval/chance@k, eval/mcc.
  Raises:
    runner.Preempted: SIGTERM stopped the run after saving (rerun to resume).
  """
  if source.sample_rate != model.config.audio.sample_rate:
    raise ValueError(
      f"Dataset {source.name} holds {source.sample_rate} Hz audio; MuLan's audio tower expects "
      f"{model.config.audio.sample_rate} Hz. Build the dataset at that rate."
    )
  model, tower_params, tokenizer = _with_pretrained_text(model, pretrained_text_dir)
  if tokenizer is None:
    vocab_size = vocab_size or model.config.text.vocab_size
    tokenizer = text_tokenizer_for_run(model_dir, source, train_split, vocab_size)
  if tokenizer.vocab_size > model.config.text.vocab_size:
    raise ValueError(
      f"The text tokenizer has {tokenizer.vocab_size} ids; the text tower embeds only "
      f"{model.config.text.vocab_size}. Raise TextTowerConfig.vocab_size or lower vocab_size."
    )
  trainer = _make_trainer(model, partitioner or Partitioner(), batch_size, optimizer)
  held_out = functools.cache(
    lambda: held_out_pairs(
      source, eval_split, int(eval_clip_seconds * source.sample_rate), eval_max_clips
    )
  )

  def evaluate(state: TrainState) -> dict[str, float]:
    audio, captions = held_out()
    metrics = evaluate_retrieval(model, jax.device_get(state.params), tokenizer, audio, captions)
    logging.info("MuLan retrieval on %d held-out clips: %s", len(captions), metrics)
    return metrics

  def start() -> None:
    _save_tokenizer(tokenizer, model_dir)  # only once the checkpoint (if any) is accepted
    if on_start is not None:
      on_start()

  job = runner.TrainJob(
    trainer=trainer,
    metadata=mulan_metadata(model),
    batches=lambda skip: _batches(
      model, tokenizer, source, train_split, batch_size, data_seed, skip
    ),
    throughput=train_loop.Throughput(
      batch_size * model.crop_samples / source.sample_rate, "audio_seconds"
    ),
    console_line=_console_line,
    evaluate=None if eval_split is None else evaluate,
    on_fresh_state=None
    if tower_params is None
    else lambda state: _graft_text_tower(trainer, state, tower_params),
  )
  settings = runner.RunSettings(
    model_dir=model_dir,
    num_steps=num_steps,
    checkpoint=checkpoint,
    seed=seed,
    log_every_steps=log_every_steps,
    eval_every_steps=eval_every_steps,
    max_nonfinite_steps=max_nonfinite_steps,
  )
  return runner.run(job, settings, start)
