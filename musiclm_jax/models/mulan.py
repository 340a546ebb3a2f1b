"""The model wrapper of MuLan contrastive training, driven by the core trainer.

Batches pair an audio crop with its caption: `audio` [batch, crop_samples] float at 24 kHz,
`audio_mask` [batch, crop_samples] (1 on real samples; padding is zeroed), `text_ids`
[batch, max_length] int32 and `text_mask` [batch, max_length] (1 on real tokens). An example is
valid when it has some audio and some text; invalid slots (e.g. the end of an eval set) get no
loss and are no one's negative.

Loss = symmetric InfoNCE (`contrastive.clip_loss`) over the batch `loss_fn` is given, summed over
valid examples and divided by `loss_normalizer` (the valid count of the global batch). Under
`jit` with the batch sharded over the data axes, the [B, B] logits span every device's examples:
the negatives of an example come from the whole global batch. With gradient accumulation
(`num_microbatches` > 1) each microbatch only sees its own examples as negatives — the loss is
then the mean of per-microbatch InfoNCE losses, not the global-batch InfoNCE (as in CLIP
implementations that accumulate gradients naively); `loss_fn` is exact for the batch it gets.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax.models import contrastive
from musiclm_jax.tokenizers.mulan import audio_tower
from musiclm_jax.tokenizers.mulan.config import MuLanConfig
from musiclm_jax.tokenizers.mulan.load import MODEL_NAME
from musiclm_jax.tokenizers.mulan.model import MuLan

PyTree = Any
Batch = Mapping[str, jax.Array]


class MuLanModel:
  """Contrastive loss, metrics and embeddings of MuLan.

  Attributes:
    config: architecture and objective.
    crop_samples: audio samples per training example (default: one audio-tower window).
    module: the Flax `MuLan`.
  """

  name = MODEL_NAME  # what load_mulan accepts

  def __init__(self, config: MuLanConfig, crop_samples: int | None = None):
    crop = config.audio.window_samples if crop_samples is None else int(crop_samples)
    if crop < config.audio.n_fft:
      raise ValueError(
        f"crop_samples={crop} is shorter than the audio tower's n_fft={config.audio.n_fft}."
      )
    self.config = config
    self.crop_samples = crop
    self.module = MuLan(config)

  @property
  def max_length(self) -> int:
    """Caption tokens per example."""
    return self.config.text.max_length

  @functools.cached_property
  def _num_params(self) -> int:
    shapes = jax.eval_shape(self.get_initial_variables, jax.random.key(0))["params"]
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(shapes)))

  def num_params(self) -> int:
    """Parameters of both towers and the logit scale (by shape evaluation, nothing allocated)."""
    return self._num_params

  def zeros_batch(self, batch_size: int) -> dict[str, jax.Array]:
    """Zero features of the right shapes (init, AOT compiles, benchmarks)."""
    audio = (batch_size, self.crop_samples)
    text = (batch_size, self.max_length)
    return {
      "audio": jnp.zeros(audio, jnp.float32),
      "audio_mask": jnp.zeros(audio, jnp.float32),
      "text_ids": jnp.zeros(text, jnp.int32),
      "text_mask": jnp.zeros(text, jnp.int32),
    }

  def get_initial_variables(self, rng: jax.Array, batch_size: int = 1) -> PyTree:
    """Initial parameters, boxed with their logical axis names ({'params': ...})."""
    batch = self.zeros_batch(batch_size)
    variables = self.module.init(
      rng, batch["audio"], batch["text_ids"], jnp.ones_like(batch["text_mask"]), deterministic=True
    )
    return {"params": variables["params"]}

  def _valid(self, batch: Batch) -> jax.Array:
    """bool [batch]: the example has audio and a caption."""
    has_audio = jnp.any(batch["audio_mask"] != 0, axis=-1)
    return has_audio & jnp.any(batch["text_mask"] != 0, axis=-1)

  def loss_normalizer(self, batch: Batch) -> jax.Array:
    """Valid examples (at least 1): what the summed loss is divided by."""
    return jnp.maximum(jnp.sum(self._valid(batch).astype(jnp.float32)), 1.0)

  def loss_fn(
    self,
    params: PyTree,
    batch: Batch,
    dropout_rng: jax.Array | None,
    loss_normalizer: jax.Array | float | None = None,
    step: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Symmetric InfoNCE over the (global) batch.

    Args:
      params: unboxed parameters.
      batch: {'audio', 'audio_mask'} [batch, samples], {'text_ids', 'text_mask'} [batch, L].
      dropout_rng: dropout key; None for deterministic evaluation.
      loss_normalizer: divide the summed loss by this (default: this batch's valid count).
      step: unused (the objective has no schedule).
    Returns:
      (scalar loss, metrics of summed quantities, see `summarize_metrics`).
    """
    del step
    deterministic = dropout_rng is None
    audio = batch["audio"].astype(jnp.float32) * batch["audio_mask"].astype(jnp.float32)
    audio_emb, text_emb, scale = self.module.apply(
      {"params": params},
      audio,
      batch["text_ids"],
      batch["text_mask"],
      deterministic=deterministic,
      rngs=None if deterministic else {"dropout": dropout_rng},
    )
    valid = self._valid(batch)
    out = contrastive.clip_loss(audio_emb, text_emb, scale, valid)
    weight = valid.astype(jnp.float32)
    num_examples = jnp.sum(weight)
    metrics = {
      "loss_sum": jnp.sum(out.loss),
      "audio_to_text_loss_sum": jnp.sum(out.audio_to_text_loss),
      "text_to_audio_loss_sum": jnp.sum(out.text_to_audio_loss),
      "audio_to_text_correct_sum": jnp.sum(out.audio_to_text_correct),
      "text_to_audio_correct_sum": jnp.sum(out.text_to_audio_correct),
      "matched_cosine_sum": jnp.sum(contrastive.mcc(text_emb, audio_emb) * weight),
      "logit_scale_sum": scale * num_examples,
      "num_examples": num_examples,
    }
    normalizer = jnp.maximum(num_examples, 1.0) if loss_normalizer is None else loss_normalizer
    return metrics["loss_sum"] / normalizer, metrics

  def summarize_metrics(self, summed: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-example means from metrics summed over (micro)batches.

    `matched_cosine` is the MCC of the training pairs; `temperature` is 1 / logit scale.
    """
    examples = jnp.maximum(summed["num_examples"], 1.0)
    scale = summed["logit_scale_sum"] / examples
    return {
      "loss": summed["loss_sum"] / examples,
      "audio_to_text_loss": summed["audio_to_text_loss_sum"] / examples,
      "text_to_audio_loss": summed["text_to_audio_loss_sum"] / examples,
      "audio_to_text_accuracy": summed["audio_to_text_correct_sum"] / examples,
      "text_to_audio_accuracy": summed["text_to_audio_correct_sum"] / examples,
      "matched_cosine": summed["matched_cosine_sum"] / examples,
      "logit_scale": scale,
      "temperature": 1.0 / jnp.maximum(scale, 1e-6),
      "num_examples": summed["num_examples"],
    }

  def embed_audio(self, params: PyTree, audio: jax.Array) -> jax.Array:
    """[batch, samples] windows (one each) -> float32 [batch, embed_dim] unit vectors."""
    return self.module.apply({"params": params}, audio, method=MuLan.embed_audio)

  def clip_embedding(
    self, params: PyTree, audio: jax.Array, windows_per_call: int | None = None
  ) -> jax.Array:
    """The paper's clip embedding: mean over windows (10 s, 1 s hop in the paper), normalised.

    Args:
      params: unboxed parameters.
      audio: [batch, samples] clips of equal length (shorter than a window: zero-padded).
      windows_per_call: bound on windows embedded at once (see `audio_tower.clip_embedding`).
    Returns:
      float32 [batch, embed_dim] unit vectors.
    """
    cfg = self.config.audio
    return audio_tower.clip_embedding(
      functools.partial(self.embed_audio, params),
      audio,
      cfg.window_samples,
      cfg.hop_samples,
      windows_per_call=windows_per_call,
    )

  def embed_text(self, params: PyTree, token_ids: jax.Array, mask: jax.Array) -> jax.Array:
    """[batch, length] int32 ids and mask -> float32 [batch, embed_dim] unit vectors."""
    return self.module.apply({"params": params}, token_ids, mask, method=MuLan.embed_text)
