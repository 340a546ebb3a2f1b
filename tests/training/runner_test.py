"""Tests of the job runner through the stage-LM job: periodic evaluation, preemption, resuming,
and a refused checkpoint that leaves the model dir untouched."""

import os
import signal
import threading

import pytest

from musiclm_jax import stages
from musiclm_jax.checkpoints import CheckpointConfig, CheckpointMismatchError
from musiclm_jax.data import stage_tasks, synthetic_tokens
from musiclm_jax.jobs import stage_lm as stage_lm_job
from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.models.stage_lm import StageLM
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.training import runner
from musiclm_jax.training.optimizers import OptimizerConfig

TOKENS = stages.TokenSpec.tiny()
LAYOUT = stages.StageLayout("semantic", TOKENS, 4.0)
CONFIG = TransformerConfig(num_layers=1, num_heads=2, head_dim=8, d_model=16, d_ff=32)


def _task():
  source = synthetic_tokens.synthetic_token_source(TOKENS, 32, 6.0, 0, num_validation_clips=8)
  return stage_tasks.make_stage_task("runner_test_semantic", source, LAYOUT, register=False)


def _train(model_dir, num_steps, *, config=CONFIG, checkpoint=None, **kwargs):
  return stage_lm_job.train(
    model=StageLM(config, LAYOUT),
    task=_task(),
    model_dir=str(model_dir),
    num_steps=num_steps,
    batch_size=8,
    optimizer=OptimizerConfig(name="adamw", learning_rate=1e-2, schedule="constant"),
    partitioner=Partitioner(MeshConfig(num_devices=1, ici_data=1)),
    checkpoint=checkpoint or CheckpointConfig(save_interval_steps=2, save_on_sigterm=False),
    log_every_steps=1,
    eval_batches=1,
    **kwargs,
  )


def _eval_steps(stdout: str) -> list[int]:
  return [int(line.split()[3].split("/")[0]) for line in stdout.splitlines() if "eval at" in line]


def test_eval_every_steps_evaluates_every_n_steps_and_at_the_end(tmp_path, capsys):
  metrics = _train(tmp_path, 6, eval_every_steps=2)
  assert _eval_steps(capsys.readouterr().out) == [2, 4, 6]
  assert "eval/loss" in metrics and "eval/accuracy" in metrics


def test_without_eval_every_steps_only_the_end_is_evaluated(tmp_path, capsys):
  _train(tmp_path, 4)
  assert _eval_steps(capsys.readouterr().out) == [4]


def test_no_eval_split_means_no_evaluation(tmp_path, capsys):
  metrics = _train(tmp_path, 2, eval_every_steps=1, eval_split=None)
  assert _eval_steps(capsys.readouterr().out) == []
  assert not any(k.startswith("eval/") for k in metrics)


def test_resumed_run_says_from_which_step(tmp_path, capsys):
  _train(tmp_path, 2)
  assert "resumed from step" not in capsys.readouterr().out
  _train(tmp_path, 4)
  assert "resumed from step 2" in capsys.readouterr().out


def test_sigterm_saves_raises_preempted_and_writes_no_final_metrics(tmp_path, capsys):
  checkpoint = CheckpointConfig(save_interval_steps=1000, save_on_sigterm=True)
  # The signal arrives while the loop runs; the checkpointer's handler saves the next step.
  timer = threading.Timer(0.0, os.kill, (os.getpid(), signal.SIGTERM))
  starts = []

  def start():
    starts.append(True)
    timer.start()

  with pytest.raises(runner.Preempted, match="Run the same command again to resume") as info:
    _train(tmp_path, 10_000, checkpoint=checkpoint, on_start=start)
  timer.join()
  assert starts == [True]
  step = info.value.step
  assert 0 < step < 10_000
  assert (tmp_path / "checkpoints" / str(step)).is_dir()
  assert not (tmp_path / "final_metrics.json").exists()
  assert _eval_steps(capsys.readouterr().out) == []
  # Rerunning resumes from the saved step.
  _train(tmp_path, step + 1)
  assert f"resumed from step {step}" in capsys.readouterr().out


def test_refused_checkpoint_writes_nothing_into_the_model_dir(tmp_path):
  _train(tmp_path, 2)
  before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
  wider = TransformerConfig(num_layers=1, num_heads=2, head_dim=8, d_model=32, d_ff=32)
  started = []
  with pytest.raises(CheckpointMismatchError):
    _train(tmp_path, 4, config=wider, on_start=lambda: started.append(True))
  assert not started
  assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_run_settings_refuse_impossible_cadences():
  with pytest.raises(ValueError, match="eval_every_steps"):
    runner.RunSettings(model_dir="x", num_steps=1, eval_every_steps=-1)
