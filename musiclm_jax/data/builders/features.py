"""The features every audio+caption builder writes, and loaded examples -> TFDS examples.

One example on disk:

  id            Text      the clip's id (MusicCaps ytid, file stem, ...); also the example key
  audio         Audio     float32 mono samples at the config's sample rate, shape [samples]
  caption       Text      the free-text caption
  aspects       [Text]    MusicCaps aspect list (may be empty)
  melody_group  Text      clips sharing a melody share this ("" when unknown)
  score_id      Text      the score a rendered clip came from ("" when unknown)
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

# TFDS shard file names are `{name}-{split}.{format}-NNNNN-of-NNNNN`; `all` is reserved.
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def features_dict(sample_rate: int) -> tfds.features.FeaturesDict:
  """The FeaturesDict of all audio+caption builders.

  Args:
    sample_rate: the audio's sample rate (metadata: `info.features['audio'].sample_rate`).

  Returns:
    The FeaturesDict; `audio` decodes to float32 `[samples]`, variable length.
  """
  return tfds.features.FeaturesDict(
    {
      "id": tfds.features.Text(),
      "audio": tfds.features.Audio(
        shape=(None,), dtype=np.float32, sample_rate=sample_rate, file_format=None
      ),
      "caption": tfds.features.Text(),
      "aspects": tfds.features.Sequence(tfds.features.Text()),
      "melody_group": tfds.features.Text(),
      "score_id": tfds.features.Text(),
    }
  )


def to_tfds_example(example: dict[str, Any]) -> tuple[str, dict[str, Any]]:
  """A loaded example (`audio_examples.load_example`) as a TFDS `(key, example)` pair.

  Args:
    example: dict with `id`, `audio` (float32 `[samples]`), `caption`, `aspects`,
      `melody_group` and `score_id` (the last two may be None).

  Returns:
    `(key, features)`: the key is the example id (unique within a build).
  """
  features = {
    "id": str(example["id"]),
    "audio": np.asarray(example["audio"], dtype=np.float32).reshape(-1),
    "caption": str(example["caption"]),
    "aspects": [str(a) for a in example.get("aspects") or ()],
    "melody_group": str(example.get("melody_group") or ""),
    "score_id": str(example.get("score_id") or ""),
  }
  return features["id"], features


def valid_split_name(split: str) -> bool:
  """Whether `split` can name a TFDS split (letters, digits, underscore; not `all`)."""
  return bool(_SPLIT_NAME.match(split)) and split.lower() != "all"
