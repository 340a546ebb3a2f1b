"""Multi-host training on one machine: `launch/local_multiprocess.sh 2` runs two JAX processes of
4 fake CPU devices each (CPU collectives over gloo), against one process of 8 devices.

The run is unshuffled and its clips are as long as the crop, so the global batch k is the same set
of examples whatever the number of processes (each host reads every other example of the stream;
see `train_job.train(shuffle=)`): the losses must agree, and a checkpoint written by the two
processes must restore in one and continue exactly as the one-process run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests import multiprocess

REPO_ROOT = multiprocess.REPO_ROOT
TRAIN = [
  sys.executable,
  "-m",
  "musiclm_jax.main.cli",
  "train",
  "--gin_file=gin/models/semantic/tiny.gin",
  "--gin_file=gin/runs/synthetic.gin",
  "--gin_file=gin/mesh/cpu8.gin",  # data 2 × fsdp 2 × tensor 2 over the 8 devices of the job
  "--gin.BATCH_SIZE=8",
  "--gin.train_job.train.shuffle=False",
  "--gin.train_job.train.log_every_steps=1",
  "--gin.train_job.train.eval_batches=1",
  "--gin.synthetic_tokens.synthetic_token_source.clip_seconds=4.0",  # = CROP_SECONDS
  "--gin.synthetic_tokens.synthetic_token_source.num_clips=64",
  "--gin.checkpoints.CheckpointConfig.save_interval_steps=2",
]


def _one_process(model_dir: Path, num_steps: int) -> subprocess.CompletedProcess:
  env = multiprocess.clean_env()
  env["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
  return subprocess.run(
    [*TRAIN, f"--gin.MODEL_DIR='{model_dir}'", f"--gin.NUM_STEPS={num_steps}"],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=multiprocess.TIMEOUT_S,
  )


def _two_processes(log_dir: Path, *command: str) -> subprocess.CompletedProcess:
  return multiprocess.run_processes(2, 4, log_dir, list(command))


def _losses(model_dir: Path) -> dict[int, float]:
  """step → training loss, from the TensorBoard events the run wrote (process 0 only)."""
  losses = {}
  for path in sorted(model_dir.glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == "loss":
          losses[event.step] = float(tf.make_ndarray(value.tensor))
  return losses


def _check(result: subprocess.CompletedProcess, what: str) -> None:
  assert result.returncode == 0, f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, float]:
  """Losses of 6 steps on one process of 8 devices."""
  model_dir = tmp_path_factory.mktemp("one_process")
  _check(_one_process(model_dir, 6), "the one-process run")
  return _losses(model_dir)


@pytest.mark.slow
def test_two_processes_train_like_one_and_their_checkpoint_restores_in_one(reference, tmp_path):
  model_dir, logs = tmp_path / "two_processes", tmp_path / "logs"
  _check(
    _two_processes(logs, *TRAIN, f"--gin.MODEL_DIR='{model_dir}'", "--gin.NUM_STEPS=4"),
    "the two-process run",
  )
  two = _losses(model_dir)
  assert sorted(two) == [1, 2, 3, 4]
  np.testing.assert_allclose(
    [two[s] for s in range(1, 5)], [reference[s] for s in range(1, 5)], rtol=1e-5
  )
  # Logs, metrics and configs come from process 0 alone; both processes trained.
  assert len(list(model_dir.glob("events.out.tfevents.*"))) == 1
  assert "step 4/4" in (logs / "process_0.log").read_text()
  assert "step 4/4" not in (logs / "process_1.log").read_text()
  assert sorted(p.name for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit()) == [
    "2",
    "4",
  ]
  # Written by 2 processes (4 devices each), restored by 1 process of 8: steps 5-6 continue the
  # one-process run exactly (same parameters, optimizer state and data position).
  resumed = tmp_path / "resumed"
  shutil.copytree(model_dir, resumed)
  _check(_one_process(resumed, 6), "restoring the two-process checkpoint in one process")
  losses = _losses(resumed)
  np.testing.assert_allclose([losses[5], losses[6]], [reference[5], reference[6]], rtol=1e-5)


@pytest.mark.slow
def test_processes_started_with_different_configs_stop_naming_the_difference(tmp_path):
  # Process 1 gets another NUM_STEPS: both must stop before training, not hang.
  command = " ".join(TRAIN + [f"--gin.MODEL_DIR=\"'{tmp_path / 'm'}'\""])
  result = _two_processes(
    tmp_path / "logs", "bash", "-c", f"{command} --gin.NUM_STEPS=$((3 + JAX_PROCESS_ID))"
  )
  assert result.returncode == 2
  for process in (0, 1):
    log = (tmp_path / "logs" / f"process_{process}.log").read_text()
    assert "disagree on their gin configuration: process(es) [1] differ from process 0" in log
  assert not (tmp_path / "m" / "checkpoints").exists() or not any(
    p.name.isdigit() for p in (tmp_path / "m" / "checkpoints").iterdir()
  )
