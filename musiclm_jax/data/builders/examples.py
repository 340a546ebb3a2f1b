"""Manifest rows -> TFDS examples, per split, with every bad row counted (DESIGN §8).

Shared by the plain generator path and the Beam path: `LoadSpec.load` turns one row into a
`(key, features)` pair or a counted skip, `rows_by_split` groups rows, and `first_loadable`
finds one good example per split in the driver, because TFDS refuses to write an empty split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

from musiclm_jax.data import audio_examples
from musiclm_jax.data.builders.features import to_tfds_example, valid_split_name
from musiclm_jax.data.manifest import ManifestRow
from musiclm_jax.data.skip_report import SkipReport

KeyExample = tuple[str, dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class LoadSpec:
  """How rows become examples; picklable, so Beam workers get it as is.

  Attributes:
    sample_rate: output rate in Hz.
    max_seconds: longer clips are cut to their first `max_seconds`.
    min_seconds: shorter clips are skipped ('too_short').
    normalization: 'none', 'peak' or 'loudness'.
  """

  sample_rate: int
  max_seconds: float
  min_seconds: float
  normalization: str

  def load(self, row: ManifestRow, report: SkipReport) -> KeyExample | None:
    """The row as a TFDS `(key, features)` pair, or None with the reason in `report`."""
    try:
      example = audio_examples.load_example(
        row,
        sample_rate=self.sample_rate,
        report=report,
        max_seconds=self.max_seconds,
        normalization=self.normalization,
        min_seconds=self.min_seconds,
      )
    except Exception as e:  # noqa: BLE001 - one odd file must not end a build of thousands
      report.skip("load_error", f"{row.where} ({row.audio_path})", f"{type(e).__name__}: {e}")
      return None
    return None if example is None else to_tfds_example(example)


def rows_by_split(rows: Iterable[ManifestRow], report: SkipReport) -> dict[str, list[ManifestRow]]:
  """Groups rows by split; rows whose split cannot name a TFDS split are skipped ('bad_split').

  Args:
    rows: manifest rows (ids already unique).
    report: gets the skips.

  Returns:
    {split: rows in manifest order}, splits sorted by name.
  """
  by_split: dict[str, list[ManifestRow]] = {}
  for row in rows:
    if not valid_split_name(row.split):
      detail = f"split {row.split!r} is not a letters/digits/_ name (and not 'all')"
      report.skip("bad_split", row.where, detail)
      continue
    by_split.setdefault(row.split, []).append(row)
  return dict(sorted(by_split.items()))


def first_loadable(
  rows: list[ManifestRow], spec: LoadSpec, report: SkipReport
) -> tuple[KeyExample | None, list[ManifestRow]]:
  """Loads rows in order until one works.

  Args:
    rows: a split's rows.
    spec: how to load them.
    report: gets the keep and the skips of the rows tried.

  Returns:
    (the first good example or None if none is good, the rows after it).
  """
  for i, row in enumerate(rows):
    example = spec.load(row, report)
    if example is not None:
      return example, rows[i + 1 :]
  return None, []


def generate(
  first: KeyExample, rows: list[ManifestRow], spec: LoadSpec, report: SkipReport
) -> Iterator[KeyExample]:
  """The plain (non-Beam) generator of one split: `first`, then every good row of `rows`."""
  yield first
  for row in rows:
    example = spec.load(row, report)
    if example is not None:
      yield example
