"""The launch scripts: shellcheck-clean; their dry runs print the right plan with arguments quoted
exactly; local_multiprocess.sh really runs N processes, fails fast and stops the rest; the TPU
worker install script and command line, and the SLURM task wrapper, do what the dry runs show.

gcloud, srun and scontrol are faked with small scripts on PATH (they are outside this repository);
no JAX is needed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL = REPO_ROOT / "launch" / "local_multiprocess.sh"
TPU = REPO_ROOT / "launch" / "tpu_pod.sh"
SLURM = REPO_ROOT / "launch" / "gpu_slurm.sbatch"
SCRIPTS = [LOCAL, TPU, SLURM]
# Hang guard for every script run, not a timing assertion.
TIMEOUT_S = 15
# A command whose arguments a careless launcher would mangle.
TRAIN = ["musiclm-jax", "train", "--gin.MODEL_DIR='gs://b/x y'", 'a "quoted" $HOME; *']
TPU_V4 = [TPU, "--name", "n", "--zone", "z", "--accelerator_type", "v4-8"]
_ENV_PREFIXES = ("SLURM_", "JAX_", "XLA_", "NCCL_", "MUSICLM_JAX_", "TF_CPP_", "CUDA_VISIBLE")


def _env(path_first: Path | None = None, **extra: str) -> dict[str, str]:
  """This process's environment without launcher-relevant variables, plus `extra`."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
  if path_first is not None:
    env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
  env.update(extra)
  return env


def _run(args, env: dict[str, str], timeout: float = TIMEOUT_S, **kwargs):
  return subprocess.run(
    [str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout, **kwargs
  )


def _executable(path: Path, text: str) -> Path:
  path.write_text(text)
  path.chmod(0o755)
  return path


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
  path = tmp_path / "bin"
  path.mkdir()
  return path


def _flag(args: list[str], name: str) -> str:
  (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
  return value


# --- all scripts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script):
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
  result = _run(["shellcheck", "-x", script], env=_env(), cwd=REPO_ROOT)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_executable_with_help(script):
  assert os.access(script, os.X_OK)
  result = _run([script, "--help"], env=_env())
  assert result.returncode == 0
  assert "Usage:" in result.stdout
  assert "set -euo" not in result.stdout and "#SBATCH" not in result.stdout


@pytest.mark.parametrize(
  "args, message",
  [
    ([LOCAL], "missing N"),
    ([LOCAL, "0", "echo"], "N must be a positive integer"),
    ([LOCAL, "two", "echo"], "N must be a positive integer"),
    ([LOCAL, "2"], "missing COMMAND"),
    ([LOCAL, "--bogus", "2", "echo"], "unknown flag: --bogus"),
    ([LOCAL, "--port", "70000", "2", "echo"], "--port must be"),
    ([LOCAL, "--devices_per_process=0", "2", "echo"], "--devices_per_process must be"),
    ([LOCAL, "--log_dir"], "--log_dir needs a value"),
    ([TPU, "--zone", "z", "--accelerator_type", "v4-32", "--", "echo"], "--name is required"),
    ([TPU, "--name", "n", "--zone", "z", "--accelerator_type", "v4-32"], "missing COMMAND"),
    ([TPU, "--name", "n", "--zone", "z", "--accelerator_type", "v9-8", "--", "x"], "--runtime"),
    ([*TPU_V4, "--num_slices", "0", "--", "x"], "--num_slices"),
    ([*TPU_V4, "--env", "1X=2", "--", "x"], "KEY=VALUE"),
    ([*TPU_V4, "--package", "/no/such.whl", "--", "x"], "no such file"),
    ([SLURM], "missing COMMAND"),
    ([SLURM, "echo"], "not inside a SLURM job"),
  ],
)
def test_usage_errors_exit_2(args, message):
  result = _run(args, env=_env())
  assert result.returncode == 2
  assert message in result.stderr
  assert "--help" in result.stderr


# --- local_multiprocess.sh -----------------------------------------------------------------------


def test_local_dry_run_prints_each_process_env_and_exact_command(bin_dir):
  # Nothing may run: a fake `musiclm-jax` would say so.
  _executable(bin_dir / "musiclm-jax", "#!/bin/sh\necho RAN\nexit 99\n")
  env = _env(bin_dir, XLA_FLAGS="--xla_dump_to=/tmp/hlo")
  result = _run([LOCAL, "--dry_run", "--port", "12355", "2", *TRAIN], env=env)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 2
  for i, line in enumerate(lines):
    prefix = f"process {i}: "
    assert line.startswith(prefix)
    words = shlex.split(line[len(prefix) :])
    assert words[:6] == [
      "JAX_PLATFORMS=cpu",
      "XLA_FLAGS=--xla_dump_to=/tmp/hlo --xla_force_host_platform_device_count=4",
      "JAX_COORDINATOR_ADDRESS=localhost:12355",
      "JAX_NUM_PROCESSES=2",
      f"JAX_PROCESS_ID={i}",
      "MUSICLM_JAX_DISTRIBUTED=on",
    ]
    assert words[6:] == TRAIN


def test_local_dry_run_picks_one_free_port_for_all(bin_dir):
  result = _run([LOCAL, "--dry_run", "--devices_per_process=2", "3", "echo"], env=_env())
  assert result.returncode == 0, result.stderr
  addresses = {
    re.search(r"JAX_COORDINATOR_ADDRESS=(\S+)", line)[1] for line in result.stdout.splitlines()
  }
  (address,) = addresses
  assert re.fullmatch(r"localhost:\d+", address)
  assert result.stdout.count("--xla_force_host_platform_device_count=2") == 3


def test_local_runs_each_process_with_its_env(tmp_path):
  log_dir = tmp_path / "logs"
  show = 'echo "$JAX_PROCESS_ID $JAX_NUM_PROCESSES $JAX_COORDINATOR_ADDRESS $MUSICLM_JAX_DISTRIBUTED $JAX_PLATFORMS $XLA_FLAGS"'
  args = [LOCAL, "--log_dir", log_dir, "--port", "23456", "--devices_per_process", "2", "2"]
  result = _run([*args, "bash", "-c", show], env=_env())
  assert result.returncode == 0, result.stderr
  for i in range(2):
    log = (log_dir / f"process_{i}.log").read_text()
    assert log == f"{i} 2 localhost:23456 on cpu --xla_force_host_platform_device_count=2\n"
  assert result.stdout == "0 2 localhost:23456 on cpu --xla_force_host_platform_device_count=2\n"
  assert f"logs in {log_dir}" in result.stderr


def _log_dir_from(stderr: str) -> Path:
  return Path(re.search(r"logs in (\S+)", stderr)[1])


def _gone(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  return False


def test_local_failure_stops_the_others_and_returns_its_status(tmp_path):
  # Process 0 would sleep for a minute; process 1 fails at once.
  script = 'echo $$ > "$TMPDIR/pid_$JAX_PROCESS_ID"; if [ "$JAX_PROCESS_ID" = 1 ]; then echo failing; exit 3; fi; exec sleep 60'
  result = _run([LOCAL, "2", "bash", "-c", script], env=_env(TMPDIR=str(tmp_path)))
  assert result.returncode == 3
  assert "process 1 exited with status 3" in result.stderr
  assert "[process 1] failing" in result.stderr
  log_dir = _log_dir_from(result.stderr)
  assert log_dir.parent == tmp_path  # the default log dir is a new temp dir
  assert (log_dir / "process_1.log").read_text() == "failing\n"
  assert _gone(int((tmp_path / "pid_0").read_text()))


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_local_signal_stops_every_process(tmp_path, sig, status):
  script = 'echo $$ > "$TMPDIR/pid_$JAX_PROCESS_ID"; exec sleep 60'
  proc = subprocess.Popen(
    [str(LOCAL), "2", "bash", "-c", script],
    env=_env(TMPDIR=str(tmp_path)),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  pid_files = [tmp_path / f"pid_{i}" for i in range(2)]
  deadline = time.monotonic() + TIMEOUT_S
  while not all(f.exists() and f.read_text().strip() for f in pid_files):
    assert time.monotonic() < deadline and proc.poll() is None, "processes did not start"
    time.sleep(0.05)
  proc.send_signal(sig)
  _, stderr = proc.communicate(timeout=TIMEOUT_S)
  assert proc.returncode == status
  assert "interrupted" in stderr
  assert all(_gone(int(f.read_text())) for f in pid_files)


# --- tpu_pod.sh ----------------------------------------------------------------------------------

TPU_ARGS = ["--name", "musiclm-v5e", "--zone", "us-west4-a", "--accelerator_type", "v5litepod-16"]


def _loud_fakes(bin_dir: Path, marker: Path) -> None:
  """gcloud, python3 and tar that record that they ran and fail: a dry run must call none."""
  for name in ("gcloud", "python3", "tar"):
    _executable(
      bin_dir / name, f'#!/bin/sh\necho "{name} ran: $*" >&2\necho {name} >> "{marker}"\nexit 99\n'
    )


def _tpu_dry_run(bin_dir: Path, tmp_path: Path, *flags: str) -> list[list[str]]:
  marker = tmp_path / "ran"
  _loud_fakes(bin_dir, marker)
  result = _run([TPU, "--dry_run", *TPU_ARGS, *flags, "--", *TRAIN], env=_env(bin_dir))
  assert result.returncode == 0, result.stderr
  assert not marker.exists(), marker.read_text()
  lines = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
  return [shlex.split(line[2:]) for line in lines]


def _gcloud_verbs(commands: list[list[str]]) -> list[str]:
  return [c[4] for c in commands if c[0] == "gcloud"]


def test_tpu_dry_run_creates_installs_and_runs_on_all_workers(bin_dir, tmp_path):
  commands = _tpu_dry_run(bin_dir, tmp_path)
  gcloud = [c for c in commands if c[0] == "gcloud"]
  assert _gcloud_verbs(commands) == ["describe", "create", "scp", "ssh", "ssh"]
  assert all(c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] for c in gcloud)
  assert all("--zone=us-west4-a" in c for c in gcloud)
  describe, create, scp, install, launch = gcloud
  assert describe[5] == create[5] == install[5] == launch[5] == "musiclm-v5e"
  assert "--accelerator-type=v5litepod-16" in create
  assert "--version=v2-alpha-tpuv5-lite" in create
  # The wheel is built locally, then copied with the gin files and installer to every worker.
  (build,) = [c for c in commands if c[:3] == ["python3", "-m", "pip"]]
  assert build[3:6] == ["wheel", "--no-deps", "--quiet"] and build[-1] == str(REPO_ROOT)
  assert "musiclm-v5e:" in scp
  assert any(a.endswith(".whl") for a in scp) and any(a.endswith("gin.tar.gz") for a in scp)
  for command in (scp, install, launch):
    assert "--worker=all" in command
  installer = _flag(install, "--command").split("/")[-1]
  assert any(a.endswith("/" + installer) for a in scp)
  remote = shlex.split(_flag(launch, "--command"))
  assert "MUSICLM_JAX_DISTRIBUTED=on" in remote
  assert remote[remote.index("exec") + 1 :] == TRAIN


def test_tpu_dry_run_reuse_does_not_create(bin_dir, tmp_path):
  commands = _tpu_dry_run(bin_dir, tmp_path, "--reuse", "--project", "my-proj")
  assert _gcloud_verbs(commands) == ["describe", "scp", "ssh", "ssh"]
  assert all("--project=my-proj" in c for c in commands if c[0] == "gcloud")


def test_tpu_dry_run_multislice_uses_a_queued_resource(bin_dir, tmp_path):
  commands = _tpu_dry_run(bin_dir, tmp_path, "--num_slices", "2", "--spot")
  gcloud = [c for c in commands if c[0] == "gcloud"]
  assert all(c[:4] == ["gcloud", "compute", "tpus", "queued-resources"] for c in gcloud)
  _, create, scp, install, launch = gcloud
  for flag in (
    "--node-count=2",
    "--node-prefix=musiclm-v5e",
    "--runtime-version=v2-alpha-tpuv5-lite",
    "--spot",
  ):
    assert flag in create
  for command in (scp, install, launch):
    assert "--node=all" in command and "--worker=all" in command


@pytest.mark.parametrize(
  "accelerator_type, version",
  [("v4-32", "tpu-ubuntu2204-base"), ("v5p-64", "v2-alpha-tpuv5"), ("v6e-16", "v2-alpha-tpuv6e")],
)
def test_tpu_default_runtime_versions(bin_dir, tmp_path, accelerator_type, version):
  marker = tmp_path / "ran"
  _loud_fakes(bin_dir, marker)
  args = ["--name", "n", "--zone", "z", "--accelerator_type", accelerator_type, "--", "x"]
  result = _run([TPU, "--dry_run", *args], env=_env(bin_dir))
  assert result.returncode == 0, result.stderr
  assert f"--version={version}" in result.stdout


FAKE_GCLOUD = """#!{python}
# Records its arguments; a TPU exists once created (state in $FAKE_TPU_STATE).
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_CALLS"], "a") as f:
  f.write(json.dumps(args) + "\\n")
state = os.environ["FAKE_TPU_STATE"]
if args[3] == "describe":
  if not os.path.exists(state):
    sys.exit("ERROR: (gcloud) NOT_FOUND")
  print(open(state).read())
elif args[3] == "create":
  open(state, "w").write("READY")
"""

# A Python for the worker: `-c` checks pass, `-m venv DIR` makes DIR/bin/python (this script),
# everything is recorded in $FAKE_PYTHON_CALLS.
FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$FAKE_PYTHON_CALLS"
if [ "$1" = -m ] && [ "$2" = venv ]; then
  for dir; do :; done
  mkdir -p "$dir/bin" && cp "$0" "$dir/bin/python" && cp "$0" "$dir/bin/pip"
fi
"""


def test_tpu_real_run_then_worker_install_and_command(bin_dir, tmp_path):
  """The real path with a fake gcloud; then the installer and the command line it copied and
  sent are run as a worker would (one shell parse), in a fake home directory."""
  _executable(bin_dir / "gcloud", FAKE_GCLOUD.format(python=sys.executable))
  calls, state = tmp_path / "gcloud_calls", tmp_path / "tpu_state"
  package = tmp_path / "musiclm_jax-0.1.0-py3-none-any.whl"
  package.write_text("not really a wheel")
  fake_python = _executable(tmp_path / "fake_python", FAKE_PYTHON)
  log_dir = tmp_path / "logs"
  flags = ["--package", package, "--python", fake_python, "--remote_setup", "echo setup ran"]
  flags += ["--env", "LIBTPU_INIT_ARGS=--a=1 --b=2", "--log_dir", log_dir]
  env = _env(bin_dir, FAKE_GCLOUD_CALLS=str(calls), FAKE_TPU_STATE=str(state))
  result = _run([TPU, *TPU_ARGS, *flags, "--", *TRAIN], env=env)
  assert result.returncode == 0, result.stdout + result.stderr
  gcloud = [json.loads(line) for line in calls.read_text().splitlines()]
  assert [c[3] for c in gcloud] == ["describe", "create", "describe", "scp", "ssh", "ssh"]
  assert "musiclm-v5e" in (log_dir / "tpu_pod.log").read_text()

  # scp: copy what it names into the worker's home.
  home = tmp_path / "home"
  home.mkdir()
  scp, install, launch = gcloud[3:]
  for source in scp[4 : scp.index("musiclm-v5e:")]:
    shutil.copy(source, home)
  worker_env = _env(HOME=str(home), FAKE_PYTHON_CALLS=str(tmp_path / "python_calls"))
  installed = _run(["bash", "-c", _flag(install, "--command")], env=worker_env, cwd=home)
  assert installed.returncode == 0, installed.stdout + installed.stderr
  assert "setup ran" in installed.stdout
  assert (home / "musiclm_jax" / "gin" / "mesh" / "cpu8.gin").exists()
  python_calls = (tmp_path / "python_calls").read_text().splitlines()
  assert f"-m pip install -q {home}/{package.name}[tpu]" in python_calls
  assert f"-m pip install -q --no-deps --force-reinstall {home}/{package.name}" in python_calls

  _executable(
    home / "musiclm_jax" / ".venv" / "bin" / "musiclm-jax",
    '#!/bin/sh\necho "$PWD $MUSICLM_JAX_DISTRIBUTED $LIBTPU_INIT_ARGS"\nprintf "%s\\n" "$@"\n',
  )
  ran = _run(["bash", "-c", _flag(launch, "--command")], env=worker_env, cwd=tmp_path)
  assert ran.returncode == 0, ran.stderr
  assert ran.stdout.splitlines() == [f"{home}/musiclm_jax on --a=1 --b=2", *TRAIN[1:]]


def test_tpu_reuse_of_a_missing_tpu_fails(bin_dir, tmp_path):
  _executable(bin_dir / "gcloud", FAKE_GCLOUD.format(python=sys.executable))
  env = _env(bin_dir, FAKE_GCLOUD_CALLS=str(tmp_path / "calls"), FAKE_TPU_STATE=str(tmp_path / "s"))
  args = [TPU, *TPU_ARGS, "--reuse", "--log_dir", tmp_path / "logs", "--", "x"]
  result = _run(args, env=env)
  assert result.returncode == 1
  assert "no TPU named 'musiclm-v5e'" in result.stdout  # all output goes to the log and stdout
  assert "create" not in (tmp_path / "calls").read_text()


# --- gpu_slurm.sbatch ----------------------------------------------------------------------------

FAKE_SCONTROL = """#!/bin/sh
[ "$1 $2" = "show hostnames" ] || exit 1
printf 'node1\\nnode2\\n'
"""


def _plan(stdout: str) -> tuple[dict[str, str], list[str]]:
  """(environment lines as a dict, srun command) of a DRY_RUN's output."""
  env, srun = {}, None
  for line in stdout.splitlines():
    if line.startswith("+ "):
      srun = shlex.split(line[2:])
    else:
      key, value = shlex.split(line)[0].split("=", 1)
      env[key] = value
  return env, srun


def test_slurm_dry_run_prints_coordinator_and_srun(bin_dir):
  _executable(bin_dir / "scontrol", FAKE_SCONTROL)
  _executable(bin_dir / "srun", "#!/bin/sh\necho srun ran >&2\nexit 99\n")
  env = _env(
    bin_dir, DRY_RUN="1", SLURM_JOB_NODELIST="node[1-2]", SLURM_NTASKS="16", SLURM_JOB_ID="42"
  )
  result = _run([SLURM, *TRAIN], env=env)
  assert result.returncode == 0, result.stderr
  plan, srun = _plan(result.stdout)
  assert plan["JAX_COORDINATOR_ADDRESS"] == "node1:61482"  # 61440 + 42 % 4096
  assert plan["JAX_NUM_PROCESSES"] == "16"
  assert plan["MUSICLM_JAX_DISTRIBUTED"] == "on"
  assert "--xla_gpu_enable_latency_hiding_scheduler=true" in plan["XLA_FLAGS"]
  assert plan["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.9" and plan["NCCL_DEBUG"] == "WARN"
  assert srun[0] == "srun" and "--kill-on-bad-exit=1" in srun
  assert srun[-len(TRAIN) :] == TRAIN
  assert 'JAX_PROCESS_ID="$SLURM_PROCID"' in srun[srun.index("-c") + 1]


@pytest.mark.parametrize(
  "nodelist, host",
  [
    ("node[1-2]", "node1"),
    ("node1,node2", "node1"),
    ("gpu-a[007-010,012],gpu-b3", "gpu-a007"),
    ("solo", "solo"),
  ],
)
def test_slurm_first_host_without_scontrol(bin_dir, nodelist, host):
  if shutil.which("scontrol"):
    pytest.skip("scontrol is installed; this tests the fallback without it")
  env = _env(bin_dir, DRY_RUN="1", SLURM_JOB_NODELIST=nodelist, SLURM_NTASKS="8", SLURM_JOB_ID="7")
  env["JAX_COORDINATOR_PORT"] = "1234"
  result = _run([SLURM, "echo"], env=env)
  assert result.returncode == 0, result.stderr
  assert _plan(result.stdout)[0]["JAX_COORDINATOR_ADDRESS"] == f"{host}:1234"


# Runs each task of the step in turn with its SLURM_PROCID / SLURM_LOCALID, as srun would at once.
FAKE_SRUN = """#!/bin/sh
while [ "${1#--}" != "$1" ]; do shift; done
task=0
while [ $task -lt "$SLURM_NTASKS" ]; do
  SLURM_PROCID=$task SLURM_LOCALID=$((task % $TASKS_PER_NODE)) "$@" || exit $?
  task=$((task + 1))
done
"""


@pytest.mark.parametrize(
  "nodes, tasks_per_node, expected_devices",
  [(1, 2, ["0", "1"]), (2, 1, ["0,1,2,3,4,5,6,7", "0,1,2,3,4,5,6,7"])],
  ids=["process_per_gpu", "process_per_node"],
)
def test_slurm_tasks_get_their_process_id_and_devices(
  bin_dir, nodes, tasks_per_node, expected_devices
):
  _executable(bin_dir / "srun", FAKE_SRUN)
  env = _env(
    bin_dir,
    SLURM_JOB_NODELIST=",".join(f"node{7 + i}" for i in range(nodes)),
    SLURM_JOB_NUM_NODES=str(nodes),
    SLURM_NTASKS=str(nodes * tasks_per_node),
    SLURM_NTASKS_PER_NODE=str(tasks_per_node),
    SLURM_GPUS_ON_NODE="8",
    SLURM_JOB_ID="3",
    TASKS_PER_NODE=str(tasks_per_node),
  )
  show = 'echo "$JAX_PROCESS_ID/$JAX_NUM_PROCESSES $JAX_LOCAL_DEVICE_IDS $JAX_COORDINATOR_ADDRESS $MUSICLM_JAX_DISTRIBUTED"'
  result = _run([SLURM, "bash", "-c", show], env=env)
  assert result.returncode == 0, result.stderr
  task_lines = [line for line in result.stdout.splitlines() if line.endswith(" on")]
  assert task_lines == [
    f"{i}/2 {devices} node7:61443 on" for i, devices in enumerate(expected_devices)
  ]
