"""Architecture dataclasses to and from the JSON a checkpoint's metadata holds.

A checkpoint records the frozen config dataclass it was trained with (`dataclasses.asdict`), so a
loader can rebuild the model from the checkpoint alone. JSON turns tuples into lists and nested
dataclasses into dicts; `from_json` undoes both, guided by the dataclass's field types.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

_T = TypeVar("_T")


def to_json(config: Any) -> dict[str, Any]:
  """A frozen config dataclass as the plain dict JSON gives back (tuples become lists)."""
  return json.loads(json.dumps(dataclasses.asdict(config)))


def from_json(cls: type[_T], values: Mapping[str, Any]) -> _T:
  """The `cls` instance saved as `values` (unknown keys ignored, so older fields can retire).

  Raises:
    ValueError: `values` lacks a field `cls` requires.
  """
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for field in dataclasses.fields(cls):
    if field.name not in values:
      continue
    value = values[field.name]
    field_type = hints[field.name]
    if dataclasses.is_dataclass(field_type) and isinstance(value, Mapping):
      value = from_json(field_type, value)
    elif isinstance(value, list):
      value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    kwargs[field.name] = value
  try:
    return cls(**kwargs)
  except TypeError as e:
    raise ValueError(f"Saved architecture does not describe a {cls.__name__}: {e}") from e
