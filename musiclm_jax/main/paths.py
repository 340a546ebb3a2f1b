"""Paths given on the command line, checked before any work (and any model load).

A verb calls `check_output_dir` / `check_output_file` on what it will write, and
`check_input_dir` / `check_input_file` on what it will read; a path that cannot
be used raises `PathError`, which `cli.main` turns into one line on stderr and exit code 2.
"""

from __future__ import annotations

import os


class PathError(ValueError):
  """A path given on the command line cannot be used as asked."""


def _remote(path: str) -> bool:
  return "://" in path  # gs://, s3://: nothing cheap to check from here


def _nearest_existing(path: str) -> str:
  """`path` itself or the closest folder above it that exists (or is a file)."""
  path = os.path.abspath(path)
  while not os.path.lexists(path):
    path = os.path.dirname(path)
  return path


def _check_can_create(folder: str, path: str, what: str) -> None:
  """Refuses `path` when `folder` (its own folder) or its nearest existing ancestor is a file or
  is not writable."""
  ancestor = _nearest_existing(folder)
  if not os.path.isdir(ancestor):
    raise PathError(f"{what} {path}: {ancestor} is a file, not a folder")
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise PathError(f"{what} {path}: cannot write in {ancestor} (permission denied)")


def check_output_dir(path: str, what: str) -> None:
  """Checks that folder `path` exists and is writable, or can be made.

  Args:
    path: the folder a verb will write into.
    what: how the user gave it, e.g. '--out_dir' or 'MODEL_DIR'.

  Raises:
    PathError: `path` is a file, lies under a file, or sits in a folder this user cannot write.
  """
  if not path:
    raise PathError(f"{what} is empty")
  if _remote(path):
    return
  if os.path.exists(path) and not os.path.isdir(path):
    raise PathError(f"{what} {path}: is a file, not a folder")
  _check_can_create(path, path, what)


def check_output_file(path: str, what: str) -> None:
  """Checks that file `path` can be written: not a folder, its parent a folder or makeable.

  Raises:
    PathError: `path` is a folder, lies under a file, or sits in an unwritable folder.
  """
  if not path:
    raise PathError(f"{what} is empty")
  if _remote(path):
    return
  if os.path.isdir(path):
    raise PathError(f"{what} {path}: is a folder, not a file")
  _check_can_create(os.path.dirname(os.path.abspath(path)), path, what)


def _check_input(path: str, what: str, folder: bool) -> None:
  if _remote(path):
    return  # remote paths are left to their readers
  kind = "folder" if folder else "file"
  if not os.path.exists(path):
    raise PathError(f"{what} {path}: no such {kind}")
  if os.path.isdir(path) != folder:
    raise PathError(f"{what} {path}: is a {'file' if folder else 'folder'}, not a {kind}")


def check_input_dir(path: str, what: str) -> None:
  """Checks that folder `path` exists.

  Raises:
    PathError: `path` does not exist or is a file.
  """
  _check_input(path, what, folder=True)


def check_input_file(path: str, what: str) -> None:
  """Checks that file `path` exists.

  Raises:
    PathError: `path` does not exist or is a folder.
  """
  _check_input(path, what, folder=False)
