"""Jit-compiled, sharded adversarial train steps: a generator and a discriminator, two optimizers.

Both players are updated in one compiled step (the codec's recipe, as in SoundStream/EnCodec):
the generator's gradients are taken against the current discriminator, the discriminator's
against the generator's output of the same step (stopped). The generator may also carry
non-gradient state (the RVQ's EMA codebooks) that its loss returns updated.

A model is anything with the `AdversarialModel` methods; the trainer knows nothing of audio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import optax

from musiclm_jax.partitioning import Partitioner
from musiclm_jax.training.optimizers import OptimizerConfig, make_optimizer, make_schedule
from musiclm_jax.training.trainer import all_finite

PyTree = Any
Batch = Mapping[str, jax.Array]
GENERATOR = "generator"
DISCRIMINATOR = "discriminator"


class AdversarialModel(Protocol):
  def get_initial_variables(self, rng: jax.Array) -> dict[str, PyTree]:
    """{'generator': {'params', ...state}, 'discriminator': {'params'}}."""

  def generator_loss(
    self,
    params: PyTree,
    state: PyTree,
    disc_params: PyTree,
    batch: Batch,
    rng: jax.Array,
    step: jax.Array,
  ) -> tuple[jax.Array, tuple[dict[str, jax.Array], PyTree, jax.Array]]:
    """(loss, (metrics, new generator state, generated output))."""

  def discriminator_loss(
    self, params: PyTree, batch: Batch, fake: jax.Array, step: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]: ...

  def eval_metrics(self, params: PyTree, state: PyTree, batch: Batch) -> dict[str, jax.Array]:
    """Batch-mean metrics of the generator alone (no state change)."""

  def zeros_batch(self, batch_size: int) -> dict[str, jax.Array]: ...


class GanTrainState(flax.struct.PyTreeNode):
  """Everything a resumed adversarial run needs besides the data position.

  Attributes:
    params: {'generator': ..., 'discriminator': ...} gradient-trained parameters.
    model_state: the generator's other variables (e.g. {'quantizer': EMA codebooks}).
    opt_state: {'generator': ..., 'discriminator': ...}.
    rng: raw key data (uint32), so checkpoints hold plain arrays.
  """

  step: jax.Array
  params: PyTree
  model_state: PyTree
  opt_state: PyTree
  rng: jax.Array


def _split_generator_variables(variables: PyTree) -> tuple[PyTree, PyTree]:
  variables = dict(variables)
  return variables.pop("params"), variables


class GanTrainer:
  """Compiles the adversarial train step and the generator's eval step on a mesh.

  Args:
    model: the adversarial model wrapper.
    optimizers: {'generator': optax transform, 'discriminator': optax transform}.
    partitioner: mesh and logical rules (state is laid out from the params' logical axes;
      unannotated parameters are replicated).
    batch_size: global batch size.
    learning_rate_fns: schedules reported in metrics, keyed like `optimizers` (optional).
  """

  def __init__(
    self,
    model: AdversarialModel,
    optimizers: Mapping[str, optax.GradientTransformation],
    partitioner: Partitioner,
    *,
    batch_size: int,
    learning_rate_fns: Mapping[str, optax.Schedule] | None = None,
  ):
    if set(optimizers) != {GENERATOR, DISCRIMINATOR}:
      raise ValueError(f"optimizers needs keys {GENERATOR!r} and {DISCRIMINATOR!r}.")
    if batch_size % partitioner.data_parallel_size:
      raise ValueError(
        f"batch_size {batch_size} is not divisible by the data-parallel degree "
        f"{partitioner.data_parallel_size} of mesh {dict(partitioner.mesh.shape)}."
      )
    self.model, self.optimizers, self.partitioner = model, dict(optimizers), partitioner
    self.batch_size = batch_size
    self.learning_rate_fns = dict(learning_rate_fns or {})
    self.abstract_state, self.state_shardings = partitioner.abstract_and_shardings(
      self._init_state, jax.random.key_data(jax.random.key(0))
    )
    self.batch_shardings = jax.tree.map(
      lambda x: partitioner.batch_sharding(x.ndim), model.zeros_batch(batch_size)
    )
    self._train_step = jax.jit(
      self._train_step_impl,
      in_shardings=(self.state_shardings, self.batch_shardings),
      out_shardings=(self.state_shardings, partitioner.replicated),
      donate_argnums=(0,),
    )
    self._eval_step = jax.jit(
      self._eval_step_impl,
      in_shardings=(self.state_shardings, self.batch_shardings),
      out_shardings=partitioner.replicated,
    )

  def _init_state(self, rng_data: jax.Array) -> GanTrainState:
    init_rng, train_rng = jax.random.split(jax.random.wrap_key_data(rng_data))
    variables = self.model.get_initial_variables(init_rng)
    gen_params, model_state = _split_generator_variables(variables[GENERATOR])
    params = {GENERATOR: gen_params, DISCRIMINATOR: variables[DISCRIMINATOR]["params"]}
    return GanTrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      model_state=model_state,
      opt_state={name: self.optimizers[name].init(params[name]) for name in params},
      rng=jax.random.key_data(train_rng),
    )

  def init_state(self, seed: int) -> GanTrainState:
    """A fresh train state, created directly in its shardings."""
    state, _ = self.partitioner.init_sharded(
      self._init_state, jax.random.key_data(jax.random.key(seed))
    )
    return state

  def compute_grads(
    self, state: GanTrainState, batch: Batch, rng: jax.Array
  ) -> tuple[dict[str, PyTree], PyTree, dict[str, jax.Array]]:
    """Both players' gradients for one batch: (grads by player, new model state, metrics)."""
    gen_grad_fn = jax.value_and_grad(self.model.generator_loss, has_aux=True)
    (gen_loss, (gen_metrics, model_state, fake)), gen_grads = gen_grad_fn(
      state.params[GENERATOR],
      state.model_state,
      state.params[DISCRIMINATOR],
      batch,
      rng,
      state.step,
    )
    disc_grad_fn = jax.value_and_grad(self.model.discriminator_loss, has_aux=True)
    (disc_loss, disc_metrics), disc_grads = disc_grad_fn(
      state.params[DISCRIMINATOR], batch, jax.lax.stop_gradient(fake), state.step
    )
    metrics = {"generator_loss": gen_loss, "discriminator_loss": disc_loss}
    metrics.update({f"generator/{k}": v for k, v in gen_metrics.items()})
    metrics.update({f"discriminator/{k}": v for k, v in disc_metrics.items()})
    return {GENERATOR: gen_grads, DISCRIMINATOR: disc_grads}, model_state, metrics

  def apply_grads(
    self, state: GanTrainState, grads: dict[str, PyTree], model_state: PyTree, metrics: dict
  ) -> tuple[GanTrainState, dict[str, jax.Array]]:
    """Both optimizer updates, skipped together when any loss, gradient or state is not finite.

    A skipped step keeps params, optimizer and model state (a NaN never reaches a checkpoint);
    the step counter still advances and `nonfinite` reports it.
    """
    losses = (metrics["generator_loss"], metrics["discriminator_loss"])
    finite = all_finite((losses, grads, model_state))
    new_params, new_opt_state = {}, {}
    for name, optimizer in self.optimizers.items():
      updates, new_opt_state[name] = optimizer.update(
        grads[name], state.opt_state[name], state.params[name]
      )
      new_params[name] = optax.apply_updates(state.params[name], updates)
      metrics[f"{name}/grad_norm"] = optax.global_norm(grads[name])
      metrics[f"{name}/param_norm"] = optax.global_norm(state.params[name])
      if name in self.learning_rate_fns:
        metrics[f"{name}/learning_rate"] = self.learning_rate_fns[name](state.step)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    new_state = state.replace(
      step=state.step + 1,
      params=keep(new_params, state.params),
      model_state=keep(model_state, state.model_state),
      opt_state=keep(new_opt_state, state.opt_state),
    )
    metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
    return new_state, metrics

  def _train_step_impl(self, state: GanTrainState, batch: Batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grads, model_state, metrics = self.compute_grads(state, batch, rng)
    return self.apply_grads(state, grads, model_state, metrics)

  def _eval_step_impl(self, state: GanTrainState, batch: Batch) -> dict[str, jax.Array]:
    return self.model.eval_metrics(state.params[GENERATOR], state.model_state, batch)

  def train_step(
    self, state: GanTrainState, batch: Batch
  ) -> tuple[GanTrainState, dict[str, jax.Array]]:
    """One update of both players on a global batch (arrays already sharded, or host numpy)."""
    with self.partitioner.activate():
      return self._train_step(state, batch)

  def eval_step(self, state: GanTrainState, batch: Batch) -> dict[str, jax.Array]:
    """Batch-mean generator metrics (average across batches)."""
    with self.partitioner.activate():
      return self._eval_step(state, batch)


def make_gan_trainer(
  model: AdversarialModel,
  partitioner: Partitioner,
  batch_size: int,
  generator_optimizer: OptimizerConfig,
  discriminator_optimizer: OptimizerConfig,
) -> GanTrainer:
  """A GAN trainer with one optax optimizer (and learning-rate schedule) per player."""
  configs = {GENERATOR: generator_optimizer, DISCRIMINATOR: discriminator_optimizer}
  return GanTrainer(
    model,
    {name: make_optimizer(c) for name, c in configs.items()},
    partitioner,
    batch_size=batch_size,
    learning_rate_fns={name: make_schedule(c) for name, c in configs.items()},
  )
