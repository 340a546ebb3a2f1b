"""SoundStream acoustic tokenizer: config, SEANet encoder/decoder, discriminators and losses."""

from __future__ import annotations

from musiclm_jax.tokenizers.soundstream.config import (
  SoundStreamConfig,
  STFTDiscriminatorConfig,
  WaveDiscriminatorConfig,
)
from musiclm_jax.tokenizers.soundstream.discriminators import (
  DiscriminatorOutput,
  SoundStreamDiscriminator,
)
from musiclm_jax.tokenizers.soundstream.model import SoundStream

__all__ = [
  "DiscriminatorOutput",
  "SoundStream",
  "SoundStreamConfig",
  "SoundStreamDiscriminator",
  "STFTDiscriminatorConfig",
  "WaveDiscriminatorConfig",
]
