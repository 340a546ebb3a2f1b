"""Semantic tokens: w2v-BERT MLM-layer embeddings → k-means ids at 25 Hz (DESIGN §2).

    audio [batch, samples] ─► W2VBert.embeddings(layer) ─► normalise ─► nearest centroid
                              [batch, samples // 960, d_model]           ids [batch, frames]

One jitted program per input shape does the whole chain on the device; the centroids and the
normalisation statistics are arguments, not baked-in constants, so a new k-means does not
recompile. Build one with `load_semantic_tokenizer(w2v_bert_dir, kmeans_dir)`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from musiclm_jax import architecture, checkpoints
from musiclm_jax.tokenizers import kmeans
from musiclm_jax.tokenizers.w2v_bert import frontend
from musiclm_jax.tokenizers.w2v_bert.config import W2VBertConfig
from musiclm_jax.tokenizers.w2v_bert.load import load_w2v_bert
from musiclm_jax.tokenizers.w2v_bert.model import W2VBert

PyTree = Any


class SemanticTokenizer:
  """audio → semantic ids: a trained w2v-BERT and the k-means fitted on one of its MLM layers.

  Args:
    config: the w2v-BERT architecture.
    params: its (unboxed) parameters.
    fitted: the k-means fitted on layer `layer`'s embeddings of this model.
    layer: 1-based MLM layer the centroids were fitted on.
  """

  def __init__(self, config: W2VBertConfig, params: PyTree, fitted: kmeans.KMeansModel, layer: int):
    if fitted.dim != config.d_model:
      raise ValueError(
        f"The k-means centroids are {fitted.dim}-d; this w2v-BERT's embeddings are "
        f"{config.d_model}-d. Fit the k-means on this model's embeddings."
      )
    if not 1 <= layer <= config.num_mlm_layers:
      raise ValueError(f"layer {layer} is not an MLM layer (1..{config.num_mlm_layers}).")
    self.config, self.layer, self.kmeans = config, layer, fitted
    self._arguments = jax.device_put(
      (params, fitted.centroids, fitted.mean, fitted.std), jax.local_devices()[0]
    )
    self._tokens = jax.jit(self.tokens_fn)

  @property
  def vocab_size(self) -> int:
    return self.kmeans.num_clusters

  @property
  def frame_rate(self) -> float:
    """Semantic frames per second (25 Hz at 24 kHz)."""
    return self.config.sample_rate / self.config.samples_per_frame

  def num_frames(self, num_samples: int) -> int:
    return frontend.num_frames(num_samples, self.config)

  def tokens_fn(
    self,
    params: PyTree,
    centroids: jax.Array,
    mean: jax.Array,
    std: jax.Array,
    audio: jax.Array,
    audio_mask: jax.Array,
  ) -> jax.Array:
    """The pure function behind `semantic_tokens`, to compose inside other jitted programs.

    Returns:
      int32 [batch, samples // 960].
    """
    return semantic_ids(
      self.config,
      self.layer,
      self.kmeans.normalization,
      params,
      centroids,
      mean,
      std,
      audio,
      audio_mask,
    )

  def semantic_tokens(
    self, audio: np.ndarray | jax.Array, audio_mask: np.ndarray | jax.Array | None = None
  ) -> np.ndarray:
    """Semantic ids of a batch of audio.

    Args:
      audio: float [batch, samples] at config.sample_rate, finite.
      audio_mask: [batch, samples], 1 on real samples (None: all real). Frames that are mostly
        padding still get ids; `frontend.frame_valid` says which frames are real.
    Returns:
      int32 [batch, samples // 960] in [0, vocab_size).
    Raises:
      ValueError: audio that is not [batch, samples], shorter than one frame, or not finite.
    """
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2:
      raise ValueError(f"audio must be [batch, samples]; got shape {audio.shape}.")
    self.num_frames(audio.shape[1])  # raises on audio shorter than one frame
    bad = ~np.isfinite(audio).all(axis=1)
    if bad.any():
      raise ValueError(
        f"audio rows {np.flatnonzero(bad).tolist()} hold NaN or inf samples; semantic tokens of "
        "them would be meaningless. Drop or repair those clips."
      )
    mask = np.ones_like(audio) if audio_mask is None else np.asarray(audio_mask, np.float32)
    if mask.shape != audio.shape:
      raise ValueError(f"audio_mask shape {mask.shape} differs from audio shape {audio.shape}.")
    return np.asarray(self._tokens(*self._arguments, audio, mask))


def semantic_ids(
  config: W2VBertConfig,
  layer: int,
  normalization: str,
  params: PyTree,
  centroids: jax.Array,
  mean: jax.Array,
  std: jax.Array,
  audio: jax.Array,
  audio_mask: jax.Array,
) -> jax.Array:
  """audio [batch, samples] → int32 ids [batch, samples // 960] (pure; jit and eval_shape it).

  Args:
    config, layer: the w2v-BERT and the 1-based MLM layer the centroids were fitted on.
    normalization, mean, std: how embeddings map into the centroids' space (`kmeans.normalize`).
    params: the w2v-BERT's unboxed parameters.
    centroids: [clusters, d_model].
    audio, audio_mask: [batch, samples].
  """
  embeddings = W2VBert(config).apply(
    {"params": params}, audio, audio_mask, layer, method=W2VBert.embeddings
  )
  normalized = kmeans.normalize(embeddings.astype(jnp.float32), normalization, mean, std)
  ids, _ = kmeans.assign(centroids, normalized.reshape(-1, normalized.shape[-1]))
  return ids.reshape(normalized.shape[:-1]).astype(jnp.int32)


def _holds_hubert(model_dir: str) -> bool:
  try:
    saved = checkpoints.read_saved_step(os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR))
  except FileNotFoundError:
    return False  # load_w2v_bert names what is missing
  return saved.metadata.get("model") == "hubert"


def load_semantic_tokenizer(w2v_bert_dir: str, kmeans_dir: str) -> SemanticTokenizer:
  """The semantic tokenizer of a trained w2v-BERT and the k-means fitted on its embeddings.

  A `w2v_bert_dir` that holds an imported HuBERT / MERT gives its tokenizer instead
  (`tokenizers.hubert.semantic.HubertSemanticTokenizer`, same interface).

  Args:
    w2v_bert_dir: the w2v-BERT job's model dir (or an imported HuBERT / MERT's).
    kmeans_dir: where the semantic k-means job saved the fitted centroids.

  Raises:
    FileNotFoundError: no w2v-BERT checkpoint, or no fitted k-means.
    ValueError: the k-means was fitted on another architecture's embeddings or another layer
      count/width than this w2v-BERT has (refit it with the semantic k-means job).
  """
  if _holds_hubert(w2v_bert_dir):
    from musiclm_jax.tokenizers.hubert.semantic import load_hubert_semantic_tokenizer

    return load_hubert_semantic_tokenizer(w2v_bert_dir, kmeans_dir)
  trained = load_w2v_bert(w2v_bert_dir)
  fitted = kmeans.KMeansModel.load(kmeans_dir)
  saved = fitted.metadata.get("w2v_bert_architecture")
  if saved != architecture.to_json(trained.config):
    raise ValueError(
      f"The k-means in {kmeans_dir} was fitted on embeddings of another w2v-BERT architecture "
      f"than the one in {w2v_bert_dir}; fit it again on this model (fit_semantic_kmeans)."
    )
  if fitted.metadata.get("w2v_bert_step") != trained.step:
    logging.warning(
      "k-means in %s was fitted on w2v-BERT step %s; %s is at step %d.",
      kmeans_dir,
      fitted.metadata.get("w2v_bert_step"),
      w2v_bert_dir,
      trained.step,
    )
  return SemanticTokenizer(trained.config, trained.params, fitted, fitted.metadata["layer"])
