"""Running a command as several JAX processes on this machine (`launch/local_multiprocess.sh`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = REPO_ROOT / "launch" / "local_multiprocess.sh"
TIMEOUT_S = 600  # a hang guard: a collective that never completes must not stall CI


def clean_env(**extra: str) -> dict[str, str]:
  """This environment without the test session's multi-host settings or its 8 fake devices (the
  launcher sets each process's own), on CPU, plus `extra`."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "MUSICLM_JAX_"))}
  flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
  return {**env, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu", **extra}


def run_processes(
  num_processes: int,
  devices_per_process: int,
  log_dir: Path,
  command: list[str],
  **extra_env: str,
) -> subprocess.CompletedProcess:
  """`command` as `num_processes` processes; process i logs to log_dir/process_<i>.log."""
  return subprocess.run(
    [
      str(LAUNCHER),
      "--devices_per_process",
      str(devices_per_process),
      "--log_dir",
      str(log_dir),
      str(num_processes),
      *command,
    ],
    cwd=REPO_ROOT,
    env=clean_env(**extra_env),
    capture_output=True,
    text=True,
    timeout=TIMEOUT_S,
  )
