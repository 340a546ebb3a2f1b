"""`musiccaps`: Google's MusicCaps captions with the clips the user downloaded (manual_dir).

  musiclm-jax build-data --dataset=musiccaps --manual_dir=DIR --data_dir=DATA
  tfds build --imports=musiclm_jax.data.builders musiccaps --manual_dir=DIR --data_dir=DATA

Splits: 'train' and 'eval' (rows with is_audioset_eval true), or a split column's values.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable

from etils import epath

from musiclm_jax.data import manifest
from musiclm_jax.data.builders import base
from musiclm_jax.data.manifest import ManifestRow, read_musiccaps_csv
from musiclm_jax.data.skip_report import SkipReport

CSV_NAME = "musiccaps-public.csv"
CLIPS_SUBDIRS = ("audio", "clips", "wav", "wavs")
# Every clip the CSV names that manual_dir lacks, beside skip_report.json: what to download.
MISSING_CLIPS_NAME = "missing_clips.csv"
MISSING_CLIPS_COLUMNS = ("ytid", "start_s", "end_s")

_INSTRUCTIONS = f"""
Put the MusicCaps CSV ({CSV_NAME} from https://www.kaggle.com/datasets/googleai/musiccaps,
header ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,
is_balanced_subset,is_audioset_eval) in manual_dir, and the clips you downloaded in
manual_dir/{{{",".join(CLIPS_SUBDIRS)}}}/ (the first that exists) or manual_dir itself, named
{{ytid}}.wav or [{{ytid}}]-[{{start}}-{{end}}].wav (.flac, .ogg and .mp3 work too). Clips that are
missing are skipped and counted in skip_report.json, and listed (ytid,start_s,end_s) in
missing_clips.csv beside it.
"""


def clips_dir(manual_dir: epath.Path, subdir: str | None) -> epath.Path:
  """`manual_dir/subdir` if given, else the first of CLIPS_SUBDIRS that exists, else manual_dir."""
  if subdir:
    return manual_dir / subdir
  return next((manual_dir / d for d in CLIPS_SUBDIRS if (manual_dir / d).is_dir()), manual_dir)


def missing_clips_csv(csv_path: str, wheres: Iterable[str]) -> str:
  """The CSV text (header ytid,start_s,end_s) of the MusicCaps rows at `wheres`.

  Args:
    csv_path: the MusicCaps CSV the rows were read from.
    wheres: skip-report locations of rows, `f"{csv_path}:{line}"` (the line a record starts on).
  """
  lines = {int(where.rsplit(":", 1)[1]) for where in wheres}
  records = manifest._csv_records(csv_path)  # the line numbering the skip report used
  header = next((fields for _, fields in records if isinstance(fields, list)), [])
  columns = [header.index(c) for c in MISSING_CLIPS_COLUMNS]
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(MISSING_CLIPS_COLUMNS)
  for line, fields in records:
    if line in lines and isinstance(fields, list):
      writer.writerow([fields[c].strip() for c in columns])
  return out.getvalue()


class Musiccaps(base.AudioCaptionBuilder):
  """MusicCaps: 5.5k 10 s music clips with expert captions and aspect lists."""

  DESCRIPTION = "MusicCaps captions with user-downloaded YouTube clips (Agostinelli et al., 2023)."
  HOMEPAGE = "https://www.kaggle.com/datasets/googleai/musiccaps"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  def __init__(
    self,
    *,
    manifest: str | None = None,
    clips_subdir: str | None = None,
    path_column: str | None = None,
    split_column: str | None = None,
    eval_split_name: str = "eval",
    **kwargs,
  ):
    """Builder kwargs say where the inputs are; the config says what an example is.

    Args:
      manifest: the CSV's file name in manual_dir (default: musiccaps-public.csv, or the only
        .csv there).
      clips_subdir: the clips' folder under manual_dir (default: see `clips_dir`).
      path_column: a CSV column with each clip's path relative to the clips folder.
      split_column: a CSV column with each row's split (default: from is_audioset_eval).
      eval_split_name: the split of is_audioset_eval rows.
      **kwargs: `tfds.core.DatasetBuilder` arguments (data_dir, config, ...).
    """
    self._manifest = manifest
    self._clips_subdir = clips_subdir
    self._path_column = path_column
    self._split_column = split_column
    self._eval_split_name = eval_split_name
    super().__init__(**kwargs)

  def _manifest_rows(self, manual_dir: epath.Path, report: SkipReport) -> Iterable[ManifestRow]:
    csv_path = base.find_manifest(manual_dir, self._manifest, (CSV_NAME,), (".csv",))
    self._csv_path = str(csv_path)
    report.list_every("missing_file")
    return read_musiccaps_csv(
      csv_path,
      clips_dir(manual_dir, self._clips_subdir),
      report=report,
      path_column=self._path_column,
      split_column=self._split_column,
      eval_split_name=self._eval_split_name,
    )

  def _write_report(self) -> None:
    """Also writes missing_clips.csv (every missing clip, not the report's first examples)."""
    missing = self._skip_report.every("missing_file")
    if missing:
      path = epath.Path(self.data_dir) / MISSING_CLIPS_NAME
      path.write_text(missing_clips_csv(self._csv_path, missing))
      self._skip_report.add_file("missing_clips", MISSING_CLIPS_NAME)
      logging.info("%s: %d missing clips listed in %s", self.name, len(missing), path)
    super()._write_report()
