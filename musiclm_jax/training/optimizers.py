"""Optimizers and learning-rate schedules as optax chains."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("constant", "rsqrt", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer, schedule and clipping.

  Attributes:
    name: 'adamw' or 'adafactor' (factored second moments: the memory-light T5 choice).
    learning_rate: peak learning rate (after warmup).
    schedule: 'constant', 'rsqrt' (T5: linear warmup then lr * sqrt(warmup / step)) or 'cosine'
      (linear warmup then cosine decay to end_learning_rate_ratio * lr at decay_steps).
    warmup_steps: linear warmup length.
    decay_steps: total steps of the cosine schedule.
    end_learning_rate_ratio: final lr / peak lr for cosine.
    b1, b2, eps: Adam moments (b1 also Adafactor's momentum when > 0).
    weight_decay: decoupled weight decay.
    clip_grad_norm: clip gradients to this global norm (0 disables).
  """

  name: str = "adamw"
  learning_rate: float = 1e-3
  schedule: str = "rsqrt"
  warmup_steps: int = 1000
  decay_steps: int = 100_000
  end_learning_rate_ratio: float = 0.1
  b1: float = 0.9
  b2: float = 0.98
  eps: float = 1e-9
  weight_decay: float = 0.01
  clip_grad_norm: float = 1.0

  def __post_init__(self):
    if self.name not in OPTIMIZERS:
      raise ValueError(f"OptimizerConfig.name {self.name!r} is not one of {OPTIMIZERS}.")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"OptimizerConfig.schedule {self.schedule!r} is not one of {SCHEDULES}.")


def make_schedule(config: OptimizerConfig) -> optax.Schedule:
  """The learning rate as a function of the step."""
  lr, warmup = config.learning_rate, max(config.warmup_steps, 0)
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=lr,
      warmup_steps=warmup,
      decay_steps=max(config.decay_steps, warmup + 1),
      end_value=lr * config.end_learning_rate_ratio,
    )

  def schedule(step):
    step = jnp.asarray(step, jnp.float32) + 1.0
    ramp = jnp.minimum(1.0, step / warmup) if warmup else 1.0
    if config.schedule == "constant":
      return lr * ramp
    return lr * ramp * jnp.sqrt(max(warmup, 1) / jnp.maximum(step, max(warmup, 1)))

  return schedule


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  """optax.chain(clip, optimizer) for `config`."""
  schedule = make_schedule(config)
  if config.name == "adamw":
    opt = optax.adamw(
      schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay
    )
  else:
    opt = optax.adafactor(
      schedule,
      momentum=config.b1 if config.b1 > 0 else None,
      weight_decay_rate=config.weight_decay or None,
      multiply_by_parameter_scale=False,
    )
  parts = [optax.clip_by_global_norm(config.clip_grad_norm)] if config.clip_grad_norm > 0 else []
  return optax.chain(*parts, opt)
