"""Model features of a stage LM batch, as `seqio.PrefixLMFeatureConverter` + stage_tasks build them."""

from __future__ import annotations

import jax.numpy as jnp

from musiclm_jax import stages


def prefix_lm_features(layout: stages.StageLayout, inputs, targets) -> dict:
  """{decoder_target_tokens, decoder_input_tokens, decoder_loss_weights, decoder_causal_attention}
  for [batch, inputs_length] inputs and [batch, targets_length] target ids."""
  sequence = jnp.concatenate([jnp.asarray(inputs), jnp.asarray(targets)], axis=1)
  positions = jnp.broadcast_to(jnp.arange(sequence.shape[1]), sequence.shape)
  return {
    "decoder_target_tokens": sequence,
    "decoder_input_tokens": jnp.pad(sequence, ((0, 0), (1, 0)))[:, :-1],
    "decoder_loss_weights": (positions >= layout.inputs_length).astype(jnp.int32),
    "decoder_causal_attention": (positions <= layout.inputs_length).astype(jnp.int32),
  }
