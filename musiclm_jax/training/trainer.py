"""Jit-compiled, sharded train and eval steps: train_step = apply_grads ∘ compute_grads.

The trainer compiles; the job runner (`training/runner.py`, `training/loop.py`) drives it. A model
is anything that follows `TrainableModel` (t5x's BaseModel role): the stage LMs and the w2v-BERT
semantic model both do.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import optax

from musiclm_jax.partitioning import Partitioner

PyTree = Any
Batch = Mapping[str, jax.Array]


class TrainableModel(Protocol):
  """What the trainer needs of a model wrapper.

  `loss_fn` returns (loss, metrics) where every metric is a sum that adds across microbatches
  and batches (at least `loss_sum`); `summarize_metrics` turns such sums into reported means
  (at least `loss`). `loss_normalizer(batch)` is what the whole batch's summed loss is divided
  by, so microbatch gradients add up to the full-batch gradient exactly. `step` lets a loss
  follow a schedule (e.g. a Gumbel temperature); None means its final value.
  """

  def get_initial_variables(self, rng: jax.Array, batch_size: int = 1) -> PyTree: ...

  def loss_fn(
    self,
    params: PyTree,
    batch: Batch,
    dropout_rng: jax.Array | None,
    loss_normalizer: jax.Array | float | None = None,
    step: jax.Array | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]: ...

  def loss_normalizer(self, batch: Batch) -> jax.Array: ...

  def summarize_metrics(self, summed: Mapping[str, jax.Array]) -> dict[str, jax.Array]: ...

  def zeros_batch(self, batch_size: int) -> dict[str, jax.Array]: ...


class TrainState(flax.struct.PyTreeNode):
  """Everything a resumed run needs besides the data position.

  `rng` is raw key data (uint32), so checkpoints hold plain arrays.
  """

  step: jax.Array
  params: PyTree
  opt_state: PyTree
  rng: jax.Array


def all_finite(tree: PyTree) -> jax.Array:
  """Scalar bool: every leaf of `tree` is finite (the NaN guard of both trainers)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class Trainer:
  """Compiles the train/eval steps of `model` on `partitioner`'s mesh.

  Args:
    model: the model wrapper.
    optimizer: an optax transformation (see `optimizers.make_optimizer`).
    partitioner: mesh and logical rules.
    batch_size: global batch size.
    num_microbatches: gradient accumulation steps per batch (batch_size must divide).
    learning_rate_fn: schedule reported in metrics (optional).
  """

  def __init__(
    self,
    model: TrainableModel,
    optimizer: optax.GradientTransformation,
    partitioner: Partitioner,
    *,
    batch_size: int,
    num_microbatches: int = 1,
    learning_rate_fn: optax.Schedule | None = None,
  ):
    if batch_size % num_microbatches:
      raise ValueError(
        f"batch_size {batch_size} is not divisible by num_microbatches {num_microbatches}."
      )
    micro = batch_size // num_microbatches
    if micro % partitioner.data_parallel_size:
      raise ValueError(
        f"Microbatch {micro} (batch {batch_size} / {num_microbatches} microbatches) is not "
        f"divisible by the data-parallel degree {partitioner.data_parallel_size} of mesh "
        f"{dict(partitioner.mesh.shape)}."
      )
    self.model = model
    self.optimizer = optimizer
    self.partitioner = partitioner
    self.batch_size = batch_size
    self.num_microbatches = num_microbatches
    self.learning_rate_fn = learning_rate_fn
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
      in_shardings=(self.state_shardings.params, self.batch_shardings),
      out_shardings=partitioner.replicated,
    )

  # --- state -------------------------------------------------------------------------------

  def _init_state(self, rng_data: jax.Array) -> TrainState:
    rng = jax.random.wrap_key_data(rng_data)
    init_rng, train_rng = jax.random.split(rng)
    params = self.model.get_initial_variables(init_rng)["params"]
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=self.optimizer.init(params),
      rng=jax.random.key_data(train_rng),
    )

  def init_state(self, seed: int) -> TrainState:
    """A fresh train state, created directly in its shardings."""
    state, _ = self.partitioner.init_sharded(
      self._init_state, jax.random.key_data(jax.random.key(seed))
    )
    return state

  # --- steps -------------------------------------------------------------------------------

  def compute_grads(
    self, params: PyTree, batch: Batch, rng: jax.Array, step: jax.Array | None = None
  ) -> tuple[PyTree, dict[str, jax.Array]]:
    """Gradients of the whole batch's normalised loss, accumulated over microbatches.

    Every microbatch loss is divided by the whole batch's `model.loss_normalizer`, so the
    summed gradients equal the full-batch gradient exactly.
    """
    normalizer = self.model.loss_normalizer(batch)
    loss_fn = functools.partial(self.model.loss_fn, step=step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if self.num_microbatches == 1:
      (_, metrics), grads = grad_fn(params, batch, rng, normalizer)
      return grads, metrics

    def split(x):
      x = x.reshape((self.num_microbatches, -1) + x.shape[1:])
      return x

    micro_batches = jax.tree.map(split, batch)

    def accumulate(carry, inputs):
      index, micro = inputs
      (_, metrics), grads = grad_fn(params, micro, jax.random.fold_in(rng, index), normalizer)
      return jax.tree.map(jnp.add, carry, (grads, metrics)), None

    zero_grads = jax.tree.map(jnp.zeros_like, params)
    zero_metrics = jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype),
      jax.eval_shape(
        lambda: grad_fn(params, jax.tree.map(lambda x: x[0], micro_batches), rng, normalizer)[0][1]
      ),
    )
    indices = jnp.arange(self.num_microbatches)
    (grads, metrics), _ = jax.lax.scan(
      accumulate, (zero_grads, zero_metrics), (indices, micro_batches)
    )
    return grads, metrics

  def apply_grads(
    self, state: TrainState, grads: PyTree, metrics: dict[str, jax.Array]
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    """Optimizer update, skipped entirely when the loss or any gradient is not finite.

    A skipped step keeps params and optimizer state, so a NaN never reaches a checkpoint; the
    step counter still advances (the data moves on) and `nonfinite` reports it.
    """
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(metrics["loss_sum"]) & jnp.isfinite(grad_norm)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    new_state = state.replace(
      step=state.step + 1,
      params=keep(params, state.params),
      opt_state=keep(opt_state, state.opt_state),
    )
    summary = dict(self.model.summarize_metrics(metrics))
    summary["grad_norm"] = grad_norm
    summary["param_norm"] = optax.global_norm(new_state.params)
    summary["nonfinite"] = 1.0 - finite.astype(jnp.float32)
    if self.learning_rate_fn is not None:
      summary["learning_rate"] = self.learning_rate_fn(state.step)
    return new_state, summary

  def _train_step_impl(self, state: TrainState, batch: Batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grads, metrics = self.compute_grads(state.params, batch, rng, state.step)
    return self.apply_grads(state, grads, metrics)

  def _eval_step_impl(self, params: PyTree, batch: Batch) -> dict[str, jax.Array]:
    _, metrics = self.model.loss_fn(params, batch, None)
    return metrics

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a global batch (arrays already sharded, or host numpy)."""
    with self.partitioner.activate():
      return self._train_step(state, batch)

  def eval_step(self, params: PyTree, batch: Batch) -> dict[str, jax.Array]:
    """Summed eval metrics of one batch (add across batches, then `summarize_eval`)."""
    with self.partitioner.activate():
      return self._eval_step(params, batch)

  def evaluate(
    self, params: PyTree, batches: Iterable[Batch], num_batches: int, what: str
  ) -> dict[str, float]:
    """Reported eval metrics over the first `num_batches` of `batches` (host numpy batches).

    Raises:
      ValueError: `batches` (described by `what` in the message) yields no batch.
    """
    summed = None
    for _, batch in zip(range(num_batches), batches, strict=False):
      metrics = self.eval_step(params, self.partitioner.shard_batch(batch))
      summed = metrics if summed is None else jax.tree.map(lambda a, b: a + b, summed, metrics)
    if summed is None:
      raise ValueError(f"{what} produced no batch of {self.batch_size}.")
    return self.summarize_eval(jax.device_get(summed))

  def summarize_eval(self, summed: Mapping[str, jax.Array]) -> dict[str, float]:
    """Reported eval metrics from metrics summed over batches."""
    return {k: float(v) for k, v in self.model.summarize_metrics(summed).items()}

  def lower_train_step(self):
    """The lowered train step on abstract inputs (AOT compile, FLOP counts)."""
    abstract_batch = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      self.model.zeros_batch(self.batch_size),
      self.batch_shardings,
    )
    with self.partitioner.activate():
      return self._train_step.lower(self.abstract_state, abstract_batch)
