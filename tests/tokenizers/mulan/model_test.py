"""The MuLan module's learned logit scale (init, clipping, gradient) and its config checks.

The towers' forward passes are tested through the model wrapper (tests/models/mulan_test.py).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.tokenizers.mulan.config import MuLanConfig
from musiclm_jax.tokenizers.mulan.model import MuLan
from tests.size_configs import size_config

CONFIG = size_config("mulan", "tiny")


def _scale(config: MuLanConfig, params: dict) -> jax.Array:
  return MuLan(config).apply({"params": params}, method=MuLan.logit_scale)


def test_logit_scale_starts_at_one_over_the_initial_temperature():
  variables = MuLan(CONFIG).init(jax.random.key(0), method=MuLan.logit_scale)
  log_scale = variables["params"]["log_scale"]
  assert log_scale.names == ()  # a logically partitioned (replicated) scalar
  np.testing.assert_allclose(log_scale.value, math.log(1 / 0.07), rtol=1e-6)
  np.testing.assert_allclose(_scale(CONFIG, {"log_scale": log_scale.value}), 1 / 0.07, rtol=1e-5)


@pytest.mark.parametrize(
  "log_scale, scale, has_grad",
  [(10.0, 100.0, False), (-1.0, 1.0, False), (math.log(20.0), 20.0, True)],
)
def test_logit_scale_is_clipped_to_one_and_the_max(log_scale, scale, has_grad):
  value, grad = jax.value_and_grad(lambda s: _scale(CONFIG, {"log_scale": s}))(
    jnp.float32(log_scale)
  )
  np.testing.assert_allclose(value, scale, rtol=1e-5)
  assert (float(grad) != 0.0) == has_grad  # learned inside the range, frozen at the clip


def test_fixed_temperature_has_no_parameter():
  config = dataclasses.replace(CONFIG, learn_temperature=False, initial_temperature=0.1)
  variables = MuLan(config).init(jax.random.key(0), method=MuLan.logit_scale)
  assert "log_scale" not in variables.get("params", {})
  np.testing.assert_allclose(_scale(config, {}), 10.0, rtol=1e-6)


def test_config_checks():
  with pytest.raises(ValueError, match="must be equal"):
    MuLanConfig(audio=CONFIG.audio, text=CONFIG.text, embed_dim=64)
  with pytest.raises(ValueError, match="initial_temperature"):
    dataclasses.replace(CONFIG, initial_temperature=0.001)
  assert CONFIG.audio.embed_dim == CONFIG.text.embed_dim == 128
