"""A count of what a data job kept and what it skipped, by reason, with examples (DESIGN §8).

Jobs that read user data skip bad items instead of crashing, and write this report next to
their outputs so that nothing is dropped silently.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from typing import Any


class SkipReport:
  """Counts kept items and skipped items by reason, with up to N examples per reason.

  Attributes:
    name: what was read, e.g. 'musiccaps/train'.
    kept: items kept.
    counts: skipped items per reason.
    examples: per reason, up to `max_examples_per_reason` {'where', 'detail'} dicts.
  """

  def __init__(self, name: str, max_examples_per_reason: int = 20):
    self.name = name
    self.max_examples_per_reason = max_examples_per_reason
    self.kept = 0
    self.counts: dict[str, int] = {}
    self.examples: dict[str, list[dict[str, str]]] = {}
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

  def _add(self, reason: str, count: int, examples: list[dict[str, str]]) -> None:
    self.counts[reason] = self.counts.get(reason, 0) + count
    kept = self.examples.setdefault(reason, [])
    kept.extend(examples[: max(0, self.max_examples_per_reason - len(kept))])

  def merge(self, other: SkipReport) -> None:
    """Adds another report's counts and examples (e.g. from a worker) to this one."""
    state = other.to_dict()
    with self._lock:
      self.kept += state["kept"]
      for reason, count in state["by_reason"].items():
        self._add(reason, count, state["examples"].get(reason, []))

  def to_dict(self) -> dict[str, Any]:
    """{'name', 'kept', 'skipped', 'by_reason': {reason: count}, 'examples': {reason: [...]}}."""
    with self._lock:
      return {
        "name": self.name,
        "kept": self.kept,
        "skipped": self.skipped,
        "by_reason": dict(sorted(self.counts.items())),
        "examples": {r: [dict(e) for e in self.examples[r]] for r in sorted(self.examples)},
      }

  @classmethod
  def from_dict(cls, d: dict[str, Any], max_examples_per_reason: int = 20) -> SkipReport:
    """The report `to_dict` described."""
    report = cls(d["name"], max_examples_per_reason)
    report.kept = int(d.get("kept", 0))
    for reason, count in d.get("by_reason", {}).items():
      report._add(reason, int(count), list(d.get("examples", {}).get(reason, [])))
    return report

  def write(self, path: str | os.PathLike) -> None:
    """Writes the report as JSON, atomically (a temporary file, then os.replace)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(self.to_dict(), f, indent=2)  # ASCII: paths may hold surrogates
        f.write("\n")
      os.chmod(tmp, 0o644)
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.unlink(tmp)
      raise

  def summary_line(self) -> str:
    """E.g. 'kept 97, skipped 3 (missing_file: 2, corrupt: 1)', reasons by count."""
    line = f"kept {self.kept}, skipped {self.skipped}"
    if not self.counts:
      return line
    reasons = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
    return f"{line} ({', '.join(f'{r}: {c}' for r, c in reasons)})"

  def __repr__(self) -> str:
    return f"SkipReport({self.name!r}: {self.summary_line()})"
