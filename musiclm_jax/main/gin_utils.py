"""The gin boundary: parsing `--gin_file` / `--gin.KEY=VALUE` flags, t5x style.

Library code never imports gin; gin files bind plain Python through
`from __gin__ import dynamic_registration`. Only `musiclm_jax/main/` touches gin.
"""

from __future__ import annotations

import os
import tokenize
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gin

REPO_ROOT = Path(__file__).resolve().parents[2]
GIN_DIR = REPO_ROOT / "gin"


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
  for path in [os.getcwd(), str(REPO_ROOT), str(GIN_DIR), *search_paths]:
    gin.add_config_file_search_path(path)
  try:
    gin.parse_config_files_and_bindings(
      list(gin_files), list(bindings), finalize_config=False, skip_unknown=False
    )
  except (ValueError, SyntaxError, OSError, ImportError, TypeError, tokenize.TokenError) as e:
    raise GinConfigError(
      f"Bad gin configuration: {e}\n(files: {list(gin_files)}; bindings: {list(bindings)})"
    ) from None


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
