"""Checkpoints of the train state: async save, keep-N, resume, preemption, partial-write safety.

One step directory per saved step, written by orbax's `CheckpointManager` as a composite of three
items:

  <dir>/<step>/state     the train state (sharded jax arrays), `StandardSave` / `StandardRestore`
  <dir>/<step>/extra     JSON: data position and anything else the trainer needs to resume
  <dir>/<step>/metadata  JSON: what was saved (model name, config fingerprint), checked on restore

Orbax writes each step into `<step>.orbax-checkpoint-tmp` and renames it when every item is
complete (on object stores it writes a commit file instead), so a step cut off mid-write is never
listed. Restoring checks the saved tree and metadata against what the caller expects before any
array is read, so a checkpoint of another model or size fails with a message, not deep in
tensorstore.

Loaders of trained models read through `restore_trained` (the saved metadata, chosen subtrees
such as the params, and the step; no optimizer or trainer is rebuilt), and callers that only
need to know which checkpoint a directory holds use `read_saved_step` (no arrays are read).
Neither creates nor changes anything in the directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

PyTree = Any
_T = TypeVar("_T")

# Where a job keeps its step directories inside its model dir (every job and loader agrees).
CHECKPOINT_SUBDIR = "checkpoints"

_STATE = "state"
_EXTRA = "extra"
_METADATA = "metadata"
# How many differing paths an error lists before summarising the rest.
_MAX_LISTED = 20


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When and how checkpoints are written.

  Attributes:
    save_interval_steps: save when `step % save_interval_steps == 0`.
    max_to_keep: newest complete checkpoints kept; older ones are deleted (None: keep all).
    async_save: write in a background thread after the arrays are copied to host memory.
    save_on_sigterm: on SIGTERM (preemption notice), save at the next step so the job can exit.
  """

  save_interval_steps: int = 1000
  max_to_keep: int | None = 3
  async_save: bool = True
  save_on_sigterm: bool = True

  def __post_init__(self):
    if self.save_interval_steps < 1:
      raise ValueError(f"save_interval_steps must be >= 1, got {self.save_interval_steps}.")
    if self.max_to_keep is not None and self.max_to_keep < 1:
      raise ValueError(f"max_to_keep must be None or >= 1, got {self.max_to_keep}.")


class CheckpointMismatchError(ValueError):
  """A checkpoint holds another model, size or configuration than the one being restored."""


class CheckpointCorruptedError(RuntimeError):
  """A checkpoint that looked complete could not be read (files deleted or truncated)."""


def _to_json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
  """Round-trips `value` through JSON so it compares equal to what a restore returns.

  Failing here, in the caller's thread, beats failing later inside an async write.
  """
  try:
    return json.loads(json.dumps(dict(value)))
  except (TypeError, ValueError) as e:
    raise TypeError(f"Checkpoint {what} must be JSON-serialisable: {e}") from e


def _key_name(key: Any) -> str:
  """One path component, spelled as orbax names nested dict keys in its tree metadata."""
  if isinstance(key, jax.tree_util.DictKey | jax.tree_util.FlattenedIndexKey):
    return str(key.key)
  if isinstance(key, jax.tree_util.GetAttrKey):
    return key.name
  if isinstance(key, jax.tree_util.SequenceKey):
    return str(key.idx)
  return str(key)


def _leaf_shapes(tree: PyTree) -> dict[str, tuple[int, ...]]:
  """Maps 'a/b/0' paths of every leaf to its shape; works on arrays, ShapeDtypeStructs, metadata."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {
    "/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", np.shape(leaf)))
    for path, leaf in leaves
  }


def _check_has_shardings(abstract_state: PyTree) -> None:
  """Without a sharding orbax would fall back to the saved one, which names the saving mesh."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(abstract_state)
  missing = [
    "/".join(_key_name(k) for k in path)
    for path, leaf in leaves
    if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None
  ]
  if missing:
    raise ValueError(
      "restore needs a sharding on every ShapeDtypeStruct of the abstract state (build it with "
      f"Partitioner.abstract_and_shardings); none on:\n{_listing(missing)}"
    )


def _tree_differences(
  saved: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]
) -> list[str]:
  """Lines naming each path that is missing, unexpected, or of another shape."""
  lines = []
  for path in sorted(saved.keys() | expected.keys()):
    if path not in saved:
      lines.append(f"{path}: missing from the checkpoint (expected shape {expected[path]})")
    elif path not in expected:
      lines.append(f"{path}: in the checkpoint (shape {saved[path]}) but not expected")
    elif saved[path] != expected[path]:
      lines.append(f"{path}: saved shape {saved[path]}, expected {expected[path]}")
  return lines


def _metadata_differences(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
  """Lines naming each expected metadata key whose saved value differs.

  Keys only in the checkpoint are ignored, so a checkpoint may record more than callers check.
  """
  return [
    f"{key}: saved {saved.get(key, '<absent>')!r}, expected {value!r}"
    for key, value in sorted(expected.items())
    if saved.get(key, "<absent>") != value
  ]


def _first_words(error: Exception, limit: int = 300) -> str:
  """The gist of a storage error; tensorstore appends a long JSON spec the full chain keeps."""
  text = str(error).split(" [tensorstore_spec=")[0].strip()
  return text if len(text) <= limit else text[:limit] + " ..."


def _saved_subtree(saved_tree: PyTree, path: tuple[str, ...]) -> PyTree | None:
  """The subtree of the saved tree metadata at `path` (dict keys), or None if it is absent."""
  node = saved_tree
  for key in path:
    if not isinstance(node, Mapping) or key not in node:
      return None
    node = node[key]
  return node


def _nest(path: tuple[str, ...], value: PyTree, into: dict[str, Any]) -> None:
  """Puts `value` at `path` of the nested dict `into`, creating the dicts on the way."""
  for key in path[:-1]:
    into = into.setdefault(key, {})
  into[path[-1]] = value


def _listing(lines: list[str]) -> str:
  shown = lines[:_MAX_LISTED]
  if len(lines) > _MAX_LISTED:
    shown.append(f"... and {len(lines) - _MAX_LISTED} more")
  return "\n".join("  " + line for line in shown)


class Checkpointer:
  """Saves and restores a train state under one directory (T5X's checkpointer role).

  Usage:

    with Checkpointer(model_dir, CheckpointConfig(), metadata={"model": "semantic"}) as ckpt:
      if ckpt.latest_step() is not None:
        state, extra = ckpt.restore(abstract_state)
      for step in ...:
        state = train_step(state, batch)
        ckpt.save(step, state, {"data_position": n})
        if ckpt.preempted:
          break

  Multi-host: every process makes the same calls; orbax coordinates the writes. The SIGTERM
  handler is only installed in single-process jobs, since in multi-process jobs JAX's preemption
  service owns SIGTERM and orbax turns it into a step that every process agrees on.
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    config: CheckpointConfig,
    *,
    metadata: Mapping[str, Any] | None = None,
    read_only: bool = False,
  ):
    """Opens (creating if absent, unless `read_only`) the directory that holds the step directories.

    Args:
      directory: root of the step directories.
      config: save interval, retention, async and preemption behaviour.
      metadata: JSON-able identity of what is saved (e.g. {'model': 'semantic',
        'config_fingerprint': ...}); written with every step, and each of its keys must match
        on restore (keys only in the checkpoint are not checked).
      read_only: only list and restore: nothing is created, saved or deleted, and no SIGTERM
        handler is installed (see `Checkpointer.reader`).
    """
    self.directory = os.path.abspath(os.fspath(directory))  # orbax refuses relative paths
    self.config = config
    self.read_only = read_only
    self._metadata = None if metadata is None else _to_json(metadata, "metadata")
    self._preempted = False
    self._pending_step: int | None = None
    self._sigterm_installed = False
    self._previous_sigterm_handler: Any = signal.SIG_DFL
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=self._manager_options(config, read_only),
      handler_registry=self._registry(),
    )
    if config.save_on_sigterm and not read_only:
      self._install_sigterm_handler()

  @classmethod
  def reader(cls, directory: str | os.PathLike, **kwargs: Any) -> Checkpointer:
    """A read-only Checkpointer of `directory` (kwargs: `metadata` to check on restore)."""
    return cls(directory, CheckpointConfig(save_on_sigterm=False), read_only=True, **kwargs)

  @staticmethod
  def _manager_options(config: CheckpointConfig, read_only: bool) -> ocp.CheckpointManagerOptions:
    policies = ocp.checkpoint_managers
    return ocp.CheckpointManagerOptions(
      # No InitialSavePolicy: a fresh run saves at the interval, not at whatever step comes first.
      save_decision_policy=policies.AnySavePolicy(
        [
          policies.FixedIntervalPolicy(config.save_interval_steps),
          policies.PreemptionCheckpointingPolicy(),
        ]
      ),
      preservation_policy=policies.LatestN(n=config.max_to_keep),
      enable_async_checkpointing=config.async_save,
      # Left False: cleaning at start-up would delete the in-progress step of a trainer writing
      # to the same directory while an evaluator opens it. A stale temporary directory is
      # never listed, and orbax replaces it when that step is saved again.
      cleanup_tmp_directories=False,
      # Not orbax's read_only (it warns on every open): a reader only lists and restores, never
      # creates the directory, and `save` refuses.
      create=not read_only,
    )

  @staticmethod
  def _registry() -> ocp.handlers.CheckpointHandlerRegistry:
    registry = ocp.handlers.create_default_handler_registry(
      **{
        _STATE: ocp.StandardCheckpointHandler(),
        _EXTRA: ocp.JsonCheckpointHandler(),
        _METADATA: ocp.JsonCheckpointHandler(),
      }
    )
    # StandardRestore reads the whole saved tree; partial restores (chosen subtrees) go through
    # the PyTree handler that StandardCheckpointHandler wraps, so the on-disk format is the same.
    registry.add(_STATE, ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler())
    return registry

  # Preemption.

  def _install_sigterm_handler(self) -> None:
    if threading.current_thread() is not threading.main_thread():
      logging.warning("Checkpointer created off the main thread: no SIGTERM handler installed.")
      return
    if jax.process_count() > 1:
      return
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    # None: a handler set outside Python; the default is the closest thing to give back.
    self._previous_sigterm_handler = signal.SIG_DFL if previous is None else previous
    self._sigterm_installed = True

  def _on_sigterm(self, signum: int, frame: Any) -> None:
    del signum, frame
    # Only a flag: the training loop saves at its next step and exits between steps.
    self._preempted = True

  def _restore_sigterm_handler(self) -> None:
    if not self._sigterm_installed:
      return
    self._sigterm_installed = False
    if threading.current_thread() is not threading.main_thread():
      logging.warning("Checkpointer closed off the main thread: its SIGTERM handler stays.")
      return
    # Leave alone a handler someone installed after ours.
    if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
      signal.signal(signal.SIGTERM, self._previous_sigterm_handler)

  @property
  def preempted(self) -> bool:
    """True once a SIGTERM (or, multi-host, JAX's preemption sync point) has been seen."""
    return self._preempted

  # Steps.

  def all_steps(self) -> list[int]:
    """Steps of complete checkpoints, oldest first."""
    steps = list(self._manager.all_steps())
    # Orbax lists a step as soon as its async save starts; it is complete once finalised.
    if self._pending_step in steps and self._manager.is_saving_in_progress():
      steps.remove(self._pending_step)
    return sorted(steps)

  def latest_step(self) -> int | None:
    """Newest complete checkpoint step, or None if there is none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def should_save(self, step: int) -> bool:
    """True if `step` is at the save interval or a preemption notice has arrived.

    Never true for a step at or before one already saved (or being saved).
    """
    step = int(step)
    if self._manager.reached_preemption(step):
      self._preempted = True
    if self._preempted:
      newest = self._manager.latest_step()
      return newest is None or step > newest
    return self._manager.should_save(step)

  # Save and restore.

  def save(
    self, step: int, state: PyTree, extra: Mapping[str, Any], *, force: bool = False
  ) -> bool:
    """Saves `state` and `extra` as `step` if `should_save(step)` (or `force`).

    Async saves return once the arrays are copied to host memory, so `state` may be donated
    right after. After a preemption the save is waited for, so the caller can exit.

    Args:
      step: training step the state belongs to.
      state: pytree of (sharded) jax arrays: step, params, opt_state, raw PRNG key data.
      extra: JSON-able data needed to resume (data position, ...).
      force: save even off the interval (e.g. the last step of training).

    Returns:
      Whether a save was started (False if not due, or if `step` is already saved).
    """
    if self.read_only:
      raise ValueError(f"Checkpointer of {self.directory} is read-only; it does not save.")
    step = int(step)
    if not force and not self.should_save(step):
      return False
    if step in self._manager.all_steps():
      logging.info("Checkpoint step %d already in %s; not saving it again.", step, self.directory)
      return False
    args = ocp.args.Composite(
      **{
        _STATE: ocp.args.StandardSave(state),
        _EXTRA: ocp.args.JsonSave(_to_json(extra, "extra")),
        _METADATA: ocp.args.JsonSave(self._metadata or {}),
      }
    )
    saved = self._manager.save(step, args=args, force=True)
    if saved:
      self._pending_step = step
    if self._preempted:
      self.wait_until_finished()
    return saved

  def restore(self, abstract_state: PyTree, step: int | None = None) -> tuple[PyTree, dict]:
    """Restores a step (default: the latest complete one) onto the shardings of `abstract_state`.

    Args:
      abstract_state: tree of `jax.ShapeDtypeStruct` (or arrays) whose `.sharding` says where
        each restored array goes; the mesh may differ from the one the checkpoint was saved from.
      step: step to restore; None for the latest complete one.

    Returns:
      (state with the structure of `abstract_state`, the `extra` dict saved with it).

    Raises:
      FileNotFoundError: no complete checkpoint (or not `step`) in the directory.
      CheckpointMismatchError: the checkpoint's tree, shapes or metadata differ from those given.
      CheckpointCorruptedError: the step's files could not be read.
    """
    _check_has_shardings(abstract_state)
    # A step still being written here is waited for rather than read half-done.
    self._manager.wait_until_finished()
    step = self._check_step(step)
    saved_metadata, extra = self._restore_json(step)
    self._check_metadata(step, saved_metadata)
    self._check_tree(step, abstract_state)
    args = ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract_state)})
    restored = self._read(step, lambda: self._manager.restore(step, args=args))
    return restored[_STATE], extra

  def restore_params(
    self, step: int | None = None, sharding: jax.sharding.Sharding | None = None
  ) -> PyTree:
    """The `params` of a saved train state, whatever optimizer state it was saved with.

    Loaders (tokenizers, decoders) need the weights only; the saved tree's own shapes describe
    what to read, so the optimizer a model was trained with does not have to be rebuilt.

    Args:
      step: step to read; None for the latest complete one.
      sharding: where every array goes (default: the first local device).
    """
    return self.restore_subtrees([("params",)], step, sharding)["params"]

  def restore_subtrees(
    self,
    paths: Sequence[tuple[str, ...]],
    step: int | None = None,
    sharding: jax.sharding.Sharding | None = None,
  ) -> dict[str, Any]:
    """Only the chosen subtrees of a saved train state, e.g. [("params", "generator")].

    The saved tree's own shapes describe what to read, and orbax reads only those arrays (a
    partial restore): a loader neither rebuilds the optimizer nor reads its state.

    Args:
      paths: dict-key paths into the saved state, each naming a subtree to restore.
      step: step to read; None for the latest complete one.
      sharding: where every array goes (default: the first local device).

    Returns:
      Nested dicts holding just those subtrees, e.g. {"params": {"generator": ...}}.

    Raises:
      FileNotFoundError: no complete checkpoint (or not `step`).
      CheckpointMismatchError: the metadata differs from this Checkpointer's, or a path is not
        in the saved state.
    """
    self._manager.wait_until_finished()
    step = self._check_step(step)
    saved_metadata, _ = self._restore_json(step)
    self._check_metadata(step, saved_metadata)
    saved_tree = self._saved_tree(step)
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    wanted: dict[str, Any] = {}
    for path in paths:
      subtree = _saved_subtree(saved_tree, tuple(path))
      if not path or subtree is None:
        raise CheckpointMismatchError(
          f"Checkpoint step {step} in {self.directory} has no {'/'.join(path) or 'path'!r}; its "
          f"state holds: {sorted(saved_tree) if isinstance(saved_tree, Mapping) else saved_tree}."
        )
      abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), subtree
      )
      _nest(tuple(path), abstract, wanted)
    args = ocp.args.PyTreeRestore(
      item=wanted,
      restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
      partial_restore=True,
    )
    composite = ocp.args.Composite(**{_STATE: args})
    restored = self._read(step, lambda: self._manager.restore(step, args=composite))
    return restored[_STATE]

  def committed_ns(self, step: int | None = None) -> int | None:
    """When orbax committed a step (default: the latest complete one), in ns since the epoch.

    Tells two trainings apart that stopped at the same step with the same architecture.
    """
    self._manager.wait_until_finished()
    step = self._check_step(step)
    return self._read(step, lambda: self._manager.metadata(step).commit_timestamp_nsecs)

  def saved_metadata(self, step: int | None = None) -> dict[str, Any]:
    """The metadata a step (default: the latest complete one) was saved with.

    Lets a loader rebuild the model a checkpoint was trained for before restoring it.
    """
    self._manager.wait_until_finished()
    return self._restore_json(self._check_step(step))[0]

  def _check_step(self, step: int | None) -> int:
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise FileNotFoundError(
          f"No complete checkpoint in {self.directory}. Start from scratch, or point the run at "
          "the directory that holds its checkpoints."
        )
      return steps[-1]
    if int(step) not in steps:
      raise FileNotFoundError(
        f"No complete checkpoint for step {step} in {self.directory}; complete steps there: "
        f"{steps or 'none'}."
      )
    return int(step)

  def _read(self, step: int, read_fn: Callable[[], _T]) -> _T:
    """Runs an orbax read, turning its failures into an error that names the step."""
    try:
      return read_fn()
    except Exception as e:
      older = [s for s in self.all_steps() if s < step]
      hint = f"restore step {older[-1]} instead" if older else "start from scratch"
      raise CheckpointCorruptedError(
        f"Checkpoint step {step} in {self.directory} could not be read; it is corrupted or "
        f"incomplete ({type(e).__name__}: {_first_words(e)}). Delete "
        f"{os.path.join(self.directory, str(step))} or {hint}."
      ) from e

  def _restore_json(self, step: int) -> tuple[dict, dict]:
    args = ocp.args.Composite(**{_METADATA: ocp.args.JsonRestore(), _EXTRA: ocp.args.JsonRestore()})
    restored = self._read(step, lambda: self._manager.restore(step, args=args))
    return dict(restored[_METADATA] or {}), dict(restored[_EXTRA] or {})

  def _check_metadata(self, step: int, saved: Mapping[str, Any]) -> None:
    if self._metadata is None:
      return
    differences = _metadata_differences(saved, self._metadata)
    if differences:
      raise CheckpointMismatchError(
        f"Checkpoint step {step} in {self.directory} was saved for something else:\n"
        f"{_listing(differences)}\n"
        "Restore it with the model and config it was trained with, or give this run its own "
        "directory."
      )

  def _saved_tree(self, step: int) -> PyTree:
    """The saved state's tree metadata (shapes and dtypes; no array is read)."""
    return self._read(step, lambda: self._manager.metadata(step).item_metadata[_STATE].tree)

  def _check_tree(self, step: int, abstract_state: PyTree) -> None:
    saved_tree = self._saved_tree(step)
    differences = _tree_differences(_leaf_shapes(saved_tree), _leaf_shapes(abstract_state))
    if differences:
      raise CheckpointMismatchError(
        f"Checkpoint step {step} in {self.directory} does not match the state being restored "
        f"(another model or size?):\n{_listing(differences)}\n"
        "Restore it with the config it was trained with, or start this model in a fresh "
        "directory."
      )

  # Lifetime.

  def wait_until_finished(self) -> None:
    """Blocks until an in-flight async save is complete (raises if it failed)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and deletions and gives back the SIGTERM handler."""
    try:
      self._manager.close()
    finally:
      self._restore_sigterm_handler()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()


# Reading trained models.


@dataclasses.dataclass(frozen=True)
class SavedStep:
  """Which checkpoint a directory holds, read without any of its arrays.

  Attributes:
    directory: the absolute checkpoint directory.
    step: the step read (the latest complete one unless asked for another).
    metadata: the metadata it was saved with (model name, architecture, ...).
    committed_ns: orbax's commit time of that step (ns since the epoch), or None if unrecorded.
  """

  directory: str
  step: int
  metadata: dict[str, Any]
  committed_ns: int | None


def read_saved_step(checkpoint_dir: str | os.PathLike, step: int | None = None) -> SavedStep:
  """The step, metadata and commit time of a checkpoint (default: the latest complete step).

  Raises:
    FileNotFoundError: no complete checkpoint (or not `step`) in `checkpoint_dir`.
  """
  with Checkpointer.reader(checkpoint_dir) as reader:
    metadata = reader.saved_metadata(step)
    step = reader.latest_step() if step is None else int(step)
    return SavedStep(reader.directory, step, metadata, reader.committed_ns(step))


def restore_trained(
  checkpoint_dir: str | os.PathLike,
  model_names: str | Collection[str],
  what: str,
  *,
  subtrees: Sequence[tuple[str, ...]] = (("params",),),
  step: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any], int]:
  """(saved metadata, the chosen subtrees on the host, step) of a trained model's checkpoint.

  The loaders of trained models share this: the architecture comes from the metadata, and only
  the arrays a loader needs are read (by default the params), whatever optimizer state was saved
  with them.

  Args:
    checkpoint_dir: the directory of step directories (`<model_dir>/checkpoints`).
    model_names: the saved metadata's "model" a loader accepts (one name or several).
    what: the expected model in words, for the error ("a SoundStream codec").
    subtrees: dict-key paths into the saved state, e.g. (("params", "generator"),
      ("model_state",)); the result nests them the same way.
    step: step to read; None for the latest complete one.

  Raises:
    FileNotFoundError: no complete checkpoint (or not `step`).
    CheckpointMismatchError: the checkpoint holds another model (named `what` in the message),
      or lacks a requested subtree.
  """
  names = (model_names,) if isinstance(model_names, str) else tuple(model_names)
  with Checkpointer.reader(checkpoint_dir) as reader:
    metadata = reader.saved_metadata(step)
    step = reader.latest_step() if step is None else int(step)
    if metadata.get("model") not in names:
      raise CheckpointMismatchError(
        f"{checkpoint_dir} holds a {metadata.get('model')!r} checkpoint, not {what}."
      )
    tree = reader.restore_subtrees(subtrees, step)
  return metadata, jax.device_get(tree), step
