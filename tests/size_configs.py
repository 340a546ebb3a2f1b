"""Audio model sizes as tests read them: from the gin size files, their one definition.

`gin/models/<thing>/{tiny,base,paper}.gin` bind each architecture once (STYLE: Configuration);
the config dataclasses have no size presets of their own, so a size cannot drift between two places.
"""

from __future__ import annotations

import functools
from typing import Any

import gin
from musiclm_jax.main import gin_utils

# The macro each size file binds to its architecture.
MACROS = {
  "soundstream": "CODEC_CONFIG",
  "spectral_codec": "CODEC_CONFIG",
  "w2v_bert": "W2V_BERT_CONFIG",
  "mulan": "MULAN_CONFIG",
}
SIZES = ("tiny", "base", "paper")


@functools.cache
def size_config(thing: str, size: str) -> Any:
  """The frozen config dataclass that `gin/models/<thing>/<size>.gin` builds.

  Args:
    thing: 'soundstream', 'spectral_codec', 'w2v_bert' or 'mulan'.
    size: 'tiny', 'base' or 'paper'.

  Returns:
    A SoundStreamConfig, SpectralCodecConfig, W2VBertConfig or MuLanConfig (configs are frozen, so one is shared).
  """
  gin_utils.parse([f"gin/models/{thing}/{size}.gin"], [])
  try:
    return gin_utils.macro(MACROS[thing])
  finally:
    gin.clear_config()
