"""End-to-end tests of `musiclm-jax train`: resuming after SIGKILL, changing meshes, mismatches.

Each test runs the real console script in a subprocess on 8 fake CPU devices with the tiny
semantic config and the synthetic run file, and compares the train states it checkpoints.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "musiclm-jax"
NUM_STEPS = 40
SAVE_EVERY = 10
LOG_EVERY = 5
SEMANTIC = "gin/models/semantic/tiny.gin"
COARSE = "gin/models/coarse/tiny.gin"
CPU8 = "gin/mesh/cpu8.gin"  # data=2 x fsdp=2 x tensor=2
DATA_PARALLEL = "gin/mesh/data_parallel.gin"  # data=8
TIMEOUT_S = 300


def _args(model_dir: Path, model: str, mesh: str, num_steps: int, *extra: str) -> list[str]:
  return [
    str(CLI),
    "train",
    f"--gin_file={model}",
    "--gin_file=gin/runs/synthetic.gin",
    f"--gin_file={mesh}",
    f"--gin.MODEL_DIR='{model_dir}'",
    f"--gin.NUM_STEPS={num_steps}",
    f"--gin.checkpoints.CheckpointConfig.save_interval_steps={SAVE_EVERY}",
    "--gin.checkpoints.CheckpointConfig.max_to_keep=None",
    f"--gin.train_job.train.log_every_steps={LOG_EVERY}",
    "--gin.optimizers.OptimizerConfig.learning_rate=1e-2",
    "--gin.optimizers.OptimizerConfig.warmup_steps=5",
    "--gin.train_job.train.eval_split=None",
    *extra,
  ]


def _env() -> dict[str, str]:
  return {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    "TF_CPP_MIN_LOG_LEVEL": "2",
  }


def _train(model_dir: Path, *, model=SEMANTIC, mesh=CPU8, num_steps=NUM_STEPS, check=True):
  """Runs `musiclm-jax train` to completion; returns the CompletedProcess."""
  result = subprocess.run(
    _args(model_dir, model, mesh, num_steps),
    cwd=REPO_ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=TIMEOUT_S,
  )
  if check and result.returncode != 0:
    pytest.fail(f"musiclm-jax train exited with {result.returncode}:\n{result.stderr[-5000:]}")
  return result


def _restore_state(model_dir: Path, step: int) -> dict:
  """The train state saved at `step`, as host numpy arrays (read with plain orbax)."""
  path = model_dir / "checkpoints" / str(step) / "state"
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    tree = checkpointer.metadata(path).item_metadata.tree
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return jax.device_get(checkpointer.restore(path, target))


def _logged_steps(stdout: str) -> list[int]:
  """Steps of the console metric lines ("step 25/40  loss ...")."""
  return [int(x) for x in re.findall(r"^step (\d+)/\d+  loss", stdout, re.M)]


def _checkpoint_steps(model_dir: Path) -> list[int]:
  """Complete checkpoint steps (orbax renames a step's directory to its number when done)."""
  return sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit())


def _final_metrics(model_dir: Path) -> dict:
  return json.loads((model_dir / "final_metrics.json").read_text())


def _assert_states_close(actual: dict, expected: dict, atol: float) -> None:
  assert int(actual["step"]) == int(expected["step"])
  np.testing.assert_array_equal(actual["rng"], expected["rng"])
  assert jax.tree.structure(actual["params"]) == jax.tree.structure(expected["params"])
  for name in ("params", "opt_state"):
    jax.tree.map(
      lambda a, e: np.testing.assert_allclose(a, e, atol=atol, rtol=0),
      actual[name],
      expected[name],
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, str]:
  """An uninterrupted run on the data=2 x fsdp=2 x tensor=2 mesh: (model dir, stdout)."""
  model_dir = tmp_path_factory.mktemp("reference")
  result = _train(model_dir)
  return model_dir, result.stdout


@pytest.mark.slow
def test_run_writes_configs_and_final_metrics_and_learns(reference):
  model_dir, stdout = reference
  config = (model_dir / "config.gin").read_text()
  operative = (model_dir / "operative_config.gin").read_text()
  assert f"NUM_STEPS = {NUM_STEPS}" in config
  assert f"MODEL_DIR = '{model_dir}'" in operative
  assert "train_job.train.batch_size = %BATCH_SIZE" in operative
  assert "partitioning.MeshConfig.ici_tensor = 2" in operative
  assert _checkpoint_steps(model_dir) == list(range(SAVE_EVERY, NUM_STEPS + 1, SAVE_EVERY))
  assert _logged_steps(stdout) == list(range(LOG_EVERY, NUM_STEPS + 1, LOG_EVERY))
  logged = [float(x) for x in re.findall(r"^step \d+/\d+  loss ([\d.]+)", stdout, re.M)]
  metrics = _final_metrics(model_dir)
  assert metrics["step"] == NUM_STEPS and metrics["nonfinite"] == 0.0
  assert metrics["loss"] == pytest.approx(logged[-1], abs=1e-4)
  assert metrics["loss"] < 0.6 * logged[0], (logged, metrics["loss"])


def _wait_for_checkpoint(process: subprocess.Popen, directory: Path, timeout_s: float) -> None:
  deadline = time.monotonic() + timeout_s
  while not directory.is_dir():
    if process.poll() is not None:
      pytest.fail(f"training exited ({process.returncode}) before {directory} was written")
    if time.monotonic() > deadline:
      pytest.fail(f"{directory} did not appear within {timeout_s} s")
    time.sleep(0.02)


@pytest.mark.slow
def test_run_killed_after_a_checkpoint_resumes_to_the_same_state(reference, tmp_path):
  reference_dir, _ = reference
  # Asked for far more steps than it will live for; the schedule does not depend on NUM_STEPS.
  process = subprocess.Popen(
    _args(tmp_path, SEMANTIC, CPU8, 100 * NUM_STEPS),
    cwd=REPO_ROOT,
    env=_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  try:
    _wait_for_checkpoint(process, tmp_path / "checkpoints" / str(SAVE_EVERY), TIMEOUT_S)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  assert not (tmp_path / "final_metrics.json").exists()

  saved = _checkpoint_steps(tmp_path)
  assert saved and saved[-1] < NUM_STEPS, saved  # killed mid-run

  result = _train(tmp_path)
  # It went on from the newest complete checkpoint, not from scratch.
  assert _logged_steps(result.stdout)[0] == saved[-1] + LOG_EVERY, result.stdout
  _assert_states_close(
    _restore_state(tmp_path, NUM_STEPS), _restore_state(reference_dir, NUM_STEPS), atol=1e-6
  )
  resumed_metrics, reference_metrics = _final_metrics(tmp_path), _final_metrics(reference_dir)
  assert resumed_metrics["loss"] == pytest.approx(reference_metrics["loss"], abs=1e-6)


@pytest.mark.slow
def test_checkpoint_continues_on_another_mesh(reference, tmp_path):
  """A step saved on data=2 x fsdp=2 x tensor=2 resumes on data=8 and ends where the
  uninterrupted run on the first mesh ends."""
  reference_dir, _ = reference
  resume_step = NUM_STEPS // 2
  shutil.copytree(
    reference_dir / "checkpoints" / str(resume_step),
    tmp_path / "checkpoints" / str(resume_step),
  )
  result = _train(tmp_path, mesh=DATA_PARALLEL)
  assert _logged_steps(result.stdout) == list(
    range(resume_step + LOG_EVERY, NUM_STEPS + 1, LOG_EVERY)
  )
  assert "partitioning.MeshConfig.ici_data = -1" in (tmp_path / "operative_config.gin").read_text()
  _assert_states_close(
    _restore_state(tmp_path, NUM_STEPS), _restore_state(reference_dir, NUM_STEPS), atol=1e-5
  )
  assert _final_metrics(tmp_path)["loss"] == pytest.approx(
    _final_metrics(reference_dir)["loss"], abs=1e-5
  )


def test_checkpoint_of_another_stage_is_rejected(reference, tmp_path):
  reference_dir, _ = reference
  shutil.copytree(reference_dir / "checkpoints", tmp_path / "checkpoints")
  shutil.copy(reference_dir / "config.gin", tmp_path / "config.gin")
  before = sorted(p.name for p in tmp_path.iterdir())
  result = _train(tmp_path, model=COARSE, check=False)
  assert result.returncode == 2
  # The refused run wrote nothing: the directory still describes the semantic checkpoints.
  assert sorted(p.name for p in tmp_path.iterdir()) == before
  assert (tmp_path / "config.gin").read_text() == (reference_dir / "config.gin").read_text()
  assert "CheckpointMismatchError" in result.stderr
  assert "was saved for something else" in result.stderr
  assert "model: saved 'semantic', expected 'coarse'" in result.stderr
  assert not (tmp_path / "final_metrics.json").exists()
  # Nothing was trained or saved over the semantic checkpoints.
  assert _checkpoint_steps(tmp_path) == list(range(SAVE_EVERY, NUM_STEPS + 1, SAVE_EVERY))


@pytest.mark.slow
def test_sigterm_saves_and_exits_3_without_final_metrics_then_resumes(tmp_path):
  process = subprocess.Popen(
    _args(tmp_path, SEMANTIC, CPU8, 100 * NUM_STEPS),
    cwd=REPO_ROOT,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    _wait_for_checkpoint(process, tmp_path / "checkpoints" / str(SAVE_EVERY), TIMEOUT_S)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  assert process.returncode == 3, stderr[-3000:]
  assert "preempted at step" in stderr
  assert not (tmp_path / "final_metrics.json").exists()
  saved = _checkpoint_steps(tmp_path)[-1]
  result = _train(tmp_path, num_steps=saved + LOG_EVERY)
  assert f"resumed from step {saved}" in result.stdout
  assert _final_metrics(tmp_path)["step"] == saved + LOG_EVERY
