"""EnCodec imported from transformers checkpoints: a codec of our codec API (issue 23)."""

from __future__ import annotations

from musiclm_jax.tokenizers.encodec.codec import EncodecCodec, load_encodec_codec, save_encodec
from musiclm_jax.tokenizers.encodec.config import EncodecCodecConfig
from musiclm_jax.tokenizers.encodec.hf_import import load_hf_encodec

__all__ = [
  "EncodecCodec",
  "EncodecCodecConfig",
  "load_encodec_codec",
  "load_hf_encodec",
  "save_encodec",
]
