"""A manifest row's audio and text as one example dict, or a counted skip (DESIGN §7-8).

Dataset builders call `load_example` per row; a bad clip becomes a `SkipReport` entry under the
row's file:line and audio path instead of an exception.
"""

from __future__ import annotations

from typing import Any

from musiclm_jax.data import audio_io
from musiclm_jax.data.manifest import ManifestRow
from musiclm_jax.data.skip_report import SkipReport

# A clip this much longer than its row's [start_s, end_s) segment is a full, untrimmed download.
_UNTRIMMED_SLACK_S = 1.0


def _window(row: ManifestRow, info: audio_io.AudioInfo, max_seconds: float) -> tuple[float, float]:
  """(offset_s, duration_s) of the row's segment in its file, at most `max_seconds` long.

  MusicCaps downloads are usually trimmed to the 10 s segment already, so reading starts at 0;
  a file clearly longer than end_s - start_s that reaches past start_s is the whole recording,
  read from start_s.
  """
  offset_s, available_s = 0.0, info.duration_s
  if row.end_s is not None:
    segment_s = row.end_s - row.start_s
    if info.duration_s > max(segment_s + _UNTRIMMED_SLACK_S, row.start_s):
      offset_s = row.start_s
      available_s = min(segment_s, max(0.0, info.duration_s - row.start_s))
  return offset_s, min(available_s, max_seconds)


def load_example(
  row: ManifestRow,
  *,
  sample_rate: int,
  report: SkipReport,
  max_seconds: float = 30.0,
  normalization: str = "none",
  min_seconds: float = 0.5,
) -> dict[str, Any] | None:
  """Loads a row's audio as an example, or counts why it cannot be used.

  Args:
    row: the manifest row.
    sample_rate: output rate in Hz.
    report: gets `keep()` on success and `skip(reason, 'file:line (audio path)', detail)` on
      failure, the reason being an `audio_io.AudioReason`.
    max_seconds: longer clips are cut to their first `max_seconds` (of the segment).
    normalization: 'none', 'peak' or 'loudness' (see `audio_io.normalize`).
    min_seconds: shorter clips are skipped as 'too_short'.

  Returns:
    None if skipped, else {'id': str, 'audio': float32 [samples], 'caption': str,
    'aspects': list[str], 'melody_group': str, 'score_id': str, 'split': str,
    'duration_s': float}.
  """
  where = f"{row.where} ({row.audio_path})"
  try:
    info = audio_io.probe(row.audio_path)
    offset_s, duration_s = _window(row, info, max_seconds)
    if duration_s < min_seconds:
      detail = f"{duration_s:.2f} s of audio is shorter than min_seconds={min_seconds:g}"
      raise audio_io.AudioError(row.audio_path, "too_short", detail)
    audio = audio_io.load_audio(
      row.audio_path,
      sample_rate,
      offset_s=offset_s,
      duration_s=duration_s,
      normalization=normalization,
      max_seconds=max_seconds,
      allow_short=True,
    )
  except audio_io.AudioError as e:
    report.skip(e.reason, where, e.detail)
    return None
  report.keep()
  return {
    "id": row.id,
    "audio": audio,
    "caption": row.caption,
    "aspects": list(row.aspects),
    "melody_group": row.melody_group,
    "score_id": row.score_id,
    "split": row.split,
    "duration_s": len(audio) / sample_rate,
  }
