"""Manifests of user audio: MusicCaps CSVs and captions files, read into `ManifestRow`s.

Users bring a MusicCaps-style CSV plus the clips they downloaded, or any folder of audio with a
captions file (DESIGN §7). A bad row (unparsable fields, a caption that is not UTF-8 or is
empty, a clip that is not there) is skipped and counted in a `SkipReport` under its file:line;
a file that cannot be a manifest at all (missing columns, unknown extension) is a ValueError.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Iterator
from typing import Any

from musiclm_jax.data.captions import CaptionError, clean_caption, parse_aspect_list
from musiclm_jax.data.skip_report import SkipReport

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
MUSICCAPS_REQUIRED_COLUMNS = ("ytid", "start_s", "end_s", "caption")
CAPTIONS_PATH_COLUMNS = ("file", "path", "audio")
_TRUE = ("true", "1", "yes")


@dataclasses.dataclass(frozen=True)
class ManifestRow:
  """One captioned clip.

  Attributes:
    id: unique within the manifest (MusicCaps ytid, or the audio path without extension).
    audio_path: the clip's file.
    caption: cleaned caption text.
    aspects: aspect tags (may be empty).
    start_s: where the captioned segment starts in the original recording.
    end_s: where it ends, or None if unknown.
    melody_group: clips with the same melody share it (defaults to id).
    score_id: the score a rendered clip came from (defaults to id).
    split: 'train', 'eval', ...
    where: 'file.csv:LINE' of the row.
  """

  id: str
  audio_path: str
  caption: str
  aspects: tuple[str, ...]
  start_s: float
  end_s: float | None
  melody_group: str
  score_id: str
  split: str
  where: str


class _Skip(Exception):
  """A row to skip: `reason` for the report, `detail` for its examples."""

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    self.reason = reason
    self.detail = detail


def _csv_records(path: str) -> Iterator[tuple[int, list[str] | _Skip]]:
  """The records of a CSV file with the line each starts on; blank lines are left out.

  Undecodable bytes become lone surrogates (errors='surrogateescape') so that one bad caption
  spoils one row, not the file; a record the csv module cannot parse comes as a _Skip.
  """
  with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
    reader = csv.reader(f)
    line = 0
    while True:
      start = line + 1
      try:
        fields = next(reader)
      except StopIteration:
        return
      except csv.Error as e:
        fields = _Skip("bad_row", f"unparsable CSV: {e}")
      line = reader.line_num
      if fields:
        yield start, fields


def _read_header(path: str, records: Iterator, required: tuple[str, ...]) -> list[str]:
  """The first record as column names; a ValueError naming the file if columns are missing."""
  first = next(records, None)
  if first is None or isinstance(first[1], _Skip):
    raise ValueError(f"{path}: no CSV header line (expected columns {', '.join(required)})")
  header = [name.strip() for name in first[1]]
  missing = [name for name in required if name not in header]
  if missing:
    raise ValueError(
      f"{path}: the header lacks required column(s) {', '.join(missing)} "
      f"(it has {', '.join(header)}); rename the columns or pass the right column names"
    )
  return header


def _as_record(header: list[str], fields: list[str] | _Skip, reason: str) -> dict[str, str]:
  """A CSV record as {column: value}; raises _Skip for a wrong number of fields."""
  if isinstance(fields, _Skip):
    raise fields
  if len(fields) != len(header):
    raise _Skip(reason, f"{len(fields)} fields where the header has {len(header)}")
  return dict(zip(header, fields))


def _text_field(record: dict[str, Any], key: str, reason: str) -> str:
  """A stripped identifier-like field; raises _Skip if it is not text or not UTF-8."""
  value = record.get(key)
  value = "" if value is None else value
  if not isinstance(value, str):
    raise _Skip(reason, f"{key} must be text, got {type(value).__name__}")
  if any("\ud800" <= c <= "\udfff" for c in value):
    raise _Skip(reason, f"{key} is not valid UTF-8")
  return value.strip()


def _parse_times(start: Any, end: Any, reason: str) -> tuple[float, float | None]:
  """start_s (default 0) and end_s (default None) as floats with 0 <= start < end."""

  def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())

  try:
    start_s = 0.0 if blank(start) else float(start)
    end_s = None if blank(end) else float(end)
  except (TypeError, ValueError) as e:
    raise _Skip(reason, f"start_s/end_s are not numbers: {start!r}, {end!r}") from e
  finite = math.isfinite(start_s) and (end_s is None or math.isfinite(end_s))
  if not finite or start_s < 0 or (end_s is not None and end_s <= start_s):
    raise _Skip(reason, f"need 0 <= start_s < end_s, got {start!r}, {end!r}")
  return start_s, end_s


def _caption_and_aspects(caption: Any, aspects: Any, where: str) -> tuple[str, tuple[str, ...]]:
  """The cleaned caption and aspects; raises _Skip '{non_utf8,empty}_caption'."""
  try:
    text = clean_caption("" if caption is None else caption, where=where)
    if isinstance(aspects, list | tuple):
      aspects = json.dumps([str(a) for a in aspects])
    tags = parse_aspect_list("" if aspects is None else str(aspects), where=where)
  except CaptionError as e:
    raise _Skip(f"{e.reason}_caption", str(e)) from e
  return text, tags


class _ClipIndex:
  """The audio files of a clips folder by stem, listed once (one listdir, not a stat per row)."""

  def __init__(self, clips_dir: str):
    if not os.path.isdir(clips_dir):
      raise ValueError(f"{clips_dir}: the clips folder does not exist or is not a folder")
    self.clips_dir = clips_dir
    self.by_stem: dict[str, str] = {}
    names = sorted(os.listdir(clips_dir))
    for ext in AUDIO_EXTENSIONS:  # earlier extensions win when a clip exists in several formats
      for name in names:
        stem, name_ext = os.path.splitext(name)
        if name_ext.lower() == ext:
          self.by_stem.setdefault(stem, name)

  def find(self, stems: list[str]) -> str | None:
    """The path of the first stem with an audio file, or None."""
    for stem in stems:
      if stem in self.by_stem:
        return os.path.join(self.clips_dir, self.by_stem[stem])
    return None


def _number_spellings(value: str) -> list[str]:
  """'30', '30.0' -> ['30.0', '30']: how downloaders may have written a time in a file name."""
  spellings = [value.strip()]
  try:
    number = float(value)
  except ValueError:
    return spellings
  if number.is_integer():
    spellings.append(str(int(number)))
  return list(dict.fromkeys(spellings))


def _musiccaps_clip(
  record: dict[str, str], ytid: str, index: _ClipIndex, path_column: str | None
) -> str:
  """The clip file of a MusicCaps row; raises _Skip('missing_file')."""
  if path_column is not None and record.get(path_column, "").strip():
    path = os.path.join(index.clips_dir, record[path_column].strip())
    if not os.path.isfile(path):
      raise _Skip("missing_file", f"{path} does not exist")
    return path
  stems = [ytid] + [
    f"[{ytid}]-[{start}-{end}]"
    for start in _number_spellings(record["start_s"])
    for end in _number_spellings(record["end_s"])
  ]
  path = index.find(stems)
  if path is None:
    tried = " or ".join(f"{stem}{{{','.join(AUDIO_EXTENSIONS)}}}" for stem in stems[:2])
    raise _Skip("missing_file", f"no clip {tried} in {index.clips_dir}")
  return path


def _musiccaps_split(record: dict[str, str], split_column: str | None, eval_split_name: str) -> str:
  if split_column is not None and record.get(split_column, "").strip():
    return record[split_column].strip()
  is_eval = record.get("is_audioset_eval", "").strip().lower() in _TRUE
  return eval_split_name if is_eval else "train"


def _musiccaps_row(
  record: dict[str, str],
  where: str,
  index: _ClipIndex,
  path_column: str | None,
  split_column: str | None,
  eval_split_name: str,
) -> ManifestRow:
  """One MusicCaps record as a ManifestRow; raises _Skip."""
  ytid = _text_field(record, "ytid", "bad_row")
  if not ytid:
    raise _Skip("bad_row", "the ytid field is empty")
  start_s, end_s = _parse_times(record["start_s"], record["end_s"], "bad_row")
  caption, aspects = _caption_and_aspects(record["caption"], record.get("aspect_list"), where)
  audio_path = _musiccaps_clip(record, ytid, index, path_column)
  return ManifestRow(
    id=ytid,
    audio_path=audio_path,
    caption=caption,
    aspects=aspects,
    start_s=start_s,
    end_s=end_s,
    melody_group=_text_field(record, "melody_group", "bad_row") or ytid,
    score_id=_text_field(record, "score_id", "bad_row") or ytid,
    split=_musiccaps_split(record, split_column, eval_split_name),
    where=where,
  )


def _unique(
  rows: Iterator[tuple[str, ManifestRow | _Skip]], report: SkipReport
) -> Iterator[ManifestRow]:
  """Yields rows with new ids; skips, and rows repeating an earlier id, go to the report."""
  seen: dict[str, str] = {}
  for where, row in rows:
    if isinstance(row, _Skip):
      report.skip(row.reason, where, row.detail)
    elif row.id in seen:
      report.skip("duplicate_id", where, f"id {row.id!r} already used at {seen[row.id]}")
    else:
      seen[row.id] = where
      yield row


def read_musiccaps_csv(
  csv_path: str | os.PathLike,
  clips_dir: str | os.PathLike,
  *,
  report: SkipReport,
  path_column: str | None = None,
  split_column: str | None = None,
  eval_split_name: str = "eval",
) -> Iterator[ManifestRow]:
  """Reads a MusicCaps CSV and finds each row's downloaded clip.

  The header is MusicCaps' (`ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,
  author_id,is_balanced_subset,is_audioset_eval`; only ytid, start_s, end_s and caption are
  required), optionally with `melody_group` and `score_id`. A row's clip is `{ytid}{ext}` or
  the downloaders' `[{ytid}]-[{start}-{end}]{ext}` in `clips_dir` for ext in AUDIO_EXTENSIONS,
  or the `path_column` value relative to `clips_dir`.

  Args:
    csv_path: the CSV file.
    clips_dir: the folder of downloaded clips.
    report: counts the rows kept (by the caller) and skipped here: 'bad_row', 'non_utf8_caption',
      'empty_caption', 'missing_file', 'duplicate_id'.
    path_column: a column holding each clip's path relative to `clips_dir`.
    split_column: a column holding each row's split; rows where it is empty (or without it)
      get `eval_split_name` if `is_audioset_eval` is true and 'train' otherwise.
    eval_split_name: the split of AudioSet-eval rows.

  Yields:
    ManifestRows in file order.

  Raises:
    ValueError: (when called, not when iterated) the header lacks required columns or
      `clips_dir` is not a folder.
  """
  csv_path, index = os.fspath(csv_path), _ClipIndex(os.fspath(clips_dir))
  records = _csv_records(csv_path)
  named = tuple(c for c in (path_column, split_column) if c is not None)
  header = _read_header(csv_path, records, MUSICCAPS_REQUIRED_COLUMNS + named)

  def rows() -> Iterator[tuple[str, ManifestRow | _Skip]]:
    for line, fields in records:
      where = f"{csv_path}:{line}"
      try:
        record = _as_record(header, fields, "bad_row")
        yield (
          where,
          _musiccaps_row(record, where, index, path_column, split_column, eval_split_name),
        )
      except _Skip as skip:
        yield where, skip

  return _unique(rows(), report)


def _jsonl_records(path: str) -> Iterator[tuple[int, dict[str, Any] | _Skip]]:
  """The objects of a JSONL file with their line numbers; a bad line comes as a _Skip."""
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      text = raw.decode("utf-8", errors="surrogateescape").lstrip("\ufeff").strip()
      if not text:
        continue
      try:
        value = json.loads(text)
      except json.JSONDecodeError as e:
        yield number, _Skip("bad_line", f"not JSON: {e}")
        continue
      if not isinstance(value, dict):
        yield number, _Skip("bad_line", f"expected a JSON object, got {type(value).__name__}")
      else:
        yield number, value


def _captions_csv_records(path: str) -> Iterator[tuple[int, dict[str, str] | _Skip]]:
  """The rows of a captions CSV as dicts, after checking its header.

  Raises:
    ValueError: (when called, not when iterated) the header lacks a path or caption column.
  """
  records = _csv_records(path)
  header = _read_header(path, records, ("caption",))
  if not any(column in header for column in CAPTIONS_PATH_COLUMNS):
    raise ValueError(
      f"{path}: the header needs an audio path column ({' or '.join(CAPTIONS_PATH_COLUMNS)}); "
      f"it has {', '.join(header)}"
    )

  def rows() -> Iterator[tuple[int, dict[str, str] | _Skip]]:
    for line, fields in records:
      try:
        yield line, _as_record(header, fields, "bad_row")
      except _Skip as skip:
        yield line, skip

  return rows()


def _captions_row(record: dict[str, Any], where: str, audio_dir: str, bad: str) -> ManifestRow:
  """One captions-file record as a ManifestRow; raises _Skip."""
  relative = next((_text_field(record, k, bad) for k in CAPTIONS_PATH_COLUMNS if record.get(k)), "")
  if not relative:
    raise _Skip(bad, f"no audio path ({' / '.join(CAPTIONS_PATH_COLUMNS)})")
  if not isinstance(record.get("caption", ""), str | None):
    raise _Skip(bad, f"the caption must be text, got {type(record['caption']).__name__}")
  if "caption" not in record:
    raise _Skip(bad, "no caption")
  start_s, end_s = _parse_times(record.get("start_s"), record.get("end_s"), bad)
  aspects = record.get("aspects", record.get("aspect_list"))
  caption, tags = _caption_and_aspects(record["caption"], aspects, where)
  audio_path = os.path.join(audio_dir, relative)
  if not os.path.isfile(audio_path):
    raise _Skip("missing_file", f"{audio_path} does not exist")
  clip_id = _text_field(record, "id", bad) or os.path.splitext(os.path.normpath(relative))[0]
  return ManifestRow(
    id=clip_id,
    audio_path=audio_path,
    caption=caption,
    aspects=tags,
    start_s=start_s,
    end_s=end_s,
    melody_group=_text_field(record, "melody_group", bad) or clip_id,
    score_id=_text_field(record, "score_id", bad) or clip_id,
    split=_text_field(record, "split", bad) or "train",
    where=where,
  )


def read_captions_file(
  path: str | os.PathLike, audio_dir: str | os.PathLike, *, report: SkipReport
) -> Iterator[ManifestRow]:
  """Reads a captions file for a folder of audio.

  `.csv`: a header with an audio path column (`file`, `path` or `audio`, relative to
  `audio_dir`) and `caption`; optional `id`, `aspects`/`aspect_list`, `split`, `start_s`,
  `end_s`, `melody_group`, `score_id`. `.jsonl`: one JSON object per line with the same keys
  (`aspects` may be a JSON list). `id` defaults to the audio path without its extension (the
  file stem for a flat folder); `split` to 'train'.

  Args:
    path: the captions file.
    audio_dir: the folder audio paths are relative to.
    report: counts skipped rows: 'bad_row' (CSV) / 'bad_line' (JSONL), 'non_utf8_caption',
      'empty_caption', 'missing_file', 'duplicate_id'.

  Yields:
    ManifestRows in file order.

  Raises:
    ValueError: (when called, not when iterated) an extension other than .csv/.jsonl, or a CSV
      header without the columns.
  """
  path, audio_dir = os.fspath(path), os.fspath(audio_dir)
  ext = os.path.splitext(path)[1].lower()
  if ext == ".csv":
    records, bad = _captions_csv_records(path), "bad_row"
  elif ext == ".jsonl":
    records, bad = _jsonl_records(path), "bad_line"
  else:
    raise ValueError(
      f"{path}: captions files must be .csv or .jsonl, not {ext or 'no extension'!r}"
    )

  def rows() -> Iterator[tuple[str, ManifestRow | _Skip]]:
    for line, record in records:
      where = f"{path}:{line}"
      try:
        if isinstance(record, _Skip):
          raise record
        yield where, _captions_row(record, where, audio_dir, bad)
      except _Skip as skip:
        yield where, skip

  return _unique(rows(), report)
