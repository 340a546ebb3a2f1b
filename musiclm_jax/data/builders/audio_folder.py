"""`audio_folder`: any folder of audio files with a captions file (CSV or JSONL) in manual_dir.

  musiclm-jax build-data --dataset=audio_folder --manual_dir=DIR --data_dir=DATA

Splits come from the captions' `split` column/key (default: everything in 'train').
"""

from __future__ import annotations

from collections.abc import Iterable

from etils import epath

from musiclm_jax.data.builders import base
from musiclm_jax.data.manifest import ManifestRow, read_captions_file
from musiclm_jax.data.skip_report import SkipReport

CAPTIONS_NAMES = ("captions.csv", "captions.jsonl")

_INSTRUCTIONS = """
Put your audio files (.wav, .flac, .ogg, .mp3; any rate or channel count) in manual_dir or a
folder under it, and a captions file beside them: captions.csv with a header naming an audio
path column (file, path or audio; relative to manual_dir) and caption, optionally id, aspects,
split, melody_group, score_id; or captions.jsonl with one object per line with the same keys.
Rows with missing or bad audio are skipped and counted in skip_report.json.
"""


class AudioFolder(base.AudioCaptionBuilder):
  """A folder of captioned audio."""

  DESCRIPTION = "A user's folder of audio files with a captions file."
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  def __init__(self, *, manifest: str | None = None, audio_subdir: str | None = None, **kwargs):
    """Builder kwargs say where the inputs are; the config says what an example is.

    Args:
      manifest: the captions file's name in manual_dir (default: captions.csv, captions.jsonl,
        or the only .csv/.jsonl there).
      audio_subdir: the folder under manual_dir that audio paths are relative to (default:
        manual_dir).
      **kwargs: `tfds.core.DatasetBuilder` arguments (data_dir, config, ...).
    """
    self._manifest = manifest
    self._audio_subdir = audio_subdir
    super().__init__(**kwargs)

  def _manifest_rows(self, manual_dir: epath.Path, report: SkipReport) -> Iterable[ManifestRow]:
    path = base.find_manifest(manual_dir, self._manifest, CAPTIONS_NAMES, (".csv", ".jsonl"))
    audio_dir = manual_dir / self._audio_subdir if self._audio_subdir else manual_dir
    return read_captions_file(path, audio_dir, report=report)
