"""The semantic k-means job: cluster a trained w2v-BERT's embeddings into the semantic vocabulary.

`fit_semantic_kmeans()` is what `musiclm-jax train` runs for gin/runs/semantic_kmeans_rendered.gin.
It streams audio crops of a dataset through the trained w2v-BERT (jitted, batch sharded over the
data axis), keeps the hidden states of one MLM layer at every real (non-padding) frame, and fits
mini-batch k-means on them in bounded memory. Progress is checkpointed, so a killed job resumes
where it stopped. The result, saved in `output_dir`, records the layer, the normalisation and the
w2v-BERT checkpoint it expects; `tokenizers.w2v_bert.semantic.load_semantic_tokenizer` refuses
any other pairing.

`w2v_bert_dir` may also hold an imported HuBERT or MERT (`musiclm-jax import-weights
--kind=hubert|mert`): its hidden states of `layer` (0..num_layers, default the middle layer), at
`semantic_rate_hz` (`tokenizers.hubert.semantic`), are clustered the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from musiclm_jax import architecture, checkpoints
from musiclm_jax.data import audio_batches
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.models.w2v_bert import W2VBertModel
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.tokenizers import kmeans
from musiclm_jax.tokenizers.w2v_bert import frontend
from musiclm_jax.tokenizers.w2v_bert.load import TrainedW2VBert, load_w2v_bert

PROGRESS_SUBDIR = "progress"


def kmeans_metadata(trained: TrainedW2VBert, layer: int) -> dict:
  """What the fitted centroids expect: the embedding layer and the w2v-BERT that produced it."""
  return {
    "module": "mlm",
    "layer": layer,
    "w2v_bert_dir": os.path.abspath(os.path.dirname(trained.directory)),
    "w2v_bert_step": trained.step,
    "w2v_bert_architecture": architecture.to_json(trained.config),
  }


def _embedding_fn(
  trained: TrainedW2VBert, layer: int, partitioner: Partitioner
) -> Callable[[dict[str, np.ndarray]], tuple[jax.Array, jax.Array]]:
  """batch → (embeddings [b, frames, d], real-frame mask [b, frames]), jitted and sharded."""
  model = W2VBertModel(trained.config)

  def embed(params, audio, audio_mask):
    embeddings = model.embeddings(params, audio, audio_mask, layer=layer)
    return embeddings, frontend.frame_valid(audio_mask, model.config)

  params = jax.device_put(trained.params, partitioner.replicated)
  compiled = jax.jit(embed)

  def apply(batch: dict[str, np.ndarray]) -> tuple[jax.Array, jax.Array]:
    sharded = partitioner.shard_batch(batch)
    with partitioner.activate():
      return compiled(params, sharded["audio"], sharded["audio_mask"])

  return apply


def _w2v_bert_embedding_fn(
  w2v_bert_dir: str, source: AudioSource, layer: int | None, partitioner: Partitioner
) -> tuple[Callable[[dict[str, np.ndarray]], tuple[jax.Array, jax.Array]], int, dict]:
  """(embed, dim, k-means metadata) of a trained w2v-BERT."""
  trained = load_w2v_bert(w2v_bert_dir)
  config = trained.config
  if source.sample_rate != config.sample_rate:
    raise ValueError(
      f"Dataset {source.name} holds {source.sample_rate} Hz audio; w2v-BERT expects "
      f"{config.sample_rate} Hz."
    )
  layer = layer or config.kmeans_layer
  embed = _embedding_fn(trained, layer, partitioner)
  return embed, config.d_model, kmeans_metadata(trained, layer)


def _hubert_embedding_fn(
  model_dir: str,
  sample_rate: int,
  layer: int | None,
  semantic_rate_hz: int,
  partitioner: Partitioner,
) -> tuple[Callable[[dict[str, np.ndarray]], tuple[jax.Array, jax.Array]], int, dict]:
  """(embed, dim, k-means metadata) of an imported HuBERT / MERT, jitted and sharded."""
  from musiclm_jax.tokenizers.hubert import load_hubert
  from musiclm_jax.tokenizers.hubert import semantic as hubert_semantic

  encoder = load_hubert(model_dir)
  config = encoder.config
  layer = config.num_layers // 2 if layer is None else layer
  if not 0 <= layer <= config.num_layers:
    raise ValueError(f"layer {layer} is not in [0, {config.num_layers}] for {model_dir}.")
  frames = hubert_semantic.semantic_frames(config, sample_rate, semantic_rate_hz)

  def embed(params, audio, audio_mask):
    x = hubert_semantic.embeddings(config, frames, layer, params, audio)
    real = audio_mask[:, : x.shape[1] * frames.samples_per_frame].astype(jnp.float32)
    real = real.reshape(x.shape[0], x.shape[1], frames.samples_per_frame).mean(-1) >= 0.5
    return x, real

  params = jax.device_put(encoder.params, partitioner.replicated)
  compiled = jax.jit(embed)

  def apply(batch: dict[str, np.ndarray]) -> tuple[jax.Array, jax.Array]:
    sharded = partitioner.shard_batch(batch)
    with partitioner.activate():
      return compiled(params, sharded["audio"], sharded["audio_mask"])

  step = checkpoints.read_saved_step(os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)).step
  metadata = hubert_semantic.kmeans_metadata(model_dir, step, config, layer, frames)
  return apply, config.hidden_size, metadata


def _saved_model(model_dir: str) -> str | None:
  """The model a model dir's checkpoint holds; None without one (the w2v-BERT loader says so)."""
  directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
  try:
    return checkpoints.read_saved_step(directory).metadata.get("model")
  except FileNotFoundError:
    return None


def _vector_batches(
  embed: Callable[[dict[str, np.ndarray]], tuple[jax.Array, jax.Array]],
  source: AudioSource,
  split: str,
  crop_samples: int,
  batch_size: int,
  seed: int,
  max_batches: int | None,
) -> Callable[[int], Iterator[np.ndarray]]:
  """batches_fn(skip) for `kmeans.fit_kmeans`: real-frame embedding rows [n, d] per audio batch."""

  def batches_fn(skip: int) -> Iterator[np.ndarray]:
    # Without a batch limit, one pass over the split (the crops would otherwise repeat forever).
    crops = audio_batches.host_audio_batches(
      source,
      split,
      crop_samples,
      batch_size,
      seed,
      skip,
      features=("audio", "audio_mask"),
      num_epochs=1 if max_batches is None else None,
    )
    limit = None if max_batches is None else max(max_batches - skip, 0)
    for count, batch in enumerate(crops):
      if limit is not None and count >= limit:
        return
      embeddings, mask = jax.device_get(embed(batch))
      yield np.asarray(embeddings[mask > 0], np.float32)

  return batches_fn


def fit_semantic_kmeans(
  *,
  w2v_bert_dir: str,
  source: AudioSource,
  output_dir: str,
  config: kmeans.KMeansConfig = kmeans.KMeansConfig(),
  layer: int | None = None,
  crop_samples: int = 240_000,
  batch_size: int = 8,
  split: str = "train",
  data_seed: int = 0,
  max_batches: int | None = None,
  semantic_rate_hz: int = 25,
  partitioner: Partitioner | None = None,
  on_start: Callable[[], None] | None = None,
) -> dict[str, float]:
  """Fits the semantic k-means of `w2v_bert_dir`'s model on `source` and saves it to `output_dir`.

  Args:
    w2v_bert_dir: model dir of a trained w2v-BERT (`w2v_bert_train_job`), or of an imported
      HuBERT / MERT.
    source: a TFDS audio dataset at the model's sample rate.
    output_dir: where the fitted k-means is saved (and its resumable progress is kept).
    config: clusters (paper 1024), normalisation, passes, seed.
    layer: 1-based MLM-module layer whose embeddings are clustered (default: the model's
      `kmeans_layer`, paper 7); for HuBERT / MERT, the hidden state 0..num_layers (default the
      middle one).
    crop_samples: audio per example (the default 10 s is a multiple of the 960-sample frame).
    batch_size: global audio batch.
    split: dataset split to fit on; data_seed: crops and shuffling.
    max_batches: audio batches per pass (None: the whole split, once per epoch).
    semantic_rate_hz: HuBERT / MERT only: the token rate its frames are averaged to (w2v-BERT's
      is its own frame).
    partitioner: mesh for the embedding and k-means steps (default: every device on 'data').
    on_start: called on the chief once the w2v-BERT is loaded and checked, before anything is
      written (the train verb writes config.gin here).
  Returns:
    {'inertia_per_vector', 'num_clusters', 'dim'} of the fit, measured on its last batch.
  """
  partitioner = partitioner or Partitioner()
  if _saved_model(w2v_bert_dir) == "hubert":
    embed, dim, metadata = _hubert_embedding_fn(
      w2v_bert_dir, source.sample_rate, layer, semantic_rate_hz, partitioner
    )
  else:
    embed, dim, metadata = _w2v_bert_embedding_fn(w2v_bert_dir, source, layer, partitioner)
  batches_fn = _vector_batches(
    embed, source, split, crop_samples, batch_size, data_seed, max_batches
  )
  if on_start is not None and jax.process_index() == 0:
    on_start()
  fitted = kmeans.fit_kmeans(
    batches_fn,
    dim,
    config,
    partitioner=partitioner,
    checkpoint_dir=os.path.join(output_dir, PROGRESS_SUBDIR),
    metadata=metadata,
    log_fn=logging.info,
  )
  if jax.process_index() == 0:
    fitted.save(output_dir)
  last = next(batches_fn(0))
  inertia = fitted.inertia(jnp.asarray(last)) / max(len(last), 1)
  summary = {"inertia_per_vector": float(inertia), "num_clusters": config.num_clusters}
  print(f"semantic k-means: {summary} → {output_dir}", flush=True)
  return {**summary, "dim": dim}
