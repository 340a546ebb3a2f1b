"""Semantic tokens from an imported HuBERT / MERT: one layer's hidden states → k-means ids.

    audio [batch, n] at the bundle's rate ─► resample to the model's rate (in the program)
      ─► pad (receptive field − hop) on the right ─► hidden_states[layer] at the model's frame rate
      (the first samples // hop frames)
      ─► mean of each `pool` frames ─► [batch, n // samples_per_frame, d] ─► nearest centroid

The stage LMs' token layouts take semantic tokens at one rate (25 Hz in every gin config). HuBERT
gives 50 Hz at 16 kHz and MERT 75 Hz at 24 kHz, so consecutive frames are averaged in groups of 2
or 3 (`pool`), and the streams stay aligned as w2v-BERT's are. The right padding (and dropping
any frame past n_model // hop) makes the frame count n_model // hop, so a clip of n samples gives exactly n // samples_per_frame tokens, as
w2v-BERT does. A model whose frame rate is not a whole multiple of the semantic rate is refused.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax import architecture
from musiclm_jax.tokenizers import kmeans
from musiclm_jax.tokenizers.hubert import model, resample
from musiclm_jax.tokenizers.hubert.config import HubertEncoderConfig

SEMANTIC_MODEL = "hubert"  # the k-means metadata's "semantic_model" for these embeddings


class SemanticFrames(NamedTuple):
  """How the model's frames map onto semantic frames of audio at `sample_rate`.

  Attributes:
    sample_rate: the rate of the audio the tokenizer takes (the bundle's).
    samples_per_frame: input samples per semantic token.
    pool: model frames averaged into one semantic frame.
  """

  sample_rate: int
  samples_per_frame: int
  pool: int


def semantic_frames(
  config: HubertEncoderConfig, sample_rate: int, semantic_rate_hz: int
) -> SemanticFrames:
  """The mapping for audio at `sample_rate` and tokens at `semantic_rate_hz`.

  Raises:
    ValueError: the model's frame rate is not a whole multiple of semantic_rate_hz, or the
      semantic frame is not a whole number of input samples.
  """
  pool = config.frame_rate / semantic_rate_hz
  if pool != int(pool) or pool < 1 or sample_rate % semantic_rate_hz:
    raise ValueError(
      f"A {config.frame_rate:g} Hz {config.model_type} cannot give {semantic_rate_hz} Hz "
      f"semantic tokens of {sample_rate} Hz audio by averaging whole frames."
    )
  return SemanticFrames(sample_rate, sample_rate // semantic_rate_hz, int(pool))


def receptive_field(config: HubertEncoderConfig) -> int:
  field = 1
  for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
    field = (field - 1) * stride + kernel
  return field


def embeddings(
  config: HubertEncoderConfig, frames: SemanticFrames, layer: int, params: Any, audio: jax.Array
) -> jax.Array:
  """[batch, n] at frames.sample_rate -> [batch, n // samples_per_frame, hidden_size] (pure)."""
  audio = resample.resample(audio, frames.sample_rate, config.sample_rate)
  whole_frames = audio.shape[1] // config.hop_length
  audio = jnp.pad(audio, ((0, 0), (0, max(0, receptive_field(config) - config.hop_length))))
  states = model.hidden_states(config, params, audio, num_layers=layer)[layer]
  count = min(states.shape[1], whole_frames) // frames.pool
  pooled = states[:, : count * frames.pool].reshape(states.shape[0], count, frames.pool, -1)
  return pooled.mean(axis=2)


class _RateView(NamedTuple):
  """What the tokenizer bundle reads of a semantic tokenizer's `config`."""

  sample_rate: int
  samples_per_frame: int


class HubertSemanticTokenizer:
  """audio → semantic ids: an imported HuBERT / MERT and the k-means fitted on one layer.

  Offers what `data.token_bundle.TokenizerBundle` uses of w2v-BERT's `SemanticTokenizer`:
  `config.sample_rate`, `config.samples_per_frame`, `vocab_size`, `semantic_tokens`.
  """

  def __init__(
    self,
    config: HubertEncoderConfig,
    params: Any,
    fitted: kmeans.KMeansModel,
    layer: int,
    frames: SemanticFrames,
  ):
    if fitted.dim != config.hidden_size:
      raise ValueError(
        f"The k-means centroids are {fitted.dim}-d; this {config.model_type}'s hidden states "
        f"are {config.hidden_size}-d. Fit the k-means on this model's embeddings."
      )
    if not 0 <= layer <= config.num_layers:
      raise ValueError(f"layer {layer} is not in [0, {config.num_layers}].")
    self.model_config, self.layer, self.kmeans, self.frames = config, layer, fitted, frames
    self.config = _RateView(frames.sample_rate, frames.samples_per_frame)
    self._arguments = jax.device_put((params, fitted.centroids, fitted.mean, fitted.std))
    self._tokens = jax.jit(self.tokens_fn)

  @property
  def vocab_size(self) -> int:
    return self.kmeans.num_clusters

  @property
  def frame_rate(self) -> float:
    return self.frames.sample_rate / self.frames.samples_per_frame

  def tokens_fn(self, params, centroids, mean, std, audio: jax.Array) -> jax.Array:
    """The pure function behind `semantic_tokens`: int32 [batch, n // samples_per_frame]."""
    x = embeddings(self.model_config, self.frames, self.layer, params, audio)
    normalized = kmeans.normalize(x.astype(jnp.float32), self.kmeans.normalization, mean, std)
    ids, _ = kmeans.assign(centroids, normalized.reshape(-1, normalized.shape[-1]))
    return ids.reshape(normalized.shape[:-1]).astype(jnp.int32)

  def semantic_tokens(self, audio: np.ndarray | jax.Array, audio_mask: Any = None) -> np.ndarray:
    """Semantic ids of a batch of whole clips ([batch, n], n ≥ one semantic frame, finite).

    `audio_mask` is accepted for the w2v-BERT tokenizer's signature and must be None or all
    ones: HuBERT attends over the whole clip, so padded clips would change real frames' ids.
    """
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2 or audio.shape[1] < self.frames.samples_per_frame:
      raise ValueError(
        f"audio must be [batch, samples] with at least {self.frames.samples_per_frame} samples; "
        f"got shape {audio.shape}."
      )
    if audio_mask is not None and not np.all(np.asarray(audio_mask) > 0):
      raise ValueError("HuBERT semantic tokens take whole clips: audio_mask must be all ones.")
    bad = ~np.isfinite(audio).all(axis=1)
    if bad.any():
      raise ValueError(f"audio rows {np.flatnonzero(bad).tolist()} hold NaN or inf samples.")
    return np.asarray(self._tokens(*self._arguments, audio))


def kmeans_metadata(
  model_dir: str, step: int, config: HubertEncoderConfig, layer: int, frames: SemanticFrames
) -> dict:
  """What centroids fitted on these embeddings expect (checked when the tokenizer loads)."""
  return {
    "semantic_model": SEMANTIC_MODEL,
    "layer": layer,
    "hubert_dir": os.path.abspath(model_dir),
    "hubert_step": step,
    "hubert_architecture": architecture.to_json(config),
    "semantic_frames": frames._asdict(),
    "semantic_rate_hz": round(frames.sample_rate / frames.samples_per_frame),
  }


def load_hubert_semantic_tokenizer(hubert_dir: str, kmeans_dir: str) -> HubertSemanticTokenizer:
  """The semantic tokenizer of an imported HuBERT / MERT and the k-means fitted on it.

  Raises:
    ValueError: the k-means was fitted on another model's embeddings.
  """
  from musiclm_jax.tokenizers.hubert.encoder import load_hubert

  encoder = load_hubert(hubert_dir)
  fitted = kmeans.KMeansModel.load(kmeans_dir)
  if fitted.metadata.get("hubert_architecture") != architecture.to_json(encoder.config):
    raise ValueError(
      f"The k-means in {kmeans_dir} was not fitted on embeddings of the {encoder.config.model_type} "
      f"in {hubert_dir}; fit it again on this model (fit_semantic_kmeans)."
    )
  frames = SemanticFrames(**fitted.metadata["semantic_frames"])
  return HubertSemanticTokenizer(
    encoder.config, encoder.params, fitted, fitted.metadata["layer"], frames
  )
