"""The gin boundary: parsing `--gin_file` / `--gin.KEY=VALUE` flags, t5x style.

Library code never imports gin; gin files bind plain Python through
`from __gin__ import dynamic_registration`. Only `musiclm_jax/main/` touches gin.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.resources
import os
import re
import tokenize
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gin

# --gin_search_path folders of the current `parse`, for the includes gin reads through our reader.
_SEARCH_PATHS: list[str] = []


# `NAME = value`: a binding of a macro (all-caps, no dot or scope), as `--gin.NAME=value` makes.
_MACRO_BINDING = re.compile(r"\s*([A-Z][A-Z0-9_]*)\s*=")


class GinConfigError(ValueError):
  """A gin file or binding could not be parsed or bound."""


def split_gin_args(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
  """Separates gin flags from the others.

  Accepts `--gin_file=F` / `--gin_file F`, `--gin.KEY=VALUE` (t5x shorthand for a binding) and
  `--gin_bindings=KEY=VALUE`.

  Returns:
    (gin files, gin binding strings, remaining arguments).
  """
  files, bindings, rest = [], [], []
  args = list(argv)
  while args:
    arg = args.pop(0)
    if arg == "--gin_file" and args:
      files.append(args.pop(0))
    elif arg.startswith("--gin_file="):
      files.append(arg.split("=", 1)[1])
    elif arg.startswith("--gin_bindings="):
      bindings.append(arg.split("=", 1)[1])
    elif arg.startswith("--gin."):
      key, sep, value = arg[len("--gin.") :].partition("=")
      if not sep:
        raise GinConfigError(f"{arg!r}: expected --gin.KEY=VALUE.")
      bindings.append(f"{key} = {value}")
    else:
      rest.append(arg)
  return files, bindings, rest


def packaged_gin_dir() -> Path:
  """The gin directory that ships with musiclm_jax.

  A wheel holds the repository's top-level gin/ as `musiclm_jax/gin` (setup.py `package_dir`); an
  editable install reads the checkout's gin/ in place.
  """
  installed = Path(str(importlib.resources.files("musiclm_jax") / "gin"))
  return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "gin"


def gin_search_roots(search_paths: Sequence[str] = ()) -> list[str]:
  """Where a relative gin path is looked up, in order.

  The working directory, then `search_paths`, then the packaged gin directory's parent (for
  `gin/models/...`, as the README writes paths) and the directory itself (for `models/...`).
  """
  gin_dir = packaged_gin_dir()
  return [os.getcwd(), *search_paths, str(gin_dir.parent), str(gin_dir)]


def resolve_gin_file(path: str, search_paths: Sequence[str] = ()) -> str:
  """The absolute path of gin file `path`: itself if absolute, else under the first search root.

  Raises:
    GinConfigError: naming `path` and the roots searched, where none holds it.
  """
  roots = [""] if os.path.isabs(path) else gin_search_roots(search_paths)
  for root in roots:
    candidate = os.path.join(root, path)
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  raise GinConfigError(f"Unable to open file: {path}. Searched: {roots}.")


def _open_gin_file(path: str):
  try:
    return open(resolve_gin_file(path, _SEARCH_PATHS))
  except GinConfigError as e:
    raise FileNotFoundError(str(e)) from None  # gin turns an include's OSError into its message


def _claims_gin_file(path: str) -> bool:
  del path  # every path: a missing one fails in _open_gin_file, naming where it looked
  return True


def _install_gin_file_reader() -> None:
  """Puts our reader before gin's own, for top-level files and `include` lines alike.

  gin tries its readers in order; its second, the resource reader, logs `ERROR Path not found`
  for every `gin/...` path that is not under the working directory, even when a later search
  path holds it. gin only appends readers (`register_file_reader`), so ours is inserted first.
  """
  readers = gin.config._FILE_READERS
  if (_open_gin_file, _claims_gin_file) not in readers:
    readers.insert(0, (_open_gin_file, _claims_gin_file))


def parse(
  gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = ()
) -> None:
  """Parses files then bindings (not finalized: verbs may add their own bindings).

  Raises:
    GinConfigError: naming the file/line or binding that failed, and what to check.
  """
  if not gin_files:
    raise GinConfigError("No --gin_file given; e.g. --gin_file=gin/models/semantic/tiny.gin.")
  gin.clear_config()
  _SEARCH_PATHS[:] = search_paths
  _install_gin_file_reader()
  for path in gin_files:
    resolve_gin_file(path, search_paths)  # a missing file fails here, naming where it looked
  try:
    gin.parse_config_files_and_bindings(
      list(gin_files), [], finalize_config=False, skip_unknown=False
    )
    check_macro_overrides(bindings)  # before they define what they meant to override
    gin.parse_config(list(bindings), skip_unknown=False)
  except (ValueError, SyntaxError, OSError, ImportError, TypeError, tokenize.TokenError) as e:
    if isinstance(e, GinConfigError):
      raise
    raise GinConfigError(
      f"Bad gin configuration: {e}\n(files: {list(gin_files)}; bindings: {list(bindings)})"
    ) from None


def defined_macros() -> list[str]:
  """The names of the macros the parsed gin files define (`NAME = value`), sorted."""
  return sorted(scope for scope, selector in gin.config._CONFIG if selector == "gin.macro")


def check_macro_overrides(bindings: Sequence[str]) -> None:
  """Refuses a binding of a macro (an all-caps name, no dot) that no parsed gin file defines.

  Gin checks `fn.param = ...` bindings itself, but `NAME = ...` would define a new macro that
  nothing reads: a typo such as `--gin.NUM_STEPZ=5` would be silently ignored.

  Raises:
    GinConfigError: naming the macro and the closest defined names.
  """
  defined = defined_macros()
  for binding in bindings:
    for line in binding.splitlines():
      match = _MACRO_BINDING.match(line)
      if match is None or match.group(1) in defined:
        continue
      name = match.group(1)
      close = difflib.get_close_matches(name, defined, n=3)
      hint = f"did you mean {' or '.join(close)}?" if close else f"defined: {', '.join(defined)}"
      raise GinConfigError(
        f"{name} = ... overrides a macro that no gin file given defines ({hint})"
      )


GIN_FLAGS_HELP = """gin flags:
  --gin_file=FILE        a gin file: a run, model or mesh file (repeatable; a later one wins)
  --gin.KEY=VALUE        override a macro (--gin.NUM_STEPS=5) or a parameter
                         (--gin.optimizers.OptimizerConfig.learning_rate=1e-3); strings in two
                         quotes: --gin.MODEL_DIR="'runs/x'". A macro no file defines is an error.
  --gin_bindings='KEY = VALUE'  the same, in gin syntax (repeatable)"""


def add_gin_flags(parser: argparse.ArgumentParser, example: str) -> None:
  """Adds --gin_search_path, and the gin flags and an example launch command to `--help`.

  The gin flags themselves are taken out by `split_gin_args` before `parser` sees the rest.
  """
  parser.formatter_class = argparse.RawDescriptionHelpFormatter
  parser.add_argument(
    "--gin_search_path", action="append", default=[], help="another folder of gin files"
  )
  parser.epilog = f"{GIN_FLAGS_HELP}\n\nexample:\n  {example}"


def bind(lines: str) -> None:
  """Adds bindings written in gin syntax (with its own `from __gin__ import` lines)."""
  try:
    gin.parse_config(lines)
  except (ValueError, SyntaxError, ImportError) as e:
    raise GinConfigError(f"Bad gin configuration: {e}") from None


def _identity(value: Any = None) -> Any:
  return value


def macro(name: str, default: Any = gin.REQUIRED) -> Any:
  """The evaluated value of macro `name` (e.g. 'MODEL' -> a constructed StageLM)."""
  try:
    gin.query_parameter(f"{name}/macro.value")
  except ValueError:
    if default is gin.REQUIRED:
      raise GinConfigError(f"Macro {name} is not defined by the gin files given.") from None
    return default
  bind(
    f"from __gin__ import dynamic_registration\n"
    f"from musiclm_jax.main import gin_utils\n"
    f"gin_utils._identity.value = %{name}"
  )
  value = configured(_identity)()
  if value is gin.REQUIRED or type(value) is type(gin.REQUIRED):
    raise GinConfigError(
      f"{name} is required: pass --gin.{name}=... (strings in quotes, e.g. "
      f"--gin.{name}=\"'runs/x'\")."
    )
  return value


def configured(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn` with its gin bindings applied (`fn` itself if no gin file mentions it)."""
  try:
    return gin.get_configurable(fn)
  except ValueError:
    return fn


def write_config(model_dir: str, name: str = "config.gin", operative: bool = False) -> str:
  """Writes the resolved (or, after the run, operative) config into `model_dir`."""
  os.makedirs(model_dir, exist_ok=True)
  path = os.path.join(model_dir, name)
  with open(path, "w") as f:
    f.write(gin.operative_config_str() if operative else gin.config_str())
  return path
