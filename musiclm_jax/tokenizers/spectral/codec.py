"""Inference API of a fitted spectral codec (`codec_api.AudioCodec`), and its loader.

`SpectralCodec(config, variables)` encodes audio to RVQ codes of PCA coefficients of power-law
STFT magnitudes and decodes codes by Griffin-Lim (`model.py`). `load_spectral_codec` reads what
`jobs/spectral_codec.fit_spectral_codec` saved; `codec_api.load_codec(model_dir)` calls it for a
spectral checkpoint.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from musiclm_jax import architecture, checkpoints
from musiclm_jax.checkpoints import CheckpointMismatchError
from musiclm_jax.tokenizers.codec_api import SPECTRAL, AudioCodec
from musiclm_jax.tokenizers.rvq import QUANTIZER
from musiclm_jax.tokenizers.spectral import model
from musiclm_jax.tokenizers.spectral.config import SpectralCodecConfig

MODEL_NAME = SPECTRAL
# The fitting job's saved state: the codec's two collections and how many levels are fitted.
FITTED_LEVELS = "fitted_levels"


def variable_shapes(config: SpectralCodecConfig) -> dict:
  """`jax.ShapeDtypeStruct`s of a spectral codec's variables."""
  f32 = jnp.float32
  return {
    "params": {
      "mean": jax.ShapeDtypeStruct((config.num_bins,), f32),
      "components": jax.ShapeDtypeStruct((config.num_bins, config.latent_dim), f32),
    },
    QUANTIZER: {
      "codebooks": jax.ShapeDtypeStruct(
        (config.num_levels, config.rvq.codebook_size, config.latent_dim), f32
      )
    },
  }


class SpectralCodec(AudioCodec):
  """A fitted spectral codec (or an abstract / random one for shapes and benchmarks).

  Attributes:
    config: the `SpectralCodecConfig`.
    variables: {"params": {"mean", "components"}, "quantizer": {"codebooks"}}.
  """

  name = MODEL_NAME

  @classmethod
  def abstract(cls, config: SpectralCodecConfig) -> SpectralCodec:
    """A codec whose variables are `jax.ShapeDtypeStruct`s: for shape computations only."""
    return cls(config, variable_shapes(config))

  @classmethod
  def random_init(cls, config: SpectralCodecConfig, seed: int = 0) -> SpectralCodec:
    """Orthonormal random components and random codebooks: for benchmarks and shape tests."""
    key_components, key_codebooks = jax.random.split(jax.random.key(seed))
    shapes = variable_shapes(config)
    gaussian = jax.random.normal(key_components, shapes["params"]["components"].shape)
    components, _ = jnp.linalg.qr(gaussian)
    codebook_shape = shapes[QUANTIZER]["codebooks"].shape
    variables = {
      "params": {"mean": jnp.full((config.num_bins,), 0.05), "components": components},
      QUANTIZER: {"codebooks": 0.1 * jax.random.normal(key_codebooks, codebook_shape)},
    }
    return cls(config, variables)

  def _encode_fn(self, variables: dict, audio: jax.Array, levels: int) -> jax.Array:
    return model.encode(self.config, variables, audio, levels)

  def _decode_fn(self, variables: dict, codes: jax.Array) -> jax.Array:
    return model.decode(self.config, variables, codes)


def load_spectral_codec(checkpoint_dir: str, step: int | None = None) -> SpectralCodec:
  """The fitted spectral codec in `checkpoint_dir` (`<model_dir>/checkpoints`).

  Raises:
    FileNotFoundError: no complete checkpoint in `checkpoint_dir`.
    CheckpointMismatchError: not a spectral codec, or its fit stopped before the last level (rerun
      the job to finish it).
  """
  metadata, tree, saved_step = checkpoints.restore_trained(
    checkpoint_dir,
    MODEL_NAME,
    "a spectral codec",
    subtrees=(("params",), (QUANTIZER,), (FITTED_LEVELS,)),
    step=step,
  )
  config = architecture.from_json(SpectralCodecConfig, metadata["architecture"])
  fitted = int(tree[FITTED_LEVELS])
  if fitted < config.num_levels:
    raise CheckpointMismatchError(
      f"{checkpoint_dir} step {saved_step} holds a spectral codec fitted to {fitted} of its "
      f"{config.num_levels} levels: its fit was stopped; rerun the codec job to finish it."
    )
  return SpectralCodec(config, {"params": tree["params"], QUANTIZER: tree[QUANTIZER]})
