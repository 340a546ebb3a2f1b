"""Tests for checkpoints.py: real orbax checkpoints in tmp_path on 8 fake CPU devices."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from musiclm_jax import axes, checkpoints
from musiclm_jax.checkpoints import (
  CheckpointConfig,
  CheckpointCorruptedError,
  Checkpointer,
  CheckpointMismatchError,
)
from musiclm_jax.partitioning import MeshConfig, Partitioner, make_mesh

PyTree = Any

# How orbax (the installed version) names a step directory while it is being written.
TMP_SUFFIX = ".orbax-checkpoint-tmp"
META = {"model": "semantic", "config_fingerprint": "abc123"}


@pytest.fixture(scope="module")
def mesh8() -> jax.sharding.Mesh:
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices (tests/conftest.py fakes them on CPU)")
  return make_mesh(MeshConfig(ici_data=8, ici_fsdp=1, ici_tensor=1))


def _params(rng: jax.Array, width: int = 8) -> dict:
  k1, k2 = jax.random.split(rng)
  return {
    "kernel": jax.random.normal(k1, (16, width)),
    "bias": jax.random.normal(k2, (width,)),
  }


class _State(flax.struct.PyTreeNode):
  """Shaped like the trainer's TrainState."""

  step: jax.Array
  params: dict
  opt_state: optax.OptState
  rng: jax.Array


def _train_state(mesh: jax.sharding.Mesh, seed: int = 0, width: int = 8) -> _State:
  """Step, params, optax state (namedtuples), raw PRNG key data; kernels sharded on 'data'."""
  params = _params(jax.random.key(seed), width)
  tx = optax.adam(1e-3)
  state = _State(
    step=jnp.int32(seed),
    params=params,
    opt_state=jax.tree.map(lambda x: x + 0.5, tx.init(params)),
    rng=jax.random.key_data(jax.random.key(seed + 100)),
  )

  def shard(path, x):
    # Split the 16-row kernels (and their Adam moments) over 'data'; the rest replicated.
    spec = P("data", None) if x.ndim == 2 else P()
    return jax.device_put(x, NamedSharding(mesh, spec))

  return jax.tree_util.tree_map_with_path(shard, state)


def _abstract(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _assert_trees_equal(actual: PyTree, expected: PyTree) -> None:
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def _config(**kwargs) -> CheckpointConfig:
  defaults = dict(save_interval_steps=1, max_to_keep=None, save_on_sigterm=False)
  return CheckpointConfig(**{**defaults, **kwargs})


@pytest.mark.parametrize("async_save", [True, False])
def test_round_trip_with_sharded_arrays_and_extra(tmp_path, mesh8, async_save):
  state = _train_state(mesh8, seed=3)
  extra = {"data_position": 1234, "epoch": 2, "files": ["a.wav", "b.wav"]}
  with Checkpointer(tmp_path, _config(async_save=async_save), metadata=META) as ckpt:
    assert ckpt.save(10, state, extra)
  with Checkpointer(tmp_path, _config(), metadata=META) as ckpt:
    assert ckpt.latest_step() == 10
    restored, restored_extra = ckpt.restore(_abstract(state))
  _assert_trees_equal(restored, state)
  assert restored_extra == extra
  assert restored.params["kernel"].sharding == state.params["kernel"].sharding
  assert restored.rng.dtype == jnp.uint32


def test_restore_params_needs_no_optimizer(tmp_path, mesh8):
  """Loaders read the weights of a state saved with any optimizer state (here Adam's)."""
  state = _train_state(mesh8, seed=5)
  with Checkpointer(tmp_path, _config(async_save=False), metadata=META) as ckpt:
    ckpt.save(7, state, {})
  with Checkpointer(tmp_path, _config()) as ckpt:
    params = ckpt.restore_params()
  _assert_trees_equal(params, state.params)
  with Checkpointer(tmp_path, _config(), metadata={**META, "model": "coarse"}) as ckpt:
    with pytest.raises(CheckpointMismatchError, match="model: saved 'semantic'"):
      ckpt.restore_params(7)


def test_restore_onto_a_different_mesh(tmp_path, mesh8):
  state = _train_state(mesh8, seed=1)
  with Checkpointer(tmp_path, _config(), metadata=META) as ckpt:
    ckpt.save(5, state, {})

  # The abstract state comes from a Partitioner on a (2, 2, 2) mesh, as the trainer builds it.
  partitioner = Partitioner(MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2))

  def boxed_init():
    def box(x):
      names = (axes.EMBED, axes.MLP) if x.ndim == 2 else (None,) * x.ndim
      return nn.LogicallyPartitioned(x, names)

    return jax.tree.map(box, state)

  abstract, shardings = partitioner.abstract_and_shardings(boxed_init)
  with Checkpointer(tmp_path, _config(), metadata=META) as ckpt:
    restored, _ = ckpt.restore(abstract)

  _assert_trees_equal(restored, state)
  for array, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings), strict=True):
    assert array.sharding == sharding
  kernel = restored.params["kernel"]
  assert kernel.sharding.spec == P("fsdp", "tensor")
  assert kernel.sharding.mesh.shape == {"data": 2, "fsdp": 2, "tensor": 2}
  assert {s.data.shape for s in kernel.addressable_shards} == {(8, 4)}


def test_keeps_only_the_newest_n(tmp_path, mesh8):
  state = _train_state(mesh8)
  with Checkpointer(tmp_path, _config(max_to_keep=2)) as ckpt:
    for step in range(1, 5):
      assert ckpt.save(step, state, {"step": step})
  with Checkpointer(tmp_path, _config(max_to_keep=2)) as ckpt:
    assert ckpt.all_steps() == [3, 4]
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["3", "4"]


def test_saves_at_the_interval_only(tmp_path, mesh8):
  state = _train_state(mesh8)
  with Checkpointer(tmp_path, _config(save_interval_steps=5)) as ckpt:
    saved = [step for step in range(1, 13) if ckpt.save(step, state, {})]
    assert saved == [5, 10]
    assert ckpt.save(12, state, {}, force=True)
    # An existing step is neither due again nor overwritten.
    assert not ckpt.should_save(10)
    assert not ckpt.save(10, state, {}, force=True)
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [5, 10, 12]


def test_no_checkpoint(tmp_path, mesh8):
  with Checkpointer(tmp_path / "empty", _config()) as ckpt:
    assert ckpt.latest_step() is None
    with pytest.raises(FileNotFoundError, match="No complete checkpoint in .*empty"):
      ckpt.restore(_abstract(_train_state(mesh8)))


def test_missing_step(tmp_path, mesh8):
  state = _train_state(mesh8)
  with Checkpointer(tmp_path, _config()) as ckpt:
    ckpt.save(3, state, {})
    with pytest.raises(FileNotFoundError, match=r"step 7 .*complete steps there: \[3\]"):
      ckpt.restore(_abstract(state), step=7)


def _other_width(state, mesh):
  return _abstract(_train_state(mesh, width=4))


def _with_new_leaf(state, mesh):
  abstract = _abstract(state)
  abstract.params["scale"] = jax.ShapeDtypeStruct(
    (8,), jnp.float32, sharding=NamedSharding(mesh, P())
  )
  return abstract


def _without_leaf(state, mesh):
  abstract = _abstract(state)
  del abstract.params["bias"]
  return abstract


@pytest.mark.parametrize(
  "make_abstract, expected_lines",
  [
    (
      _other_width,
      [
        "params/kernel: saved shape (16, 8), expected (16, 4)",
        "params/bias: saved shape (8,), expected (4,)",
        # The optimizer moments follow the params.
        "opt_state/0/mu/kernel: saved shape (16, 8), expected (16, 4)",
      ],
    ),
    (_with_new_leaf, ["params/scale: missing from the checkpoint (expected shape (8,))"]),
    (_without_leaf, ["params/bias: in the checkpoint (shape (8,)) but not expected"]),
  ],
  ids=["shape", "missing_leaf", "unexpected_leaf"],
)
def test_tree_mismatch_names_paths_and_shapes(tmp_path, mesh8, make_abstract, expected_lines):
  state = _train_state(mesh8)
  with Checkpointer(tmp_path, _config(), metadata=META) as ckpt:
    ckpt.save(7, state, {})
    with pytest.raises(CheckpointMismatchError) as info:
      ckpt.restore(make_abstract(state, mesh8))
  message = str(info.value)
  assert f"step 7 in {tmp_path}" in message
  for line in expected_lines:
    assert line in message


def test_metadata_mismatch(tmp_path, mesh8):
  state = _train_state(mesh8)
  with Checkpointer(tmp_path, _config(), metadata={**META, "model": "coarse"}) as ckpt:
    ckpt.save(4, state, {})
  with Checkpointer(tmp_path, _config(), metadata=META) as ckpt:
    with pytest.raises(CheckpointMismatchError) as info:
      ckpt.restore(_abstract(state))
  message = str(info.value)
  assert f"step 4 in {tmp_path}" in message
  assert "model: saved 'coarse', expected 'semantic'" in message
  assert "config_fingerprint" not in message


def test_abstract_state_needs_shardings(tmp_path, mesh8):
  state = _train_state(mesh8)
  abstract = _abstract(state).replace(rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  with Checkpointer(tmp_path, _config()) as ckpt:
    ckpt.save(1, state, {})
    with pytest.raises(ValueError, match="sharding .*\n  rng"):
      ckpt.restore(abstract)


def test_metadata_must_be_json(tmp_path):
  with pytest.raises(TypeError, match="JSON"):
    Checkpointer(tmp_path, _config(), metadata={"model": object()})


def _truncate_array_data(step_dir: pathlib.Path) -> None:
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:5])


def _delete_state_manifest(step_dir: pathlib.Path) -> None:
  (step_dir / "state" / "manifest.ocdbt").unlink()


def _delete_extra(step_dir: pathlib.Path) -> None:
  shutil.rmtree(step_dir / "extra")


# Orbax's reader leaves a callback on an event loop it has closed once tensorstore fails.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
  "corrupt", [_truncate_array_data, _delete_state_manifest, _delete_extra], ids=lambda f: f.__name__
)
def test_corrupted_checkpoint_names_the_step(tmp_path, mesh8, corrupt):
  state = _train_state(mesh8)
  with Checkpointer(tmp_path, _config(), metadata=META) as ckpt:
    ckpt.save(1, state, {})
    ckpt.save(2, state, {})
  corrupt(tmp_path / "2")
  with Checkpointer(tmp_path, _config(), metadata=META) as ckpt:
    with pytest.raises(CheckpointCorruptedError, match=r"step 2 in .*restore step 1 instead"):
      ckpt.restore(_abstract(state))
    restored, _ = ckpt.restore(_abstract(state), step=1)
  _assert_trees_equal(restored, state)


def test_leftover_temporary_directory_is_never_chosen(tmp_path, mesh8):
  states = {step: _train_state(mesh8, seed=step) for step in (1, 2, 3)}
  with Checkpointer(tmp_path, _config(), metadata=META) as ckpt:
    ckpt.save(1, states[1], {"step": 1})
    ckpt.save(2, states[2], {"step": 2})
  # What a writer killed mid-save leaves: a full-looking step 3 that was never renamed.
  shutil.copytree(tmp_path / "2", tmp_path / f"3{TMP_SUFFIX}")

  with Checkpointer(tmp_path, _config(), metadata=META) as ckpt:
    assert ckpt.latest_step() == 2
    restored, extra = ckpt.restore(_abstract(states[2]))
    _assert_trees_equal(restored, states[2])
    assert extra == {"step": 2}
    # Resuming saves step 3 again over the leftover.
    assert ckpt.save(3, states[3], {"step": 3})
    ckpt.wait_until_finished()
    assert ckpt.latest_step() == 3
    _assert_trees_equal(ckpt.restore(_abstract(states[3]))[0], states[3])
  assert not (tmp_path / f"3{TMP_SUFFIX}").exists()


def test_latest_step_skips_a_save_in_flight(tmp_path, mesh8):
  state = {"w": jax.device_put(jnp.ones((2048, 1024)), NamedSharding(mesh8, P("data")))}
  with Checkpointer(tmp_path, _config(async_save=True)) as ckpt:
    ckpt.save(1, state, {})
    ckpt.wait_until_finished()
    ckpt.save(2, state, {})
    in_flight = not (tmp_path / "2").exists()
    latest = ckpt.latest_step()
    if in_flight:
      assert latest == 1
    ckpt.wait_until_finished()
    assert ckpt.latest_step() == 2


_KILLED_WRITER = textwrap.dedent(
  """
  import os, signal, sys
  import jax, jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P
  from musiclm_jax.checkpoints import Checkpointer, CheckpointConfig
  from musiclm_jax.partitioning import MeshConfig, make_mesh

  mesh = make_mesh(MeshConfig(ici_data=8))
  sharding = NamedSharding(mesh, P("data"))
  def state(value):
    return {"w": jax.device_put(jnp.full((4096, 2048), value, jnp.float32), sharding),
            "step": jnp.int32(value)}
  config = CheckpointConfig(save_interval_steps=1, async_save=True, save_on_sigterm=False)
  ckpt = Checkpointer(sys.argv[1], config, metadata={"model": "killed"})
  ckpt.save(1, state(1), {"step": 1})
  ckpt.wait_until_finished()
  ckpt.save(2, state(2), {"step": 2})
  print("step 2 started", flush=True)
  os.kill(os.getpid(), signal.SIGKILL)
  """
)


def test_writer_killed_mid_save_leaves_the_previous_step(tmp_path, mesh8):
  script = tmp_path / "killed_writer.py"
  script.write_text(_KILLED_WRITER)
  directory = tmp_path / "ckpt"
  result = subprocess.run(
    [sys.executable, str(script), str(directory)],
    env=dict(os.environ),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
  assert "step 2 started" in result.stdout

  sharding = NamedSharding(mesh8, P("data"))
  abstract = {
    "w": jax.ShapeDtypeStruct((4096, 2048), jnp.float32, sharding=sharding),
    "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh8, P())),
  }
  with Checkpointer(directory, _config(), metadata={"model": "killed"}) as ckpt:
    latest = ckpt.latest_step()
    # Step 2 counts only if it was finished before the kill, and then it must be whole.
    assert latest in (1, 2)
    if latest == 1:
      assert not (directory / "2").exists()
    restored, extra = ckpt.restore(abstract)
  assert extra == {"step": latest}
  assert int(restored["step"]) == latest
  np.testing.assert_array_equal(np.asarray(restored["w"]), np.full((4096, 2048), latest))


def test_sigterm_triggers_a_save_and_is_restored_on_close(tmp_path, mesh8):
  state = _train_state(mesh8)
  before = signal.getsignal(signal.SIGTERM)
  ckpt = Checkpointer(tmp_path, _config(save_interval_steps=100, save_on_sigterm=True))
  assert signal.getsignal(signal.SIGTERM) != before
  assert not ckpt.preempted
  assert not ckpt.should_save(3)

  os.kill(os.getpid(), signal.SIGTERM)
  # Python runs the handler in the main thread at its next check; give it a moment.
  deadline = time.monotonic() + 5
  while not ckpt.preempted and time.monotonic() < deadline:
    time.sleep(0.01)
  assert ckpt.preempted
  assert ckpt.should_save(3)
  assert ckpt.save(3, state, {"step": 3})
  # A preemption save is complete when save returns: the job is about to exit.
  assert ckpt.latest_step() == 3
  assert (tmp_path / "3").is_dir()
  assert not ckpt.should_save(3)

  ckpt.close()
  assert signal.getsignal(signal.SIGTERM) == before


def test_no_sigterm_handler_when_disabled(tmp_path):
  before = signal.getsignal(signal.SIGTERM)
  with Checkpointer(tmp_path, _config(save_on_sigterm=False)) as ckpt:
    assert signal.getsignal(signal.SIGTERM) == before
    assert not ckpt.preempted


# Reading trained models (loaders).


def test_restore_subtrees_reads_only_the_requested_subtrees(tmp_path, mesh8):
  """A loader asks for the params' kernel and the rng: no optimizer state comes back."""
  state = _train_state(mesh8, seed=4)
  with Checkpointer(tmp_path, _config(async_save=False), metadata=META) as ckpt:
    ckpt.save(2, state, {})
  with Checkpointer.reader(tmp_path) as reader:
    restored = reader.restore_subtrees([("params", "kernel"), ("rng",)])
  assert set(restored) == {"params", "rng"} and set(restored["params"]) == {"kernel"}
  _assert_trees_equal(restored, {"params": {"kernel": state.params["kernel"]}, "rng": state.rng})
  with Checkpointer.reader(tmp_path) as reader:
    with pytest.raises(CheckpointMismatchError, match="has no 'params/scale'.*'opt_state'"):
      reader.restore_subtrees([("params", "scale")])


def test_restore_trained_checks_the_model_and_names_the_directory(tmp_path, mesh8):
  state = _train_state(mesh8, seed=6)
  with Checkpointer(tmp_path, _config(async_save=False), metadata=META) as ckpt:
    ckpt.save(9, state, {})
  metadata, tree, step = checkpoints.restore_trained(tmp_path, ("coarse", "semantic"), "an LM")
  assert (metadata, step) == (META, 9)
  _assert_trees_equal(tree, {"params": state.params})
  assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(tree))  # on the host
  with pytest.raises(CheckpointMismatchError, match=f"{tmp_path} holds a 'semantic' .*not a codec"):
    checkpoints.restore_trained(tmp_path, "soundstream", "a codec")


def test_read_saved_step_reads_no_arrays_and_creates_nothing(tmp_path, mesh8):
  state = _train_state(mesh8)
  with Checkpointer(tmp_path, _config(async_save=False), metadata=META) as ckpt:
    ckpt.save(3, state, {})
    ckpt.save(5, state, {})
  saved = checkpoints.read_saved_step(tmp_path)
  assert (saved.directory, saved.step, saved.metadata) == (str(tmp_path), 5, META)
  assert saved.committed_ns > checkpoints.read_saved_step(tmp_path, step=3).committed_ns > 0
  with pytest.raises(FileNotFoundError, match="No complete checkpoint in .*absent"):
    checkpoints.read_saved_step(tmp_path / "absent")
  assert not (tmp_path / "absent").exists()


def test_a_reader_does_not_save(tmp_path, mesh8):
  with Checkpointer.reader(tmp_path) as reader:
    with pytest.raises(ValueError, match="read-only"):
      reader.save(1, _train_state(mesh8), {}, force=True)
  assert not list(tmp_path.iterdir())
