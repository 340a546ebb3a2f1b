"""The SoundStream codec as one Flax module: SEANet encoder → residual VQ → SEANet decoder.

Variables: `params` (encoder and decoder convs) and `quantizer` (the RVQ's EMA codebooks, see
`musiclm_jax.tokenizers.rvq`). Create both with `init(rngs={"params": key}, audio, train=False)`.
A training step applies with `train=True`, `rngs={"quantizer": key}` and
`mutable=["quantizer"]`; `encode` / `decode` / eval calls need neither.

Lengths: audio of any length is zero-padded at the end up to a multiple of the hop (480 samples
in the paper config), so it yields ceil(samples / hop) frames. `__call__` crops the
reconstruction back to the input length; `decode` cannot know the original length and returns
frames × hop samples.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax.tokenizers.rvq import ResidualVectorQuantizer, RVQOutput
from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig
from musiclm_jax.tokenizers.soundstream.seanet import SeanetDecoder, SeanetEncoder


def pad_to_hop(audio: jax.Array, hop_length: int) -> jax.Array:
  """Zero-pads [batch, samples] at the end to [batch, ceil(samples / hop) * hop]."""
  if audio.ndim != 2:
    raise ValueError(f"Expected audio [batch, samples], got shape {tuple(audio.shape)}.")
  if audio.shape[1] == 0:
    raise ValueError("Cannot encode empty audio (0 samples).")
  extra = -audio.shape[1] % hop_length
  return jnp.pad(audio, ((0, 0), (0, extra))) if extra else audio


class SoundStream(nn.Module):
  """Neural audio codec: [batch, samples] audio ↔ [batch, frames, levels] int32 codes.

  Attributes:
    config: architecture (hop, widths, RVQ, causal padding, dtypes).
  """

  config: SoundStreamConfig

  def setup(self):
    self.encoder = SeanetEncoder(self.config)
    self.quantizer = ResidualVectorQuantizer(self.config.rvq)
    self.decoder = SeanetDecoder(self.config)

  def __call__(
    self, audio: jax.Array, *, train: bool, num_levels: int | None = None
  ) -> tuple[jax.Array, RVQOutput]:
    """Encodes, quantizes and decodes audio (the generator's training forward pass).

    Args:
      audio: [batch, samples] float in [-1, 1]; any length (padded up to the hop internally).
      train: update the codebooks and apply quantizer dropout (needs rng `quantizer` and the
        `quantizer` collection mutable); gradients reach the encoder through the
        straight-through estimator either way.
      num_levels: quantize with only the first levels (default: all).
    Returns:
      (reconstruction [batch, samples] float32, cropped to the input length; RVQOutput with
      quantized [batch, frames, embedding_dim], codes [batch, frames, levels] (-1 for levels
      dropped by quantizer dropout), commitment_loss and code-usage metrics).
    """
    samples = audio.shape[-1]
    embeddings = self.embed(audio)
    quantized = self.quantizer(embeddings, train=train, num_levels=num_levels)
    reconstruction = self.decoder(quantized.quantized)[:, :samples]
    return reconstruction, quantized

  def embed(self, audio: jax.Array) -> jax.Array:
    """Continuous encoder output (before quantization).

    Args:
      audio: [batch, samples] float.
    Returns:
      [batch, ceil(samples / hop), embedding_dim] float32.
    """
    padded = pad_to_hop(jnp.asarray(audio, jnp.float32), self.config.hop_length)
    return self.encoder(padded).astype(jnp.float32)

  def encode(self, audio: jax.Array, num_levels: int | None = None) -> jax.Array:
    """Audio to acoustic tokens; changes no state.

    Args:
      audio: [batch, samples] float.
      num_levels: how many RVQ levels to return (default: all).
    Returns:
      [batch, ceil(samples / hop), levels] int32 codes in [0, codebook_size).
    """
    return self.quantizer.encode(self.embed(audio), num_levels)

  def decode(self, codes: jax.Array) -> jax.Array:
    """Acoustic tokens of any prefix of levels to audio.

    Args:
      codes: [batch, frames, levels'] int32, levels' in [1, num_levels] (the first levels'
        levels); negative codes contribute nothing.
    Returns:
      [batch, frames * hop_length] float32 audio (not clipped unless config.tanh_output).
    """
    if codes.ndim != 3:
      raise ValueError(f"Expected codes [batch, frames, levels], got shape {tuple(codes.shape)}.")
    return self.decoder(self.quantizer.decode(codes))
