"""Starting the multi-controller runtime: flags, environment, cluster detection, agreement."""

from __future__ import annotations

import argparse

import pytest

from musiclm_jax.runtime import distributed


def _args(*argv: str) -> argparse.Namespace:
  parser = argparse.ArgumentParser()
  distributed.add_flags(parser)
  return parser.parse_args(list(argv))


def test_flags_win_over_the_environment():
  environ = {
    "JAX_COORDINATOR_ADDRESS": "envhost:1",
    "JAX_NUM_PROCESSES": "4",
    "JAX_PROCESS_ID": "3",
    "MUSICLM_JAX_DISTRIBUTED": "off",
  }
  config = distributed.config_from_flags(
    _args("--coordinator_address=flaghost:2", "--process_id=1", "--distributed=on"), environ
  )
  assert config == distributed.DistributedConfig(
    mode="on", coordinator_address="flaghost:2", num_processes=4, process_id=1
  )
  assert config.explicit


def test_nothing_given_is_auto_without_a_coordinator():
  config = distributed.config_from_flags(_args(), {})
  assert config.mode == "auto" and not config.explicit


@pytest.mark.parametrize(
  "argv, environ, message",
  [
    (["--coordinator_address=h:1"], {}, "Give all of --coordinator_address"),
    (["--coordinator_address=h:1", "--num_processes=2", "--process_id=2"], {}, "process_id <"),
    ([], {"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
    ([], {"MUSICLM_JAX_DISTRIBUTED": "maybe"}, "--distributed must be one of"),
  ],
)
def test_inconsistent_settings_are_refused_naming_them(argv, environ, message):
  with pytest.raises(ValueError, match=message):
    distributed.config_from_flags(_args(*argv), environ)


@pytest.mark.parametrize(
  "environ, cluster",
  [
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, "slurm"),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),  # one task: a single process
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "openmpi"),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2"}, "tpu-multislice"),
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, "tpu-pod"),
    ({}, None),
  ],
)
def test_detect_cluster(environ, cluster, monkeypatch):
  monkeypatch.setattr(distributed.glob, "glob", lambda pattern: [])  # not on a TPU VM
  assert distributed.detect_cluster(environ) == cluster


def test_auto_outside_a_cluster_and_off_stay_single_process(monkeypatch):
  monkeypatch.setattr(distributed, "detect_cluster", lambda: None)
  calls = []
  monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda **kw: calls.append(kw))
  assert not distributed.initialize(distributed.DistributedConfig())
  assert not distributed.initialize(
    distributed.DistributedConfig("off", "h:1", num_processes=2, process_id=0)
  )
  assert calls == []


def test_a_coordinator_that_cannot_start_names_the_settings(monkeypatch):
  def fail(**kwargs):
    raise RuntimeError("DEADLINE_EXCEEDED: Barrier timed out")

  monkeypatch.setattr(distributed.jax.distributed, "initialize", fail)
  config = distributed.DistributedConfig("auto", "10.1.2.3:1234", num_processes=2, process_id=1)
  with pytest.raises(distributed.DistributedError) as info:
    distributed.initialize(config)
  message = str(info.value)
  assert "coordinator 10.1.2.3:1234, process 1 of 2" in message
  assert "DEADLINE_EXCEEDED" in message and "same --coordinator_address" in message


def test_fingerprint_is_a_stable_int32_that_tells_configs_apart():
  a = distributed.fingerprint("MODEL_DIR = 'a'")
  assert a == distributed.fingerprint("MODEL_DIR = 'a'")
  assert a != distributed.fingerprint("MODEL_DIR = 'b'")
  assert 0 <= a < 2**31


def test_one_process_always_agrees():
  distributed.check_agreement("gin configuration", "anything")
