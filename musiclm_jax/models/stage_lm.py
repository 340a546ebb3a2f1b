"""The model wrapper of one MusicLM stage (semantic, coarse or fine): a prefix LM over ids.

It owns what the Flax network does not know: the stage's vocabulary layout, the loss, scoring
and sampling (t5x's DecoderOnlyModel role). Batches are the model features of
`seqio.PrefixLMFeatureConverter`: `decoder_target_tokens`, `decoder_input_tokens`,
`decoder_loss_weights`, `decoder_causal_attention`, all [batch, inputs_length + targets_length].

`load_stage_lm(model_dir)` rebuilds a trained stage LM from its checkpoint alone.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax import architecture, checkpoints
from musiclm_jax.decoding import sampling
from musiclm_jax.layers.attention import AttentionMode
from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.layers.decoder import Decoder, unscanned_params
from musiclm_jax.models import losses
from musiclm_jax.models.codebook_logits import TargetCodebooks
from musiclm_jax.stages import PAD_ID, STAGES, StageLayout, TokenSpec

PyTree = Any
Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How a stage samples. Paper: temperature 1.0 / 0.95 / 0.4 (semantic / coarse / fine)."""

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0


class StageLM:
  """Loss, scoring and sampling of a decoder-only stage LM.

  Attributes:
    config: transformer architecture.
    layout: the stage's vocabulary and sequence layout.
    module: the Flax `Decoder`.
    codebook_softmax: normalise each target's probability over its own codebook (the ids of
      its family and level, `StageLayout.codebook_of_id`) instead of the whole vocabulary, in
      the loss, the accuracy and `score_batch`. Sampling always masks to the position's
      codebook; this trains the distribution that sampling draws from, as per-codebook heads do
      (MusicGen), and spares a small model from first learning which id range comes next.
    initial_code_rows: (ids, rows) written into the token embedding and the output projection
      at initialisation (`models.code_embeddings`: the codec's codebooks); None: random.
  """

  def __init__(
    self,
    config: TransformerConfig,
    layout: StageLayout,
    *,
    z_loss: float = 1e-4,
    label_smoothing: float = 0.0,
    sampling_config: SamplingConfig = SamplingConfig(),
    codebook_softmax: bool = False,
    initial_code_rows: tuple[np.ndarray, np.ndarray] | None = None,
  ):
    if codebook_softmax and label_smoothing:
      raise ValueError(
        "StageLM: label_smoothing spreads mass over the whole vocabulary, codebook_softmax "
        "normalises over the target's codebook only; use one of them."
      )
    self.config = config
    self.layout = layout
    self.z_loss = z_loss
    self.label_smoothing = label_smoothing
    self.codebook_softmax = codebook_softmax
    self.sampling_config = sampling_config
    self.initial_code_rows = initial_code_rows
    self.vocab_size = layout.padded_vocab_size()
    self.module = Decoder(config, self.vocab_size)
    # Prefill and decode run the layers unrolled, on `unscanned_params` (see there for why).
    self.inference_module = Decoder(
      dataclasses.replace(config, scan_layers=False, remat_policy="none"), self.vocab_size
    )
    self.target_codebooks = TargetCodebooks.from_layout(layout) if codebook_softmax else None

  @property
  def name(self) -> str:
    return self.layout.stage

  @property
  def sequence_length(self) -> int:
    return self.layout.inputs_length + self.layout.targets_length

  def num_params(self) -> int:
    return self.config.num_params(self.vocab_size)

  def zeros_batch(self, batch_size: int) -> dict[str, jax.Array]:
    """Zero model features of the right shapes (init, AOT compiles, benchmarks)."""
    shape = (batch_size, self.sequence_length)
    return {
      k: jnp.zeros(shape, jnp.int32)
      for k in (
        "decoder_target_tokens",
        "decoder_input_tokens",
        "decoder_loss_weights",
        "decoder_causal_attention",
      )
    }

  def get_initial_variables(self, rng: jax.Array, batch_size: int = 1) -> PyTree:
    """Initial parameters, boxed with their logical axis names ({'params': ...})."""
    tokens = jnp.zeros((batch_size, self.sequence_length), jnp.int32)
    params = self.module.init(rng, tokens, tokens)["params"]
    if self.initial_code_rows is not None:
      params = _with_code_rows(params, *self.initial_code_rows, self.config.d_model)
    return {"params": params}

  def with_initial_code_rows(self, ids: np.ndarray, rows: np.ndarray) -> StageLM:
    """This model, initialised with `rows` at `ids` (see `initial_code_rows`)."""
    model = copy.copy(self)
    model.initial_code_rows = (np.asarray(ids, np.int32), np.asarray(rows, np.float32))
    return model

  def _logits(
    self,
    params: PyTree,
    batch: Batch,
    dropout_rng: jax.Array | None,
    hidden_only: bool = False,
  ) -> jax.Array:
    rngs = None if dropout_rng is None else {"dropout": dropout_rng}
    inputs = batch["decoder_input_tokens"]
    # Keys are input tokens: PAD marks padding, except the BOS (also id 0) at position 0.
    valid_keys = (inputs != PAD_ID) | (jnp.arange(inputs.shape[1]) == 0)[None, :]
    return self.module.apply(
      {"params": params},
      inputs,
      batch["decoder_causal_attention"],
      valid_keys,
      enable_dropout=dropout_rng is not None,
      hidden_only=hidden_only,
      rngs=rngs,
    )

  def _codebook_logits_and_targets(
    self, params: PyTree, batch: Batch, dropout_rng: jax.Array | None
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logits over each target's codebook [b, codebooks, positions, size], local targets and
    weights [b, codebooks, positions]): the target positions only (stage tasks put no loss on
    the prefix), a target outside its codebook (PAD) weighing nothing."""
    start = self.layout.inputs_length
    hidden = self._logits(params, batch, dropout_rng, hidden_only=True)[:, start:]
    codebooks = self.target_codebooks
    logits = codebooks.logits(hidden, params["logits_dense"]["kernel"])
    targets, inside = codebooks.local_targets(batch["decoder_target_tokens"][:, start:])
    weights = codebooks.group(batch["decoder_loss_weights"][:, start:]) * inside
    return logits, targets, weights

  def _scored(
    self, params: PyTree, batch: Batch, dropout_rng: jax.Array | None
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logits, targets, weights) of the loss: over each target's codebook at the target
    positions (`codebook_softmax`), else over the whole vocabulary at every position."""
    if self.target_codebooks is not None:
      return self._codebook_logits_and_targets(params, batch, dropout_rng)
    logits = self._logits(params, batch, dropout_rng)
    return logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"]

  def loss_fn(
    self,
    params: PyTree,
    batch: Batch,
    dropout_rng: jax.Array | None,
    loss_normalizer: jax.Array | float | None = None,
    step: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy on target positions only.

    Args:
      params: unboxed parameters.
      batch: model features [batch, length].
      dropout_rng: key for dropout, or None for deterministic evaluation.
      loss_normalizer: divide the summed loss by this (the trainer passes the whole batch's
        weight so microbatch gradients add up exactly); default: this batch's weight.
      step: unused (no loss schedule).
    Returns:
      (scalar loss, metrics of summed quantities: loss_sum, z_loss_sum, correct_sum, weight_sum).
    """
    logits, targets, weights = self._scored(params, batch, dropout_rng)
    weights = weights.astype(jnp.float32)
    token_loss, token_z = losses.cross_entropy_with_logits(
      logits, targets, z_loss=self.z_loss, label_smoothing=self.label_smoothing
    )
    weight_sum = jnp.sum(weights)
    normalizer = jnp.maximum(weight_sum, 1.0) if loss_normalizer is None else loss_normalizer
    loss_sum = losses.weighted_sum(token_loss, weights)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    metrics = {
      "loss_sum": loss_sum,
      "z_loss_sum": losses.weighted_sum(token_z, weights),
      "correct_sum": losses.weighted_sum(correct, weights),
      "weight_sum": weight_sum,
    }
    return loss_sum / normalizer, metrics

  def loss_normalizer(self, batch: Batch) -> jax.Array:
    """The whole batch's target weight: the trainer divides every microbatch's loss by it."""
    return jnp.maximum(jnp.sum(batch["decoder_loss_weights"]).astype(jnp.float32), 1.0)

  def summarize_metrics(self, summed: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-token loss, z-loss and accuracy from summed metrics."""
    weight = jnp.maximum(summed["weight_sum"], 1.0)
    return {
      "loss": summed["loss_sum"] / weight,
      "z_loss": summed["z_loss_sum"] / weight,
      "accuracy": summed["correct_sum"] / weight,
      "num_tokens": summed["weight_sum"],
    }

  def score_batch(self, params: PyTree, batch: Batch) -> jax.Array:
    """Log-likelihood of each example's targets: [batch] float32 (no z-loss or smoothing)."""
    logits, targets, weights = self._scored(params, batch, None)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    target_lp = jnp.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    per_token = target_lp * weights
    return jnp.sum(per_token.reshape(per_token.shape[0], -1), axis=-1)

  def init_cache(self, batch_size: int, length: int | None = None) -> PyTree:
    """An empty KV cache for `batch_size` sequences of up to `length` (default: full stage)."""
    length = length or self.sequence_length
    tokens = jnp.zeros((batch_size, length), jnp.int32)
    init = functools.partial(self.inference_module.init, mode=AttentionMode.DECODE)
    shapes = jax.eval_shape(lambda: init(jax.random.key(0), tokens, tokens)["cache"])
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.unbox(shapes))

  def prompt_tokens(self, inputs: jax.Array) -> jax.Array:
    """[batch, inputs_length] stage input ids -> decoder prompt [batch, inputs_length + 1] (BOS first)."""
    return jnp.pad(inputs, ((0, 0), (1, 0)))

  def prefill(
    self, params: PyTree, prompt: jax.Array, cache_length: int | None = None
  ) -> tuple[jax.Array, PyTree]:
    """Runs a whole prompt in one pass (full attention inside it) into a fresh KV cache.

    Args:
      prompt: [batch, prompt_length] decoder input ids (BOS first).
      cache_length: cache capacity (default: the stage's full sequence).
    Returns:
      (logits predicting the token after the prompt [batch, vocab], filled cache).
    """
    cache = self.init_cache(prompt.shape[0], cache_length)
    logits, variables = self.inference_module.apply(
      {"params": unscanned_params(params, self.config), "cache": cache},
      prompt,
      jnp.ones_like(prompt),
      mode=AttentionMode.PREFILL,
      mutable=["cache"],
    )
    return logits[:, -1], variables["cache"]

  def tokens_to_logits_fn(self, params: PyTree) -> sampling.TokensToLogits:
    """The sampler's callback: one token per call through the KV cache."""

    params = unscanned_params(params, self.config)  # once, outside the sampler's loop

    def tokens_to_logits(tokens: jax.Array, cache: PyTree) -> tuple[jax.Array, PyTree]:
      step_logits, new_vars = self.inference_module.apply(
        {"params": params, "cache": cache}, tokens, mode=AttentionMode.DECODE, mutable=["cache"]
      )
      return step_logits[:, 0], new_vars["cache"]

    return tokens_to_logits

  def predict_batch(
    self,
    params: PyTree,
    inputs: jax.Array,
    rng: jax.Array,
    *,
    sampling_config: SamplingConfig | None = None,
    forced_targets: jax.Array | None = None,
    forced_mask: jax.Array | None = None,
  ) -> sampling.SamplingOutput:
    """Samples the targets of each example with the KV cache.

    The prompt (BOS + inputs) is prefilled in one pass with full attention inside the prefix,
    then targets are decoded one per step inside `lax.while_loop`, each constrained to the id
    range its position allows (`StageLayout.target_id_ranges`).

    Args:
      params: unboxed parameters.
      inputs: [batch, inputs_length] int32 stage input ids.
      rng: PRNG key.
      sampling_config: overrides the model's default sampling settings.
      forced_targets, forced_mask: [batch, targets_length]: emit these targets where the mask is
        True (continuation of a given target prefix).
    Returns:
      SamplingOutput with tokens [batch, targets_length].
    """
    cfg = sampling_config or self.sampling_config
    last_logits, cache = self.prefill(params, self.prompt_tokens(inputs))
    return sampling.temperature_sample(
      last_logits,
      cache,
      self.tokens_to_logits_fn(params),
      rng,
      self.layout.targets_length,
      temperature=cfg.temperature,
      top_k=cfg.top_k,
      top_p=cfg.top_p,
      forced_tokens=forced_targets,
      forced_mask=forced_mask,
      allowed_id_ranges=jnp.asarray(self.layout.target_id_ranges(), jnp.int32),
    )

  def continue_batch(
    self,
    params: PyTree,
    inputs: jax.Array,
    known_targets: jax.Array,
    rng: jax.Array,
    num_new: int,
    *,
    sampling_config: SamplingConfig | None = None,
    unconditional_inputs: jax.Array | None = None,
    guidance_scale: float = 1.0,
  ) -> sampling.SamplingOutput:
    """Samples `num_new` targets after `known_targets` (a window of long generation).

    The prompt BOS + inputs + known targets is prefilled in one pass, then the new targets are
    decoded one per step with the KV cache, each in the id range of its target position.

    Args:
      params: unboxed parameters.
      inputs: [batch, inputs_length] stage input ids.
      known_targets: [batch, K] ids of the first K targets (K may be 0).
      rng: a PRNG key, or one key per example ([batch]): then an example's tokens depend on
        its own key only, not on its batch-mates.
      num_new: static, >= 1; K + num_new <= targets_length.
      sampling_config: overrides the model's default.
      unconditional_inputs, guidance_scale: classifier-free guidance. With a scale != 1 the
        logits are uncond + scale · (cond - uncond), uncond coming from `unconditional_inputs`
        (the conditioning replaced by PAD, as conditioning dropout trains it).
    Returns:
      SamplingOutput with tokens [batch, num_new].
    """
    cfg = sampling_config or self.sampling_config
    known = known_targets.shape[1]
    if num_new < 1 or known + num_new > self.layout.targets_length:
      raise ValueError(
        f"{self.layout.stage}: {known} known + {num_new} new targets exceed the stage's "
        f"{self.layout.targets_length}"
      )
    guided = guidance_scale != 1.0
    if guided and unconditional_inputs is None:
      raise ValueError("guidance_scale != 1 needs unconditional_inputs")
    prompt = jnp.concatenate([self.prompt_tokens(inputs), known_targets], axis=1)
    if guided:
      uncond = jnp.concatenate([self.prompt_tokens(unconditional_inputs), known_targets], axis=1)
      prompt = jnp.concatenate([prompt, uncond], axis=0)
    last_logits, cache = self.prefill(params, prompt)
    tokens_to_logits = self.tokens_to_logits_fn(params)
    if guided:
      last_logits = _guide(last_logits, guidance_scale)
      tokens_to_logits = _guided_tokens_to_logits(tokens_to_logits, guidance_scale)
    ranges = self.layout.target_id_ranges()[known : known + num_new]
    return sampling.temperature_sample(
      last_logits,
      cache,
      tokens_to_logits,
      rng,
      num_new,
      temperature=cfg.temperature,
      top_k=cfg.top_k,
      top_p=cfg.top_p,
      allowed_id_ranges=jnp.asarray(ranges, jnp.int32),
    )

  def full_sequence_logits(
    self, params: PyTree, inputs: jax.Array, targets: jax.Array
  ) -> jax.Array:
    """Logits predicting every target, from one full (uncached) forward pass.

    Args:
      inputs: [batch, inputs_length]; targets: [batch, targets_length] ids.
    Returns:
      [batch, targets_length, vocab] float32: row t predicts targets[:, t].
    """
    sequence = jnp.concatenate([inputs, targets], axis=1)
    decoder_inputs = jnp.pad(sequence, ((0, 0), (1, 0)))[:, :-1]
    prefix = jnp.arange(sequence.shape[1]) <= self.layout.inputs_length
    causal = jnp.broadcast_to(prefix, sequence.shape).astype(jnp.int32)
    logits = self.module.apply({"params": params}, decoder_inputs, causal)
    return logits[:, self.layout.inputs_length :]


def train_flops_per_token(
  config: TransformerConfig, vocab_size: int, sequence_length: int
) -> float:
  """Model FLOPs of one training token (forward + backward), PaLM appendix B convention.

  6 × (matmul parameters) + 12 × layers × heads × head_dim × sequence_length; the attention term
  counts the full (unmasked) score matrix, as MFU figures in the literature do.
  """
  per_layer = (
    4 * config.d_model * config.num_heads * config.head_dim + 3 * config.d_model * config.d_ff
  )
  matmul_params = config.num_layers * per_layer + config.d_model * vocab_size
  attention = 12 * config.num_layers * config.num_heads * config.head_dim * sequence_length
  return 6.0 * matmul_params + attention


def _guide(logits: jax.Array, scale: float) -> jax.Array:
  """[2B, vocab] logits of (conditional; unconditional) rows → [B, vocab] guided logits."""
  cond, uncond = jnp.split(logits.astype(jnp.float32), 2, axis=0)
  return uncond + scale * (cond - uncond)


def _guided_tokens_to_logits(
  tokens_to_logits: sampling.TokensToLogits, scale: float
) -> sampling.TokensToLogits:
  """Feeds each chosen token to both halves of a doubled cache and guides the logits."""

  def guided(tokens: jax.Array, cache: PyTree) -> tuple[jax.Array, PyTree]:
    logits, cache = tokens_to_logits(jnp.concatenate([tokens, tokens], axis=0), cache)
    return _guide(logits, scale), cache

  return guided


def load_stage_lm(model_dir: str, step: int | None = None) -> tuple[StageLM, PyTree, int]:
  """(model, params on the host, step) of a trained stage LM, rebuilt from its checkpoint alone.

  The architecture and layout come from the checkpoint's metadata (the stage LM job's
  `model_metadata`); the sampling settings are the caller's (the decoding pipeline sets each
  stage's).

  Raises:
    FileNotFoundError: no complete checkpoint in `model_dir/checkpoints`.
    CheckpointMismatchError: the checkpoint is not a stage LM.
  """
  directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
  saved, tree, step = checkpoints.restore_trained(directory, STAGES, "a stage LM", step=step)
  layout = saved.get("layout")
  if layout is None or layout.get("stage") != saved["model"]:
    raise checkpoints.CheckpointMismatchError(
      f"{directory} holds no stage LM layout for its {saved['model']!r} model."
    )
  model = StageLM(
    architecture.from_json(TransformerConfig, saved["architecture"]),
    StageLayout(layout["stage"], TokenSpec(**layout["tokens"]), layout["crop_seconds"]),
    codebook_softmax=saved.get("codebook_softmax", False),
  )
  return model, tree["params"], step


def _with_code_rows(params: PyTree, ids: np.ndarray, rows: np.ndarray, width: int) -> PyTree:
  """`rows` (unit RMS) into the embedding table and, scaled to its fan-in init, the logits kernel.

  The same vectors in and out: an id's logit starts as the similarity of the final hidden state
  to that code's vector, so copying a code's embedding forward predicts it and its neighbours.
  """
  if rows.shape != (len(ids), width):
    raise ValueError(f"initial code rows of shape {rows.shape}, expected ({len(ids)}, {width}).")
  if len(ids) == 0:
    return params
  params = dict(params)
  table = params["token_embedding"]
  params["token_embedding"] = table.replace_boxed(table.unbox().at[ids].set(rows))
  logits = dict(params["logits_dense"])
  kernel = logits["kernel"]
  logits["kernel"] = kernel.replace_boxed(kernel.unbox().at[:, ids].set(rows.T / np.sqrt(width)))
  params["logits_dense"] = logits
  return params
