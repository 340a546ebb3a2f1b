"""The semantic k-means job: cluster a trained w2v-BERT's embeddings into the semantic vocabulary.

`fit_semantic_kmeans()` is what `musiclm-jax train` runs for gin/runs/semantic_kmeans_rendered.gin.
It streams audio crops of a dataset through the trained w2v-BERT (jitted, batch sharded over the
data axis), keeps the hidden states of one MLM layer at every real (non-padding) frame, and fits
mini-batch k-means on them in bounded memory. Progress is checkpointed, so a killed job resumes
where it stopped. The result, saved in `output_dir`, records the layer, the normalisation and the
w2v-BERT checkpoint it expects; `tokenizers.w2v_bert.semantic.load_semantic_tokenizer` refuses
any other pairing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from musiclm_jax import architecture
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
  partitioner: Partitioner | None = None,
  on_start: Callable[[], None] | None = None,
) -> dict[str, float]:
  """Fits the semantic k-means of `w2v_bert_dir`'s model on `source` and saves it to `output_dir`.

  Args:
    w2v_bert_dir: model dir of a trained w2v-BERT (`w2v_bert_train_job`).
    source: a TFDS audio dataset at the model's sample rate.
    output_dir: where the fitted k-means is saved (and its resumable progress is kept).
    config: clusters (paper 1024), normalisation, passes, seed.
    layer: 1-based MLM-module layer whose embeddings are clustered (default: the model's
      `kmeans_layer`, paper 7).
    crop_samples: audio per example (the default 10 s is a multiple of the 960-sample frame).
    batch_size: global audio batch.
    split: dataset split to fit on; data_seed: crops and shuffling.
    max_batches: audio batches per pass (None: the whole split, once per epoch).
    partitioner: mesh for the embedding and k-means steps (default: every device on 'data').
    on_start: called on the chief once the w2v-BERT is loaded and checked, before anything is
      written (the train verb writes config.gin here).
  Returns:
    {'inertia_per_vector', 'num_clusters', 'dim'} of the fit, measured on its last batch.
  """
  partitioner = partitioner or Partitioner()
  trained = load_w2v_bert(w2v_bert_dir)
  model = W2VBertModel(trained.config)
  if source.sample_rate != model.config.sample_rate:
    raise ValueError(
      f"Dataset {source.name} holds {source.sample_rate} Hz audio; w2v-BERT expects "
      f"{model.config.sample_rate} Hz."
    )
  layer = layer or model.config.kmeans_layer
  embed = _embedding_fn(trained, layer, partitioner)
  batches_fn = _vector_batches(
    embed, source, split, crop_samples, batch_size, data_seed, max_batches
  )
  metadata = kmeans_metadata(trained, layer)
  if on_start is not None and jax.process_index() == 0:
    on_start()
  fitted = kmeans.fit_kmeans(
    batches_fn,
    model.config.d_model,
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
  return {**summary, "dim": model.config.d_model}
