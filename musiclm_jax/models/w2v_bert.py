"""The model wrapper of w2v-BERT pre-training, driven by the core trainer.

It owns what the Flax network does not know: the masking policy, the negatives, the losses and
their metrics. Batches are raw audio crops: `audio` [batch, crop_samples] float at 24 kHz and
`audio_mask` [batch, crop_samples], 1 on real samples.

Loss of an example = mlm_weight · (mean MLM cross-entropy over its masked frames)
+ contrastive_weight · (mean InfoNCE over its masked frames) + diversity_weight · (its codebook
diversity loss). The batch loss is the sum over examples divided by `loss_normalizer`, the number
of examples with audio in the *global* batch, so microbatch gradients add up exactly. Masks and
negatives are drawn per example from a key folded with the example's audio (`masking.
example_keys`), so an example is treated alike in any microbatch or shard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from musiclm_jax.tokenizers.w2v_bert import frontend, losses, masking
from musiclm_jax.tokenizers.w2v_bert.config import W2VBertConfig
from musiclm_jax.tokenizers.w2v_bert.load import MODEL_NAME
from musiclm_jax.tokenizers.w2v_bert.model import W2VBert, W2VBertOutput
from musiclm_jax.tokenizers.w2v_bert.quantizer import gumbel_temperature

PyTree = Any
Batch = Mapping[str, jax.Array]

_EVAL_SEED = 0


class W2VBertModel:
  """Loss, metrics and embeddings of w2v-BERT.

  Attributes:
    config: architecture and objectives.
    crop_samples: samples per training example (shapes of `zeros_batch`).
    module: the Flax `W2VBert`.
  """

  name = MODEL_NAME  # what load_w2v_bert accepts

  def __init__(self, config: W2VBertConfig, crop_samples: int = 24000):
    frontend.num_frames(crop_samples, config)  # fails early on crops shorter than a frame
    self.config = config
    self.crop_samples = crop_samples
    self.module = W2VBert(config)

  def num_frames(self, num_samples: int) -> int:
    """Frames (and semantic ids) of `num_samples` of audio: num_samples // 960 at 24 kHz."""
    return self.config.num_frames(num_samples)

  def num_params(self) -> int:
    return self.config.num_params()

  def zeros_batch(self, batch_size: int) -> dict[str, jax.Array]:
    """Zero features of the right shapes (init, AOT compiles, benchmarks)."""
    shape = (batch_size, self.crop_samples)
    return {"audio": jnp.zeros(shape, jnp.float32), "audio_mask": jnp.zeros(shape, jnp.float32)}

  def get_initial_variables(self, rng: jax.Array, batch_size: int = 1) -> PyTree:
    """Initial parameters, boxed with their logical axis names ({'params': ...})."""
    audio = jnp.zeros((batch_size, self.crop_samples), jnp.float32)
    masked = jnp.zeros((batch_size, self.num_frames(self.crop_samples)), bool)
    variables = self.module.init(rng, audio, jnp.ones_like(audio), masked, deterministic=True)
    return {"params": variables["params"]}

  def loss_normalizer(self, batch: Batch) -> jax.Array:
    """Examples with at least one real frame (at least 1): what the summed loss is divided by."""
    return jnp.maximum(jnp.sum(self._example_weights(batch)), 1.0)

  def _example_weights(self, batch: Batch) -> jax.Array:
    valid = frontend.frame_valid(batch["audio_mask"], self.config)
    return jnp.any(valid, axis=-1).astype(jnp.float32)

  def _forward(
    self, params: PyTree, batch: Batch, dropout_rng: jax.Array | None, step: jax.Array | None
  ) -> tuple[W2VBertOutput, jax.Array, jax.Array]:
    """Masks, runs the network and draws negatives.

    Returns:
      (network outputs, masked [batch, frames] bool, negatives key per example [batch]).
    """
    cfg = self.config
    deterministic = dropout_rng is None
    base = jax.random.key(_EVAL_SEED) if deterministic else dropout_rng
    mask_key, negative_key, network_key = jax.random.split(base, 3)
    audio = batch["audio"]
    valid = frontend.frame_valid(batch["audio_mask"], cfg)
    masked = masking.span_mask(
      masking.example_keys(mask_key, audio, batch["audio_mask"]),
      valid,
      mask_prob=cfg.mask_prob,
      span_length=cfg.mask_span_length,
      min_spans=cfg.min_masked_spans,
    )
    temperature = gumbel_temperature(
      None if deterministic else step,
      cfg.gumbel_temperature_start,
      cfg.gumbel_temperature_end,
      cfg.gumbel_temperature_decay_steps,
    )
    rngs = None
    if not deterministic:
      dropout_key, gumbel_key = jax.random.split(network_key)
      rngs = {"dropout": dropout_key, "gumbel": gumbel_key}
    outputs = self.module.apply(
      {"params": params},
      audio,
      batch["audio_mask"],
      masked,
      temperature=temperature,
      deterministic=deterministic,
      rngs=rngs,
    )
    return outputs, masked, masking.example_keys(negative_key, audio, batch["audio_mask"])

  def loss_fn(
    self,
    params: PyTree,
    batch: Batch,
    dropout_rng: jax.Array | None,
    loss_normalizer: jax.Array | float | None = None,
    step: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MLM + contrastive + diversity loss.

    Args:
      params: unboxed parameters.
      batch: {'audio', 'audio_mask'} [batch, samples].
      dropout_rng: key for masking, negatives, dropout and Gumbel noise; None for
        deterministic evaluation (no dropout or noise, masks from a fixed key).
      loss_normalizer: divide the summed loss by this (the trainer passes the global batch's
        `loss_normalizer`); default: this batch's.
      step: training step for the Gumbel temperature (None: the final temperature).
    Returns:
      (scalar loss, metrics of summed quantities, see `summarize_metrics`).
    """
    cfg = self.config
    outputs, masked, negative_keys = self._forward(params, batch, dropout_rng, step)
    negatives, negatives_valid = losses.sample_negatives(negative_keys, masked, cfg.num_negatives)
    contrastive, contrastive_correct = losses.contrastive_loss(
      outputs.context,
      outputs.quantized,
      outputs.sampled_ids,
      negatives,
      negatives_valid,
      cfg.contrastive_temperature,
    )
    mlm, mlm_correct = losses.cross_entropy(outputs.mlm_logits, jax.lax.stop_gradient(outputs.ids))
    example = jnp.any(outputs.valid, axis=-1).astype(jnp.float32)
    per_example = {
      "mlm_loss_sum": losses.per_example_mean(mlm, masked),
      "contrastive_loss_sum": losses.per_example_mean(contrastive, masked),
      "diversity_loss_sum": losses.diversity_loss(outputs.code_probs, outputs.valid),
      "codebook_perplexity_sum": losses.codebook_perplexity(outputs.code_probs, outputs.valid),
    }
    metrics = {k: jnp.sum(v * example) for k, v in per_example.items()}
    metrics["loss_sum"] = (
      cfg.mlm_weight * metrics["mlm_loss_sum"]
      + cfg.contrastive_weight * metrics["contrastive_loss_sum"]
      + cfg.diversity_weight * metrics["diversity_loss_sum"]
    )
    masked_f = masked.astype(jnp.float32)
    metrics["mlm_correct_sum"] = jnp.sum(mlm_correct * masked_f)
    metrics["contrastive_correct_sum"] = jnp.sum(contrastive_correct * masked_f)
    metrics["masked_frames_sum"] = jnp.sum(masked_f)
    metrics["valid_frames_sum"] = jnp.sum(outputs.valid.astype(jnp.float32))
    metrics["num_examples"] = jnp.sum(example)
    normalizer = jnp.maximum(jnp.sum(example), 1.0) if loss_normalizer is None else loss_normalizer
    return metrics["loss_sum"] / normalizer, metrics

  def summarize_metrics(self, summed: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-example and per-masked-frame means from metrics summed over (micro)batches."""
    examples = jnp.maximum(summed["num_examples"], 1.0)
    frames = jnp.maximum(summed["masked_frames_sum"], 1.0)
    return {
      "loss": summed["loss_sum"] / examples,
      "mlm_loss": summed["mlm_loss_sum"] / examples,
      "contrastive_loss": summed["contrastive_loss_sum"] / examples,
      "diversity_loss": summed["diversity_loss_sum"] / examples,
      "codebook_perplexity": summed["codebook_perplexity_sum"] / examples,
      "mlm_accuracy": summed["mlm_correct_sum"] / frames,
      "contrastive_accuracy": summed["contrastive_correct_sum"] / frames,
      "masked_fraction": summed["masked_frames_sum"] / jnp.maximum(summed["valid_frames_sum"], 1.0),
      "num_examples": summed["num_examples"],
    }

  def embeddings(
    self,
    params: PyTree,
    audio: jax.Array,
    audio_mask: jax.Array | None = None,
    layer: int | None = None,
  ) -> jax.Array:
    """Hidden states of MLM layer `layer` (1-based, default config.kmeans_layer), unmasked.

    Args:
      params: unboxed parameters.
      audio: [batch, samples] float at 24 kHz; audio_mask: [batch, samples] or None.
    Returns:
      [batch, samples // 960, d_model].
    """
    return self.module.apply(
      {"params": params}, audio, audio_mask, layer, method=W2VBert.embeddings
    )
