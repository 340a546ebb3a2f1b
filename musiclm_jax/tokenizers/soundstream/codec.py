"""Inference API of a trained SoundStream codec: audio ↔ acoustic tokens, validated and jitted.

`SoundStreamCodec` wraps the generator's variables (`params` and the RVQ's `quantizer`
codebooks) and exposes batched `encode` / `decode`. Each is one `jax.jit` program per input shape
(and, for `encode`, per `num_levels`): calling again with the same shape reuses the compiled
program, so a tokenization loop over fixed-length crops compiles once.

Inputs are checked on the host before anything is dispatched: a NaN in the audio or a code out
of range would otherwise turn silently into garbage tokens or garbage audio.

Both methods also accept `jax.ShapeDtypeStruct` inputs; then only output shapes are computed
(`jax.eval_shape`, nothing compiled or run), which works with abstract variables too
(`SoundStreamCodec.abstract(config)`), e.g. to check the paper config's shapes without
initialising 10M parameters.

`decode` pads a prefix of levels with -1 codes (which the quantizer turns into zero vectors) up
to all levels, so coarse-only and full decodes of the same [batch, frames] share one program.

`load_codec(model_dir)` rebuilds a trained codec from its checkpoint alone (the architecture is
in the checkpoint's metadata), reading only the generator's weights and codebooks.
"""

from __future__ import annotations

import collections
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax import architecture, checkpoints
from musiclm_jax.tokenizers.rvq import QUANTIZER
from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig
from musiclm_jax.tokenizers.soundstream.model import SoundStream

# What encode / decode accept: host arrays, device arrays, or shapes only.
ArrayLike = np.ndarray | jax.Array | jax.ShapeDtypeStruct
_COLLECTIONS = ("params", QUANTIZER)

# The "model" a codec checkpoint's metadata names (models/soundstream.py's SoundStreamGAN.name).
MODEL_NAME = "soundstream"
# Where the codec's GAN train state keeps the generator: params[GENERATOR] (the GAN trainer's
# key for the first player), and model_state holds its other collections (the RVQ codebooks).
GENERATOR = "generator"
MODEL_STATE = "model_state"


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
  return jnp.isfinite(x).all()


@jax.jit
def _min_max(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  return x.min(), x.max()


def _as_array(x: Any) -> np.ndarray | jax.Array | jax.ShapeDtypeStruct:
  """Leaves jax arrays on their device and shape structs abstract; anything else to numpy."""
  if isinstance(x, jax.Array | jax.ShapeDtypeStruct | np.ndarray):
    return x
  return np.asarray(x)


def _first_non_finite(audio: np.ndarray | jax.Array) -> str:
  """Where the first NaN / inf sample is, for the error message (only called on failure)."""
  host = np.asarray(audio)
  bad = ~np.isfinite(host)
  example, sample = np.argwhere(bad)[0]
  kinds = [name for name, mask in (("NaN", np.isnan(host)), ("inf", np.isinf(host))) if mask.any()]
  return (
    f"audio contains non-finite values ({' and '.join(kinds)}): {int(bad.sum())} sample(s), "
    f"the first at example {example}, sample {sample}."
  )


class SoundStreamCodec:
  """A trained (or randomly initialised) SoundStream generator for inference.

  Attributes:
    config: the architecture.
    variables: {"params": ..., "quantizer": ...} of the generator.
  """

  def __init__(self, config: SoundStreamConfig, variables: dict[str, Any]):
    """Wraps generator variables.

    Args:
      config: the architecture the variables were created with.
      variables: a mapping with at least the collections `params` and `quantizer` (as returned
        by `SoundStream(config).init(...)` or a codec checkpoint); other collections are ignored.
    Raises:
      ValueError: if a collection is missing.
    """
    missing = [c for c in _COLLECTIONS if c not in variables]
    if missing:
      raise ValueError(
        f"SoundStreamCodec needs variable collections {list(_COLLECTIONS)}; missing {missing} "
        f"(got {sorted(variables)})."
      )
    self.config = config
    variables = {c: variables[c] for c in _COLLECTIONS}
    leaves = jax.tree.leaves(variables)
    self._shapes_only = any(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    # Host (numpy) weights would be copied to the device on every call: move them once.
    self.variables = variables if self._shapes_only else jax.device_put(variables)
    self._model = SoundStream(config)
    self._traces: collections.Counter[str] = collections.Counter()
    # Variables are arguments, not closed-over constants, so programs do not embed the weights.
    self._encode_jit = jax.jit(self._encode_program, static_argnums=2)
    self._decode_jit = jax.jit(self._decode_program)

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

  @property
  def sample_rate(self) -> int:
    """Audio samples per second (24,000 in the paper config)."""
    return self.config.sample_rate

  @property
  def hop_length(self) -> int:
    """Samples per frame (480 in the paper config)."""
    return self.config.hop_length

  @property
  def frame_rate(self) -> int:
    """Frames (token steps) per second (50 in the paper config)."""
    return self.config.frame_rate

  @property
  def num_levels(self) -> int:
    """RVQ levels, i.e. tokens per frame (12 in the paper config)."""
    return self.config.num_levels

  @property
  def codebook_size(self) -> int:
    """Codes per level; codes are in [0, codebook_size) (1024 in the paper config)."""
    return self.config.rvq.codebook_size

  @property
  def num_params(self) -> int:
    """Weights of the encoder and decoder (collection `params`; codebooks not counted)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(self.variables["params"]))

  @property
  def trace_counts(self) -> dict[str, int]:
    """How many programs `encode` and `decode` have traced: one per new [batch, samples] and
    num_levels for encode, one per new [batch, frames] for decode."""
    return {"encode": self._traces["encode"], "decode": self._traces["decode"]}

  def num_frames(self, num_samples: int) -> int:
    """Frames `encode` returns for num_samples of audio: ceil(num_samples / hop_length)."""
    return self.config.num_frames(num_samples)

  def encode(self, audio: ArrayLike, num_levels: int | None = None) -> jax.Array:
    """Audio to acoustic tokens.

    Args:
      audio: [batch, samples] float audio in [-1, 1] at `sample_rate`, numpy or jax; any length
        (zero-padded at the end up to a multiple of the hop). A `jax.ShapeDtypeStruct` gives the
        output's shape struct without running anything.
      num_levels: return the first num_levels RVQ levels (default: all).
    Returns:
      [batch, num_frames(samples), levels] int32 codes in [0, codebook_size), on the device.
    Raises:
      ValueError: audio not [batch, samples] or empty, containing NaN or inf, or num_levels
        outside [1, num_levels].
      TypeError: audio not of a floating dtype (e.g. int16 PCM: scale it to [-1, 1] first).
    """
    audio = _as_array(audio)
    levels = self._check_levels(num_levels)
    self._check_audio(audio)
    if isinstance(audio, jax.ShapeDtypeStruct):
      audio = jax.ShapeDtypeStruct(audio.shape, jnp.float32)
      return jax.eval_shape(self._encode_jit, self.variables, audio, levels)
    self._check_concrete()
    return self._encode_jit(self.variables, audio.astype(np.float32), levels)

  def decode(self, codes: ArrayLike) -> jax.Array:
    """Acoustic tokens of any prefix of levels to audio.

    Args:
      codes: [batch, frames, levels'] integer codes of the first levels' ≤ num_levels levels
        (e.g. levels' = 4 decodes the coarse tokens alone), numpy or jax. A
        `jax.ShapeDtypeStruct` gives the output's shape struct without running anything.
    Returns:
      [batch, frames * hop_length] float32 audio, on the device (not clipped to [-1, 1]).
    Raises:
      ValueError: codes not [batch, frames, levels'] with levels' in [1, num_levels], empty, or
        with values outside [0, codebook_size).
      TypeError: codes not of an integer dtype.
    """
    codes = _as_array(codes)
    self._check_codes(codes)
    if isinstance(codes, jax.ShapeDtypeStruct):
      full = jax.ShapeDtypeStruct(codes.shape[:2] + (self.num_levels,), jnp.int32)
      return jax.eval_shape(self._decode_jit, self.variables, full)
    self._check_concrete()
    return self._decode_jit(self.variables, self._pad_levels(codes))

  def _encode_program(self, variables: dict, audio: jax.Array, levels: int) -> jax.Array:
    self._traces["encode"] += 1  # runs only while tracing: counts compiled programs
    return self._model.apply(variables, audio, levels, method=SoundStream.encode)

  def _decode_program(self, variables: dict, codes: jax.Array) -> jax.Array:
    self._traces["decode"] += 1
    return self._model.apply(variables, codes, method=SoundStream.decode)

  def _pad_levels(self, codes: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
    """[batch, frames, levels'] -> [batch, frames, num_levels] int32, missing levels -1.

    The quantizer decodes -1 to a zero vector, so the sum is that of the prefix and every
    prefix of levels shares one decode program.
    """
    missing = self.num_levels - codes.shape[2]
    xnp = np if isinstance(codes, np.ndarray) else jnp
    codes = codes.astype(xnp.int32)
    if not missing:
      return codes
    return xnp.pad(codes, ((0, 0), (0, 0), (0, missing)), constant_values=-1)

  def _check_concrete(self) -> None:
    if self._shapes_only:
      raise ValueError(
        "This codec's variables are shapes only (SoundStreamCodec.abstract): pass "
        "jax.ShapeDtypeStruct inputs to get output shapes, or build it from real variables."
      )

  def _check_levels(self, num_levels: int | None) -> int:
    if num_levels is None:
      return self.num_levels
    if not 1 <= int(num_levels) <= self.num_levels:
      raise ValueError(f"num_levels={num_levels} must be in [1, {self.num_levels}].")
    return int(num_levels)

  def _check_audio(self, audio: np.ndarray | jax.Array | jax.ShapeDtypeStruct) -> None:
    """Raises if audio is not a non-empty finite float [batch, samples] array."""
    if len(audio.shape) != 2:
      raise ValueError(
        f"Expected audio [batch, samples], got shape {tuple(audio.shape)} "
        f"(a single clip [samples] needs a batch axis: audio[None])."
      )
    if 0 in audio.shape:
      raise ValueError(f"Cannot encode empty audio of shape {tuple(audio.shape)}.")
    if not jnp.issubdtype(audio.dtype, jnp.floating):
      raise TypeError(
        f"Expected float audio in [-1, 1], got dtype {audio.dtype} (scale integer PCM first)."
      )
    if isinstance(audio, jax.ShapeDtypeStruct):
      return
    finite = np.isfinite(audio).all() if isinstance(audio, np.ndarray) else _all_finite(audio)
    if not bool(finite):
      raise ValueError(_first_non_finite(audio))

  def _check_codes(self, codes: np.ndarray | jax.Array | jax.ShapeDtypeStruct) -> None:
    """Raises if codes are not non-empty integer [batch, frames, levels'] codes of this codec."""
    if len(codes.shape) != 3:
      raise ValueError(f"Expected codes [batch, frames, levels], got shape {tuple(codes.shape)}.")
    if 0 in codes.shape[:2]:
      raise ValueError(f"Cannot decode empty codes of shape {tuple(codes.shape)}.")
    if not 1 <= codes.shape[2] <= self.num_levels:
      raise ValueError(
        f"codes have {codes.shape[2]} levels; this codec has {self.num_levels} (decode any "
        f"prefix of 1 to {self.num_levels} levels)."
      )
    if not jnp.issubdtype(codes.dtype, jnp.integer):
      raise TypeError(f"Expected integer codes, got dtype {codes.dtype}.")
    if isinstance(codes, jax.ShapeDtypeStruct):
      return
    low, high = (codes.min(), codes.max()) if isinstance(codes, np.ndarray) else _min_max(codes)
    if int(low) < 0 or int(high) >= self.codebook_size:
      raise ValueError(
        f"codes must be in [0, {self.codebook_size}), got values in [{int(low)}, {int(high)}]."
      )


def load_codec(model_dir: str, step: int | None = None) -> SoundStreamCodec:
  """The trained codec in `model_dir` (architecture from the checkpoint), ready to encode/decode.

  Reads only the generator's params and its codebooks, in one pass over the checkpoint; the
  discriminator and both optimizer states stay on disk.

  Args:
    model_dir: the codec job's model dir (its checkpoints are in `model_dir/checkpoints`).
    step: step to load; None for the latest complete one.

  Raises:
    FileNotFoundError: no complete checkpoint in `model_dir/checkpoints`.
    CheckpointMismatchError: the checkpoint is not a SoundStream codec.
  """
  directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
  metadata, tree, _ = checkpoints.restore_trained(
    directory,
    MODEL_NAME,
    "a SoundStream codec",
    subtrees=(("params", GENERATOR), (MODEL_STATE,)),
    step=step,
  )
  config = architecture.from_json(SoundStreamConfig, metadata["architecture"])
  return SoundStreamCodec(config, {"params": tree["params"][GENERATOR], **tree[MODEL_STATE]})
