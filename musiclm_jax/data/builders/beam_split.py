"""The Beam path of one split: rows load on workers, each worker's skips reach the report.

Workers cannot share the driver's `SkipReport`, so every row's outcome leaves the loading step
as a small report dict on a side output; the dicts are merged (`CombineGlobally`) and written
to a partial report file that the builder folds into `skip_report.json` once the pipeline has
run. Skips are also Beam counters (namespace `SKIP_COUNTER_NAMESPACE`, one per
reason) for runner UIs. Imported only when a build uses Beam.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from etils import epath

from musiclm_jax.data.builders.examples import KeyExample, LoadSpec
from musiclm_jax.data.manifest import ManifestRow
from musiclm_jax.data.skip_report import SkipReport

SKIP_COUNTER_NAMESPACE = "musiclm_jax.skips"
_REPORT_TAG = "report"


class _LoadRows(beam.DoFn):
  """Row -> example (main output) and its one-row report dict (`_REPORT_TAG` output)."""

  def __init__(self, spec: LoadSpec, name: str):
    self._spec = spec
    self._name = name

  def process(self, row: ManifestRow) -> Iterator[Any]:
    report = SkipReport(self._name)
    example = self._spec.load(row, report)
    for reason, count in report.counts.items():
      beam.metrics.Metrics.counter(SKIP_COUNTER_NAMESPACE, reason).inc(count)
    if example is not None:
      yield example
    yield beam.pvalue.TaggedOutput(_REPORT_TAG, report.to_dict())


def _merged(report: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
  merged = SkipReport.from_dict(report)
  merged.merge(SkipReport.from_dict(other))
  return merged.to_dict()


class _MergeReports(beam.CombineFn):
  """Report dicts -> one report dict (dicts, not SkipReports, as those hold a lock and do not
  pickle)."""

  def __init__(self, name: str):
    self._name = name

  def create_accumulator(self) -> dict[str, Any]:
    return SkipReport(self._name).to_dict()

  def add_input(self, accumulator: dict[str, Any], element: dict[str, Any]) -> dict[str, Any]:
    return _merged(accumulator, element)

  def merge_accumulators(self, accumulators: Any) -> dict[str, Any]:
    merged = self.create_accumulator()
    for accumulator in accumulators:
      merged = _merged(merged, accumulator)
    return merged

  def extract_output(self, accumulator: dict[str, Any]) -> dict[str, Any]:
    return accumulator


def _write_report(report: dict[str, Any], path: str) -> None:
  epath.Path(path).write_text(json.dumps(report, indent=2))


class LoadSplit(beam.PTransform):
  """PBegin -> PCollection of `(key, features)` for one split; writes the split's report.

  Attributes:
    first: an example the driver already loaded (so the split is never empty).
    rows: the rows left to load on workers.
    spec: how rows load.
    split: the split's name.
    report_path: where the merged worker report goes.
  """

  def __init__(
    self,
    first: KeyExample,
    rows: list[ManifestRow],
    spec: LoadSpec,
    split: str,
    report_path: str | os.PathLike,
  ):
    super().__init__()
    self.first = first
    self.rows = rows
    self.spec = spec
    self.split = split
    self.report_path = os.fspath(report_path)

  def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
    loaded = (
      pbegin
      | "Rows" >> beam.Create(self.rows)
      | "Load" >> beam.ParDo(_LoadRows(self.spec, self.split)).with_outputs(_REPORT_TAG, main="ex")
    )
    _ = (
      loaded[_REPORT_TAG]
      | "MergeReports" >> beam.CombineGlobally(_MergeReports(self.split))
      | "WriteReport" >> beam.Map(_write_report, path=self.report_path)
    )
    first = pbegin | "First" >> beam.Create([self.first])
    return (first, loaded.ex) | "Examples" >> beam.Flatten()
