"""JAX's multi-controller runtime: one process per host (or per GPU), started the same everywhere.

Every multi-host verb (`train`, `infer`) calls `initialize(config_from_flags(args))` before it
touches a device. Three ways in:

* explicit: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or the env
  variables JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, which
  `launch/local_multiprocess.sh` and `launch/gpu_slurm.sbatch` set);
* detected: with none of those, on a Cloud TPU VM, under SLURM with more than one task or under
  OpenMPI with more than one rank, `jax.distributed.initialize()` finds them itself;
* single process otherwise (a laptop, one GPU box).

`--distributed=on` insists on a multi-controller start (JAX's detection, e.g. on TPU pods from
`launch/tpu_pod.sh`), `off` never starts one. After starting, `check_agreement` makes every
process compare a fingerprint of its configuration, so processes launched with different gin
files fail at once with a message naming them, instead of hanging in their first collective.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import os
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging

MODES = ("auto", "on", "off")


class DistributedError(RuntimeError):
  """The processes of a multi-host job could not start together or do not agree."""


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """How this process joins a multi-controller job.

  Attributes:
    mode: 'auto' (explicit settings, else a detected cluster, else one process), 'on' (always
      start; JAX detects what is not given), 'off' (one process).
    coordinator_address: HOST:PORT of process 0's coordination service.
    num_processes: processes in the job.
    process_id: this process's index in [0, num_processes).
    initialization_timeout_s: how long to wait for every process to connect.
    shutdown_timeout_s: how long a finished process waits at exit for the others (JAX's
      shutdown barrier). Training hosts finish together; batch-inference hosts finish their
      shares of the prompts at different times, so `infer` waits longer.
  """

  mode: str = "auto"
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  initialization_timeout_s: int = 300
  shutdown_timeout_s: int = 300

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"--distributed must be one of {MODES}, got {self.mode!r}.")
    explicit = (self.coordinator_address, self.num_processes, self.process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
      raise ValueError(
        "Give all of --coordinator_address, --num_processes and --process_id (or the "
        f"JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables), got {explicit}."
      )
    if self.num_processes is not None:
      if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
        raise ValueError(
          f"Need num_processes >= 1 and 0 <= process_id < num_processes, got "
          f"{self.num_processes} and {self.process_id}."
        )

  @property
  def explicit(self) -> bool:
    return self.coordinator_address is not None


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
  value = environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"Environment variable {name}={value!r} is not an integer.") from None


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The multi-host flags of a verb; each defaults to its environment variable."""
  group = parser.add_argument_group("multi-host (JAX multi-controller)")
  group.add_argument("--distributed", choices=MODES, default=None, help="default: auto")
  group.add_argument("--coordinator_address", default=None, help="HOST:PORT of process 0")
  group.add_argument("--num_processes", type=int, default=None)
  group.add_argument("--process_id", type=int, default=None)


def config_from_flags(
  args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> DistributedConfig:
  """Flags first, then JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID /
  MUSICLM_JAX_DISTRIBUTED."""
  environ = os.environ if environ is None else environ

  def either(flag, name, read=lambda e, n: e.get(n) or None):
    return flag if flag is not None else read(environ, name)

  return DistributedConfig(
    mode=either(args.distributed, "MUSICLM_JAX_DISTRIBUTED") or "auto",
    coordinator_address=either(args.coordinator_address, "JAX_COORDINATOR_ADDRESS"),
    num_processes=either(args.num_processes, "JAX_NUM_PROCESSES", _env_int),
    process_id=either(args.process_id, "JAX_PROCESS_ID", _env_int),
  )


def detect_cluster(environ: Mapping[str, str] | None = None) -> str | None:
  """The multi-process environment JAX can read its settings from, or None.

  Only environments with more than one process count: a one-task SLURM job or a single TPU VM
  host runs as one process without a coordination service.
  """
  environ = os.environ if environ is None else environ
  if "SLURM_JOB_ID" in environ and (_env_int(environ, "SLURM_NTASKS") or 1) > 1:
    return "slurm"
  if (_env_int(environ, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
    return "openmpi"
  if environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu-multislice"
  hosts = environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in hosts:
    return "tpu-pod"
  # A Cloud TPU VM: JAX asks the metadata server for the workers of the slice.
  if glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"):
    return "tpu-vm"
  return None


def initialize(config: DistributedConfig) -> bool:
  """Starts the multi-controller runtime if `config` asks for it; True if it started.

  Call before anything touches a device (the backend is fixed by the first use).

  Raises:
    DistributedError: the coordination service could not be reached or started in time.
  """
  if config.mode == "off" or jax.distributed.is_initialized():
    return jax.distributed.is_initialized()
  cluster = None if config.explicit else detect_cluster()
  if config.mode == "auto" and not config.explicit and cluster is None:
    return False
  try:
    jax.distributed.initialize(
      coordinator_address=config.coordinator_address,
      num_processes=config.num_processes,
      process_id=config.process_id,
      initialization_timeout=config.initialization_timeout_s,
      shutdown_timeout_seconds=config.shutdown_timeout_s,
    )
  except Exception as e:  # XLA raises several types (RuntimeError, XlaRuntimeError, ValueError)
    how = (
      f"coordinator {config.coordinator_address}, process {config.process_id} of "
      f"{config.num_processes}"
      if config.explicit
      else f"settings detected by JAX ({cluster or 'no cluster environment found'})"
    )
    raise DistributedError(
      f"Could not start the multi-host runtime ({how}): {e}\n"
      "Check that every process was started with the same --coordinator_address and "
      "--num_processes, distinct --process_id values, and that process 0 is reachable."
    ) from e
  logging.info(
    "Multi-host runtime: process %d of %d, %d local of %d devices.",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def fingerprint(*parts: str) -> int:
  """A 31-bit digest of `parts` (an int32: JAX exchanges 32-bit integers unless x64 is on)."""
  digest = hashlib.sha256("\0".join(parts).encode()).digest()
  return int.from_bytes(digest[:4], "little") >> 1


def check_agreement(what: str, *parts: str) -> None:
  """Raises on every process if the processes' `parts` (e.g. their gin config) differ.

  Raises:
    DistributedError: naming the processes whose `what` differs from process 0's.
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils

  mine = np.asarray([fingerprint(*parts)], np.int32)
  everyone = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1)
  differ = [i for i, value in enumerate(everyone) if value != everyone[0]]
  if differ:
    raise DistributedError(
      f"The processes of this job disagree on their {what}: process(es) {differ} differ from "
      f"process 0 (this is process {jax.process_index()}). Launch every process with the same "
      "command line and files."
    )


def per_host_batch_size(batch_size: int) -> int:
  """This host's share of a global batch (every host feeds the same number of examples)."""
  per_host, remainder = divmod(batch_size, jax.process_count())
  if remainder:
    raise ValueError(f"batch_size {batch_size} is not divisible by {jax.process_count()} hosts.")
  return per_host
