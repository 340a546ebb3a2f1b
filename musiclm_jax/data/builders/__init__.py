"""TFDS builders for audio+caption datasets; importing this package registers them with TFDS.

  import musiclm_jax.data.builders  # registers musiccaps, audio_folder, rendered_music
  ds = tfds.load("musiccaps/24khz", data_dir=DATA, split="train")

Names: `musiccaps` (MusicCaps CSV + downloaded clips), `audio_folder` (audio + captions
CSV/JSONL), `rendered_music` (the `musiclm-jax render` output). None of them is in the TFDS
catalog (checked against tensorflow-datasets 4.9). Build with `musiclm-jax build-data` or
`build.build_dataset`; each build writes skip_report.json beside the dataset files.
"""

from __future__ import annotations

from musiclm_jax.data.builders.audio_folder import AudioFolder
from musiclm_jax.data.builders.base import AudioCaptionBuilder, AudioCaptionConfig, BuildError
from musiclm_jax.data.builders.musiccaps import Musiccaps
from musiclm_jax.data.builders.rendered_music import RenderedMusic

__all__ = [
  "AudioCaptionBuilder",
  "AudioCaptionConfig",
  "AudioFolder",
  "BuildError",
  "Musiccaps",
  "RenderedMusic",
]
