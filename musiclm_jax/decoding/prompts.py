"""Prompts of offline batch decoding: parsing and checking JSONL lines, sharding, batching.

A prompt line is a JSON object:

    {"id": "calm-1", "text": "a calm violin melody", "seconds": 10, "seed": 7}
    {"id": "story-1", "segments": [{"text": "a calm intro", "seconds": 15},
                                   {"text": "an upbeat finale", "seconds": 15}]}

`seed` defaults to a stable hash of the id, so a prompt's music never depends on which host or
batch generated it. With `segments` (story mode) `text` and `seconds` may be left out; a `seconds`
given anyway must equal the segments' sum. A bad line becomes a `PromptError` naming its
file:line; the others go on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

from musiclm_jax.decoding.pipeline import Request, StorySegment

MAX_SEED = 2**32  # the pipeline's seeds are uint32
MAX_ID_LENGTH = 200  # ids name files: <id>.wav must fit a file name
# A typo like 1e9 seconds would exhaust a host's memory on every rerun; an hour is far beyond use.
MAX_SECONDS = 3600.0
PROMPT_KEYS = frozenset({"id", "text", "seconds", "seed", "segments"})
SEGMENT_KEYS = frozenset({"text", "seconds"})

# -- prompts ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Prompt:
  """One valid prompt line.

  Attributes:
    id: unique in its file; names `<id>.wav`.
    segments: the story (one segment for a plain text prompt).
    seed: the request's PRNG seed, in [0, 2**32).
    source: "file:line" of the prompt.
    text: the line's `text` (None for a story given without one).
  """

  id: str
  segments: tuple[StorySegment, ...]
  seed: int
  source: str
  text: str | None = None

  @property
  def seconds(self) -> float:
    return float(sum(s.seconds for s in self.segments))

  def request(self) -> Request:
    return Request(self.segments, self.seed)

  def record(self) -> dict[str, Any]:
    """The prompt's fields as the manifest holds them."""
    record: dict[str, Any] = {"id": self.id}
    if self.text is not None:
      record["text"] = self.text
    if len(self.segments) > 1 or self.text is None:
      record["segments"] = [{"text": s.text, "seconds": s.seconds} for s in self.segments]
    record.update(seconds=self.seconds, seed=self.seed)
    return record


@dataclasses.dataclass(frozen=True)
class PromptError:
  """A prompt that was not generated: a bad line, or a generation that failed.

  Attributes:
    source: "file:line" of the prompt line.
    reason: what is wrong and what to do.
    id: the prompt's id when the line has a usable one.
  """

  source: str
  reason: str
  id: str | None = None

  def record(self) -> dict[str, Any]:
    return {"source": self.source, "id": self.id, "reason": self.reason}


class _BadLine(ValueError):
  pass


def stable_seed(prompt_id: str) -> int:
  """The default seed of a prompt: a hash of its id in [0, 2**32), the same on every host."""
  return int.from_bytes(hashlib.sha256(f"seed:{prompt_id}".encode()).digest()[:4], "little")


def _number(value: Any, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise _BadLine(f"{name} must be a finite number, got {value!r}")
  if not 0 < value <= MAX_SECONDS:
    raise _BadLine(f"{name} must be > 0 and at most {MAX_SECONDS:g}, got {value!r}")
  return float(value)


def _text(value: Any, name: str) -> str:
  if not isinstance(value, str) or not value.strip():
    raise _BadLine(f"{name} must be a non-empty string, got {value!r}")
  return value


def _prompt_id(value: Any) -> str:
  if isinstance(value, int) and not isinstance(value, bool):
    value = str(value)
  if not isinstance(value, str) or not value:
    raise _BadLine(f"'id' must be a non-empty string, got {value!r}")
  if (
    len(value.encode()) > MAX_ID_LENGTH
    or value.startswith(".")
    or any(c in value for c in "/\\")
    or any(ord(c) < 32 for c in value)
  ):
    raise _BadLine(
      f"id {value!r} cannot name a file: use at most {MAX_ID_LENGTH} bytes, no '/', '\\' or "
      "control characters, and no leading '.'"
    )
  return value


def _segments(value: Any) -> tuple[StorySegment, ...]:
  if not isinstance(value, list) or not value:
    raise _BadLine(f"'segments' must be a non-empty list of {{text, seconds}}, got {value!r}")
  segments = []
  for i, segment in enumerate(value):
    if not isinstance(segment, dict) or set(segment) != SEGMENT_KEYS:
      raise _BadLine(f"segments[{i}] must be an object with exactly 'text' and 'seconds'")
    segments.append(
      StorySegment(
        _text(segment["text"], f"segments[{i}].text"),
        _number(segment["seconds"], f"segments[{i}].seconds"),
      )
    )
  return tuple(segments)


def _seed(value: Any, prompt_id: str) -> int:
  if value is None:
    return stable_seed(prompt_id)
  if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_SEED:
    raise _BadLine(f"'seed' must be an integer in [0, 2**32), got {value!r}")
  return value


def parse_prompt(obj: Any, source: str) -> Prompt:
  """One decoded JSON line → a `Prompt`.

  Raises:
    ValueError: the reason the line is not a valid prompt.
  """
  if not isinstance(obj, dict):
    raise _BadLine(f"a prompt line must be a JSON object, got {type(obj).__name__}")
  unknown = sorted(set(obj) - PROMPT_KEYS)
  if unknown:
    raise _BadLine(f"unknown field(s) {unknown}; a prompt has {sorted(PROMPT_KEYS)}")
  if "id" not in obj:
    raise _BadLine("missing 'id'")
  prompt_id = _prompt_id(obj["id"])
  text = None if obj.get("text") is None else _text(obj["text"], "'text'")
  if "segments" in obj:
    segments = _segments(obj["segments"])
    total = sum(s.seconds for s in segments)
    if total > MAX_SECONDS:
      raise _BadLine(f"the segments last {total:g} s, more than {MAX_SECONDS:g}")
    if "seconds" in obj and not math.isclose(_number(obj["seconds"], "'seconds'"), total):
      raise _BadLine(f"'seconds' ({obj['seconds']}) differs from the segments' sum ({total:g})")
  else:
    missing = [k for k in ("text", "seconds") if obj.get(k) is None]
    if missing:
      raise _BadLine(f"missing {missing} (or give 'segments')")
    segments = (StorySegment(text, _number(obj["seconds"], "'seconds'")),)
  return Prompt(prompt_id, segments, _seed(obj.get("seed"), prompt_id), source, text)


def _id_if_any(obj: Any) -> str | None:
  value = obj.get("id") if isinstance(obj, dict) else None
  return value if isinstance(value, str) else None


def parse_prompts(path: str) -> tuple[list[Prompt], list[PromptError]]:
  """Reads a prompts JSONL file; blank lines are skipped.

  Returns:
    (valid prompts in file order, one error per bad line). A repeated id is an error on each
    later line; the first one stands.

  Raises:
    FileNotFoundError: no such file.
  """
  prompts, errors, first_line = [], [], {}
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      source = f"{path}:{number}"
      try:
        line = raw.decode("utf-8")
        if not line.strip():
          continue
        prompt = parse_prompt(json.loads(line), source)
      except UnicodeDecodeError as e:
        errors.append(PromptError(source, f"not UTF-8: {e}"))
        continue
      except json.JSONDecodeError as e:
        errors.append(PromptError(source, f"invalid JSON: {e}"))
        continue
      except _BadLine as e:
        errors.append(PromptError(source, str(e), _id_if_any(json.loads(line))))
        continue
      if prompt.id in first_line:
        errors.append(
          PromptError(
            source, f"duplicate id {prompt.id!r} (first on line {first_line[prompt.id]})", prompt.id
          )
        )
        continue
      first_line[prompt.id] = number
      prompts.append(prompt)
  return prompts, errors


# -- sharding and batching -------------------------------------------------------------------------


def shard_of(prompt_id: str, num_shards: int) -> int:
  """The shard that generates a prompt: a hash of its id, so editing the file moves no prompt."""
  digest = hashlib.sha256(f"shard:{prompt_id}".encode()).digest()
  return int.from_bytes(digest[:8], "little") % num_shards


def shard_prompts(prompts: Sequence[Prompt], shard_id: int, num_shards: int) -> list[Prompt]:
  """This shard's prompts, in file order; the shards together hold every prompt exactly once."""
  if not 0 <= shard_id < num_shards:
    raise ValueError(f"need 0 <= shard_id ({shard_id}) < num_shards ({num_shards})")
  return [p for p in prompts if shard_of(p.id, num_shards) == shard_id]


def batches(prompts: Sequence[Prompt], batch_size: int) -> list[list[Prompt]]:
  """Prompts grouped by their segments' durations (one compiled plan), at most batch_size each.

  Groups come in the order of their first prompt in the file.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  groups: dict[tuple[float, ...], list[Prompt]] = {}
  for prompt in prompts:
    groups.setdefault(tuple(s.seconds for s in prompt.segments), []).append(prompt)
  return [
    group[start : start + batch_size]
    for group in groups.values()
    for start in range(0, len(group), batch_size)
  ]
