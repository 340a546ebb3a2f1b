"""One runner for every training job: restore, hooks, loop, evaluation, final metrics.

A job (`jobs/stage_lm.py`, `jobs/codec.py`, `jobs/w2v_bert.py`, `jobs/mulan.py`) builds its
trainer and says only what differs in a `TrainJob`: its checkpoint metadata, its batches, how to
evaluate and describe a step. `run` owns the rest, in an order that keeps `model_dir` honest:

1. open `model_dir/checkpoints` and restore the newest complete step, or refuse a checkpoint of
   another model (`CheckpointMismatchError`) *before anything is written into `model_dir`*;
2. `on_start` (the verb writes config.gin here), the TensorBoard writer, hparams on a fresh run;
3. the step loop (`loop.TrainLoop`): logs, periodic evaluation every `eval_every_steps`, log
   hooks (e.g. audio summaries), checkpoints, non-finite aborts, preemption;
4. a preempted run (SIGTERM) has saved its step and raises `Preempted`: no final evaluation, no
   final metrics, the verb exits non-zero; rerunning the command resumes;
5. otherwise the final evaluation and `final_metrics.json`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from clu import metric_writers

from musiclm_jax.checkpoints import CHECKPOINT_SUBDIR, CheckpointConfig, Checkpointer
from musiclm_jax.training import loop

PyTree = Any


class Preempted(RuntimeError):
  """The job was asked to stop (SIGTERM); its state is saved and rerunning resumes it."""

  def __init__(self, step: int, directory: str):
    super().__init__(
      f"preempted at step {step}; saved in {directory}. Run the same command again to resume."
    )
    self.step, self.directory = step, directory


@dataclasses.dataclass(frozen=True)
class TrainJob:
  """What one training job says; everything else is the runner's.

  Attributes:
    trainer: compiles and applies steps (`init_state`, `train_step`, `abstract_state`).
    metadata: what a checkpoint must match to be restored (model name, architecture, ...).
    batches: skip -> this host's batches, starting after `skip` already-consumed batches.
    throughput: what one step consumes, for items/s and MFU.
    console_line: formats a log line from (step, num_steps, scalars).
    evaluate: state -> eval metrics (unprefixed); None: the job does not evaluate.
    hparams: written to TensorBoard once, on a fresh run.
    on_fresh_state: applied to a newly initialised state (not to a restored one), e.g. to
      graft imported weights.
    log_hooks: called as hook(step, state, writer) at every log point (chief and others).
  """

  trainer: loop.SteppingTrainer
  metadata: Mapping[str, Any]
  batches: Callable[[int], Iterator[dict[str, np.ndarray]]]
  throughput: loop.Throughput
  console_line: Callable[[int, int, Mapping[str, float]], str]
  evaluate: Callable[[PyTree], Mapping[str, float]] | None = None
  hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  on_fresh_state: Callable[[PyTree], PyTree] | None = None
  log_hooks: tuple[Callable[[int, PyTree, Any], None], ...] = ()


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """The settings every training job shares (each job's gin-bound arguments of the same names).

  Attributes:
    model_dir: checkpoints (`model_dir/checkpoints`), TensorBoard events, final metrics.
    num_steps: total optimizer steps (a resumed job runs the remainder).
    checkpoint: cadence and retention.
    seed: parameter init (and RNG) seed.
    log_every_steps: metrics cadence (TensorBoard + console).
    eval_every_steps: evaluate every N steps during training (0: only at the end).
    max_nonfinite_steps: abort after this many consecutive skipped (non-finite) steps.
  """

  model_dir: str
  num_steps: int
  checkpoint: CheckpointConfig = CheckpointConfig()
  seed: int = 0
  log_every_steps: int = 10
  eval_every_steps: int = 0
  max_nonfinite_steps: int = 20

  def __post_init__(self):
    if self.num_steps < 0 or self.log_every_steps < 1 or self.eval_every_steps < 0:
      raise ValueError(
        f"Need num_steps >= 0, log_every_steps >= 1, eval_every_steps >= 0; got {self.num_steps}, "
        f"{self.log_every_steps}, {self.eval_every_steps}."
      )


def run(
  job: TrainJob, settings: RunSettings, on_start: Callable[[], None] | None = None
) -> dict[str, float]:
  """Trains `job` as `settings` say, resuming from `settings.model_dir` when it holds a step.

  Args:
    job: what the job trains and how it evaluates.
    settings: where and how long.
    on_start: called once on the chief after the checkpoint (if any) was accepted and before
      anything is written into `model_dir` (the train verb writes config.gin here).
  Returns:
    The last logged metrics, plus eval/... when evaluated.
  Raises:
    CheckpointMismatchError: `model_dir` holds another model's checkpoint (nothing written).
    Preempted: SIGTERM arrived; the step is saved, no final metrics are written.
    NonFiniteLossError: too many consecutive non-finite steps.
  """
  is_chief = jax.process_index() == 0
  directory = os.path.join(settings.model_dir, CHECKPOINT_SUBDIR)
  with Checkpointer(directory, settings.checkpoint, metadata=dict(job.metadata)) as checkpointer:
    state, data_batches = loop.restore_or_init(job.trainer, checkpointer, settings.seed)
    start = int(state.step)
    if start == 0 and job.on_fresh_state is not None:
      state = job.on_fresh_state(state)
    if is_chief and on_start is not None:
      on_start()
    writer = metric_writers.create_default_writer(settings.model_dir, just_logging=not is_chief)
    if is_chief and start == 0 and job.hparams:
      writer.write_hparams(dict(job.hparams))
    train_loop = loop.TrainLoop(
      job.trainer,
      checkpointer,
      writer,
      job.batches(data_batches),
      num_steps=settings.num_steps,
      log_every=settings.log_every_steps,
      max_nonfinite=settings.max_nonfinite_steps,
      throughput=job.throughput,
      console_line=job.console_line,
      log_hooks=job.log_hooks,
      evaluate=job.evaluate,
      eval_every=settings.eval_every_steps,
    )
    state, scalars = train_loop.run(state, data_batches)
    step = int(state.step)
    if checkpointer.preempted:
      writer.flush()
      raise Preempted(step, directory)
    if job.evaluate is not None and (settings.num_steps > start or settings.eval_every_steps):
      scalars.update(train_loop.evaluate_and_log(step, state))
  writer.flush()
  if is_chief:
    scalars = loop.write_final_metrics(settings.model_dir, step, scalars)
  return scalars
