"""Atomic file writes: readers see the old file or the whole new one, never a partial one.

Every writer goes through a temporary file in the destination's directory (so the rename never
crosses a filesystem), flushed and fsynced, then `os.replace`d over the destination, and the
directory is fsynced so the rename itself survives a crash. A writer that raises leaves no
temporary file and the old content in place. Local paths only: `data/token_cache.py` writes
through `tf.io.gfile` for remote filesystems.

This module imports nothing from musiclm_jax, so any room (data, tokenizers, training, jobs,
decoding, main) may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

PathLike = str | os.PathLike[str]

# mkstemp creates files readable by the owner only; written files get the usual permissions.
_FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
  """Yields a temporary path to write; on a clean exit it becomes `path` atomically.

  For writers that take a path (a library's `save(path)`, `savefig`). The parent directory is
  created. If the body raises, the temporary file is removed and `path` is untouched.

  Args:
    path: the destination.

  Yields:
    The temporary file's path (in the same directory; it exists, empty, when yielded).
  """
  path = os.path.abspath(os.fspath(path))
  directory, name = os.path.split(path)
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
  os.close(fd)
  try:
    yield tmp
    with open(tmp, "rb+") as f:  # the writer may have closed its own handle without a sync
      os.fsync(f.fileno())
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  _fsync_dir(directory)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
  """Writes `data` to `path` atomically (see the module docstring)."""
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
  """Writes `text` to `path` atomically."""
  atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, value: Any, *, indent: int | None = 2) -> None:
  """Writes `value` as JSON (and a final newline) to `path` atomically.

  The value is serialised before anything is written, so an unserialisable value raises
  `TypeError` and leaves `path` as it was.
  """
  atomic_write_text(path, json.dumps(value, indent=indent) + "\n")


def _fsync_dir(directory: str) -> None:
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
