"""A count of what a data job kept and what it skipped, by reason, with examples (DESIGN §8).

Jobs that read user data skip bad items instead of crashing, and write this report next to
their outputs so that nothing is dropped silently.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from musiclm_jax.runtime.atomic import atomic_write_json


class SkipReport:
  """Counts kept items and skipped items by reason, with up to N examples per reason.

  Attributes:
    name: what was read, e.g. 'musiccaps/train'.
    kept: items kept.
    counts: skipped items per reason.
    examples: per reason, up to `max_examples_per_reason` {'where', 'detail'} dicts.
    files: files written beside the report, by what they hold, e.g. {'missing_clips':
      'missing_clips.csv'} (names relative to the report's folder).
  """

  def __init__(self, name: str, max_examples_per_reason: int = 20):
    self.name = name
    self.max_examples_per_reason = max_examples_per_reason
    self.kept = 0
    self.counts: dict[str, int] = {}
    self.examples: dict[str, list[dict[str, str]]] = {}
    self.files: dict[str, str] = {}
    self._every: dict[str, list[str]] = {}  # reason -> every `where`, for the reasons asked
    self._lock = threading.Lock()

  @property
  def skipped(self) -> int:
    """Skipped items, all reasons together."""
    return sum(self.counts.values())

  def keep(self, n: int = 1) -> None:
    """Counts `n` kept items."""
    with self._lock:
      self.kept += n

  def skip(self, reason: str, where: str, detail: str = "") -> None:
    """Counts one skipped item.

    Args:
      reason: a short machine-readable tag, e.g. 'missing_file'.
      where: the item's source, e.g. 'musiccaps.csv:17 (clips/abc.wav)'.
      detail: what was wrong, for the examples.
    """
    with self._lock:
      self._add(reason, 1, [{"where": where, "detail": detail}])
      if reason in self._every:
        self._every[reason].append(where)

  def list_every(self, reason: str) -> None:
    """From now on, remembers where every item skipped for `reason` was (see `every`)."""
    with self._lock:
      self._every.setdefault(reason, [])

  def every(self, reason: str) -> list[str]:
    """The `where` of every item skipped for `reason` since `list_every(reason)`, in order.

    Unlike the examples, these are not capped; they are kept in memory, not in `to_dict`.
    """
    with self._lock:
      return list(self._every.get(reason, []))

  def add_file(self, what: str, name: str) -> None:
    """Records a file written beside the report, e.g. ('missing_clips', 'missing_clips.csv')."""
    with self._lock:
      self.files[what] = name

  def _add(self, reason: str, count: int, examples: list[dict[str, str]]) -> None:
    self.counts[reason] = self.counts.get(reason, 0) + count
    kept = self.examples.setdefault(reason, [])
    kept.extend(examples[: max(0, self.max_examples_per_reason - len(kept))])

  def merge(self, other: SkipReport) -> None:
    """Adds another report's counts and examples (e.g. from a worker) to this one."""
    state = other.to_dict()
    every = {reason: other.every(reason) for reason in self._every}
    with self._lock:
      self.kept += state["kept"]
      self.files.update(state.get("files", {}))
      for reason, wheres in every.items():
        self._every[reason].extend(wheres)
      for reason, count in state["by_reason"].items():
        self._add(reason, count, state["examples"].get(reason, []))

  def to_dict(self) -> dict[str, Any]:
    """{'name', 'kept', 'skipped', 'by_reason': {reason: count}, 'examples': {reason: [...]}}
    and, when some were written, 'files': {what: name beside the report}."""
    with self._lock:
      state = {
        "name": self.name,
        "kept": self.kept,
        "skipped": self.skipped,
        "by_reason": dict(sorted(self.counts.items())),
        "examples": {r: [dict(e) for e in self.examples[r]] for r in sorted(self.examples)},
      }
      if self.files:
        state["files"] = dict(sorted(self.files.items()))
      return state

  @classmethod
  def from_dict(cls, d: dict[str, Any], max_examples_per_reason: int = 20) -> SkipReport:
    """The report `to_dict` described."""
    report = cls(d["name"], max_examples_per_reason)
    report.kept = int(d.get("kept", 0))
    for reason, count in d.get("by_reason", {}).items():
      report._add(reason, int(count), list(d.get("examples", {}).get(reason, [])))
    report.files = dict(d.get("files", {}))
    return report

  def write(self, path: str | os.PathLike) -> None:
    """Writes the report as JSON, atomically (a temporary file, then os.replace)."""
    atomic_write_json(path, self.to_dict())  # ASCII: paths may hold surrogates

  def summary_line(self) -> str:
    """E.g. 'kept 97, skipped 3 (missing_file: 2, corrupt: 1)', reasons by count."""
    line = f"kept {self.kept}, skipped {self.skipped}"
    if not self.counts:
      return line
    reasons = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
    return f"{line} ({', '.join(f'{r}: {c}' for r, c in reasons)})"

  def __repr__(self) -> str:
    return f"SkipReport({self.name!r}: {self.summary_line()})"
