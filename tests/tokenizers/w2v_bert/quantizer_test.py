"""Gumbel quantizer: hard codes forward, straight-through gradients back, temperature annealing."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.tokenizers.w2v_bert.quantizer import GumbelQuantizer, gumbel_temperature

QUANTIZER = GumbelQuantizer(codebook_size=8, codebook_dim=4)
X = jnp.asarray(np.random.RandomState(0).randn(2, 5, 6), jnp.float32)


@functools.cache
def _params():
  return nn.unbox(QUANTIZER.init(jax.random.key(0), X)["params"])


def _apply(params, x, *, deterministic, temperature=1.0, seed=0):
  return QUANTIZER.apply(
    {"params": params},
    x,
    temperature,
    deterministic=deterministic,
    rngs={"gumbel": jax.random.key(seed)},
  )


def test_deterministic_codes_are_the_argmax_of_the_logits():
  params = _params()
  out = jax.jit(functools.partial(_apply, deterministic=True))(params, X)
  logits = np.einsum("bfe,ev->bfv", X, params["logits"]["kernel"])
  np.testing.assert_array_equal(out.ids, logits.argmax(-1))
  np.testing.assert_allclose(out.quantized, params["codebook"][out.ids], atol=1e-6)
  np.testing.assert_array_equal(out.sampled_ids, out.ids)
  np.testing.assert_allclose(out.probs.sum(-1), 1.0, atol=1e-5)


def test_training_codes_are_hard_with_straight_through_gradients():
  params = _params()
  weights = jnp.asarray(np.random.RandomState(1).randn(2, 5, 4), jnp.float32)

  def objective(params, x):
    out = _apply(params, x, deterministic=False, temperature=0.7)
    return jnp.sum(out.quantized * weights), out

  (_, out), (param_grads, x_grad) = jax.jit(
    jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)
  )(params, X)
  # Forward: exactly the sampled codebook row; `ids` stay the noise-free argmax.
  np.testing.assert_allclose(out.quantized, params["codebook"][out.sampled_ids], atol=1e-6)
  logits = np.einsum("bfe,ev->bfv", X, params["logits"]["kernel"])
  np.testing.assert_array_equal(out.ids, logits.argmax(-1))
  # Backward: gradients reach the input and the logit projection through the soft sample.
  assert np.abs(x_grad).max() > 1e-4
  assert np.abs(param_grads["logits"]["kernel"]).max() > 1e-4
  assert np.abs(param_grads["codebook"]).max() > 1e-4
  # Gumbel noise: another key picks other codes somewhere.
  other = jax.jit(functools.partial(_apply, deterministic=False, temperature=0.7, seed=5))(
    params, X
  )
  assert np.any(np.asarray(other.sampled_ids) != np.asarray(out.sampled_ids))


def test_temperature_anneals_from_start_to_end():
  temps = [float(gumbel_temperature(s, 2.0, 0.5, 100)) for s in (0, 25, 50, 100, 1000)]
  np.testing.assert_allclose(temps[0], 2.0)
  np.testing.assert_allclose(temps[2], 1.0, rtol=1e-6)  # geometric midpoint
  np.testing.assert_allclose(temps[3:], 0.5, rtol=1e-6)
  assert all(a > b for a, b in zip(temps[:4], temps[1:4]))
  assert float(gumbel_temperature(None, 2.0, 0.5, 100)) == 0.5
