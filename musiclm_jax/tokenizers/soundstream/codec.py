"""Inference API of a trained SoundStream codec: audio ↔ acoustic tokens, validated and jitted.

`SoundStreamCodec` wraps the generator's variables (`params` and the RVQ's `quantizer`
codebooks); `codec_api.AudioCodec` gives it batched, checked `encode` / `decode`, one `jax.jit`
program per input shape (and, for `encode`, per `num_levels`), so a tokenization loop over
fixed-length crops compiles once.

Both methods also accept `jax.ShapeDtypeStruct` inputs; then only output shapes are computed
(`jax.eval_shape`, nothing compiled or run), which works with abstract variables too
(`SoundStreamCodec.abstract(config)`), e.g. to check the paper config's shapes without
initialising 10M parameters.

`load_soundstream_codec(checkpoint_dir)` rebuilds a trained codec from its checkpoint alone (the
architecture is in the checkpoint's metadata), reading only the generator's weights and
codebooks; `codec_api.load_codec(model_dir)` calls it for a SoundStream checkpoint.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from musiclm_jax import architecture, checkpoints
from musiclm_jax.tokenizers.codec_api import SOUNDSTREAM, AudioCodec
from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig
from musiclm_jax.tokenizers.soundstream.model import SoundStream

# The "model" a codec checkpoint's metadata names (models/soundstream.py's SoundStreamGAN.name).
MODEL_NAME = SOUNDSTREAM
# Where the codec's GAN train state keeps the generator: params[GENERATOR] (the GAN trainer's
# key for the first player), and model_state holds its other collections (the RVQ codebooks).
GENERATOR = "generator"
MODEL_STATE = "model_state"


class SoundStreamCodec(AudioCodec):
  """A trained (or randomly initialised) SoundStream generator for inference.

  Attributes:
    config: the architecture.
    variables: {"params": ..., "quantizer": ...} of the generator.
  """

  name = MODEL_NAME

  def __init__(self, config: SoundStreamConfig, variables: dict):
    self._model = SoundStream(config)
    super().__init__(config, variables)

  @classmethod
  def random_init(cls, config: SoundStreamConfig, seed: int = 0) -> SoundStreamCodec:
    """A codec with freshly initialised weights and random codebooks (tests, benchmarks).

    The key is an `unsafe_rbg` key: threefry's unrolled bit mixing for the ~120 variables makes
    the init program take 3× longer to compile on CPU, and these weights need no reproducibility
    across platforms (they are the same for the same seed on the same backend).
    """
    model = SoundStream(config)
    audio = jnp.zeros((1, config.hop_length), jnp.float32)
    init = jax.jit(lambda key, x: model.init({"params": key}, x, train=False))
    return cls(config, init(jax.random.key(seed, impl="unsafe_rbg"), audio))

  @classmethod
  def abstract(cls, config: SoundStreamConfig) -> SoundStreamCodec:
    """A codec whose variables are `jax.ShapeDtypeStruct`s: for shape computations only."""
    model = SoundStream(config)
    audio = jax.ShapeDtypeStruct((1, config.hop_length), jnp.float32)
    init = lambda key, x: model.init({"params": key}, x, train=False)  # noqa: E731
    return cls(config, jax.eval_shape(init, jax.random.key(0), audio))

  def _encode_fn(self, variables: dict, audio: jax.Array, levels: int) -> jax.Array:
    return self._model.apply(variables, audio, levels, method=SoundStream.encode)

  def _decode_fn(self, variables: dict, codes: jax.Array) -> jax.Array:
    return self._model.apply(variables, codes, method=SoundStream.decode)


def load_soundstream_codec(checkpoint_dir: str, step: int | None = None) -> SoundStreamCodec:
  """The trained SoundStream in `checkpoint_dir` (`<model_dir>/checkpoints`).

  Reads only the generator's params and its codebooks, in one pass over the checkpoint; the
  discriminator and both optimizer states stay on disk.

  Raises:
    FileNotFoundError: no complete checkpoint in `checkpoint_dir`.
    CheckpointMismatchError: the checkpoint is not a SoundStream codec.
  """
  metadata, tree, _ = checkpoints.restore_trained(
    checkpoint_dir,
    MODEL_NAME,
    "a SoundStream codec",
    subtrees=(("params", GENERATOR), (MODEL_STATE,)),
    step=step,
  )
  config = architecture.from_json(SoundStreamConfig, metadata["architecture"])
  return SoundStreamCodec(config, {"params": tree["params"][GENERATOR], **tree[MODEL_STATE]})
