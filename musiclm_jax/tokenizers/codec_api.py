"""What every acoustic codec offers, and `load_codec`, which reads any of them back.

A codec turns [batch, samples] audio at `sample_rate` into [batch, frames, levels] int32 codes in
[0, codebook_size) and back; any prefix of levels decodes. Two architectures implement it, picked
by the gin file of the codec run:

- `soundstream.codec.SoundStreamCodec`: the paper's SEANet + RVQ, trained adversarially.
- `spectral.codec.SpectralCodec`: fitted linear maps of power-law STFT magnitudes + RVQ +
  Griffin-Lim; what keeps the notes at laptop scale (README, "Design notes").
- `encodec.codec.EncodecCodec`: Meta's EnCodec imported from a transformers checkpoint
  (`musiclm-jax import-weights --kind=encodec`); never trained here.

`AudioCodec` holds what they share: input checks on the host before anything is dispatched (a
NaN in the audio or a code out of range would otherwise turn silently into garbage), one
`jax.jit` program per input shape (and per `num_levels` for encode), shape-only calls on
`jax.ShapeDtypeStruct` inputs (`jax.eval_shape`, nothing compiled or run), and decoding of any
prefix of levels through one program by padding the missing levels with -1 codes (which decode
to zero vectors).
"""

from __future__ import annotations

import abc
import collections
import math
import os
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax import architecture, checkpoints
from musiclm_jax.checkpoints import CheckpointMismatchError
from musiclm_jax.tokenizers.rvq import QUANTIZER

# What encode / decode accept: host arrays, device arrays, or shapes only.
ArrayLike = np.ndarray | jax.Array | jax.ShapeDtypeStruct
COLLECTIONS = ("params", QUANTIZER)

# The "model" each codec's checkpoint metadata names.
SOUNDSTREAM = "soundstream"
SPECTRAL = "spectral_codec"
ENCODEC = "encodec"


class CodecConfig(Protocol):
  """The frame grid and vocabulary every codec config has."""

  sample_rate: int
  hop_length: int
  frame_rate: int
  num_levels: int
  rvq: Any  # RVQConfig: codebook_size, num_levels, dim

  def num_frames(self, num_samples: int) -> int: ...


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


class AudioCodec(abc.ABC):
  """A codec for inference: validated, jitted `encode` / `decode` over its variables.

  Subclasses give `_encode_fn(variables, audio, levels)` and `_decode_fn(variables, codes)`, pure
  functions traced under `jax.jit`.

  Attributes:
    name: the architecture's name, as its checkpoints' metadata say ('soundstream', ...).
    config: the architecture (a `CodecConfig`).
    variables: {"params": ..., "quantizer": ...}.
  """

  name: str

  def __init__(self, config: CodecConfig, variables: dict[str, Any]):
    """Wraps a codec's variables.

    Args:
      config: the architecture the variables were created with.
      variables: a mapping with at least the collections `params` and `quantizer`; other
        collections are ignored.
    Raises:
      ValueError: if a collection is missing.
    """
    missing = [c for c in COLLECTIONS if c not in variables]
    if missing:
      raise ValueError(
        f"{type(self).__name__} needs variable collections {list(COLLECTIONS)}; missing "
        f"{missing} (got {sorted(variables)})."
      )
    self.config = config
    variables = {c: variables[c] for c in COLLECTIONS}
    leaves = jax.tree.leaves(variables)
    self._shapes_only = any(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    # Host (numpy) weights would be copied to the device on every call: move them once.
    self.variables = variables if self._shapes_only else jax.device_put(variables)
    self._traces: collections.Counter[str] = collections.Counter()
    # Variables are arguments, not closed-over constants, so programs do not embed the weights.
    self._encode_jit = jax.jit(self._encode_program, static_argnums=2)
    self._decode_jit = jax.jit(self._decode_program)

  @abc.abstractmethod
  def _encode_fn(self, variables: dict, audio: jax.Array, levels: int) -> jax.Array:
    """[batch, samples] float32 audio -> [batch, frames, levels] int32 codes (traced)."""

  @abc.abstractmethod
  def _decode_fn(self, variables: dict, codes: jax.Array) -> jax.Array:
    """[batch, frames, num_levels] int32 codes, -1 for absent levels -> [batch, samples]."""

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

  def codebooks(self) -> np.ndarray:
    """The RVQ code vectors, float32 [num_levels, codebook_size, rvq.dim], on the host.

    Both architectures keep them as the `codebooks` leaf of the `quantizer` collection.
    """
    found = [
      leaf
      for path, leaf in jax.tree_util.tree_leaves_with_path(self.variables["quantizer"])
      if getattr(path[-1], "key", None) == "codebooks"
    ]
    if len(found) != 1:
      raise ValueError(f"{self.name} codec: expected one 'codebooks' leaf, found {len(found)}.")
    return np.asarray(jax.device_get(found[0]), np.float32)

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
    return self._encode_fn(variables, audio, levels)

  def _decode_program(self, variables: dict, codes: jax.Array) -> jax.Array:
    self._traces["decode"] += 1
    return self._decode_fn(variables, codes)

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
        "This codec's variables are shapes only (`abstract`): pass jax.ShapeDtypeStruct "
        "inputs to get output shapes, or build it from real variables."
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


def _config_class(model: str) -> type:
  if model == ENCODEC:
    from musiclm_jax.tokenizers.encodec.config import EncodecCodecConfig

    return EncodecCodecConfig
  if model == SPECTRAL:
    from musiclm_jax.tokenizers.spectral.config import SpectralCodecConfig

    return SpectralCodecConfig
  from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig

  return SoundStreamConfig


def random_codec(config: CodecConfig, seed: int = 0) -> AudioCodec:
  """A codec of `config`'s architecture with random weights (benchmarks, shape tests)."""
  from musiclm_jax.tokenizers.encodec.config import EncodecCodecConfig
  from musiclm_jax.tokenizers.spectral.config import SpectralCodecConfig

  if isinstance(config, EncodecCodecConfig):
    from musiclm_jax.tokenizers.encodec.codec import EncodecCodec

    return EncodecCodec.random_init(config, seed)
  if isinstance(config, SpectralCodecConfig):
    from musiclm_jax.tokenizers.spectral.codec import SpectralCodec

    return SpectralCodec.random_init(config, seed)
  from musiclm_jax.tokenizers.soundstream.codec import SoundStreamCodec

  return SoundStreamCodec.random_init(config, seed)


def codec_config_from_metadata(metadata: dict[str, Any]) -> CodecConfig:
  """The architecture a codec checkpoint's metadata records (SoundStream, spectral, EnCodec)."""
  return architecture.from_json(_config_class(metadata.get("model")), metadata["architecture"])


def load_codec(model_dir: str, step: int | None = None) -> AudioCodec:
  """The trained codec in `model_dir`, whichever architecture, ready to encode / decode.

  Reads only the codec's own weights and codebooks: a SoundStream's discriminator and optimizer
  states stay on disk.

  Args:
    model_dir: the codec job's model dir (its checkpoints are in `model_dir/checkpoints`).
    step: step to load; None for the latest complete one.
  Raises:
    FileNotFoundError: no complete checkpoint in `model_dir/checkpoints`.
    CheckpointMismatchError: the checkpoint is not a codec's (or a spectral fit not finished).
  """
  directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
  model = checkpoints.read_saved_step(directory, step).metadata.get("model")
  if model == SPECTRAL:
    from musiclm_jax.tokenizers.spectral.codec import load_spectral_codec

    return load_spectral_codec(directory, step)
  if model == SOUNDSTREAM:
    from musiclm_jax.tokenizers.soundstream.codec import load_soundstream_codec

    return load_soundstream_codec(directory, step)
  if model == ENCODEC:
    from musiclm_jax.tokenizers.encodec.codec import load_encodec_codec

    return load_encodec_codec(directory, step)
  raise CheckpointMismatchError(
    f"{directory} holds a {model!r} checkpoint, not a codec "
    f"({SOUNDSTREAM!r}, {SPECTRAL!r} or {ENCODEC!r})."
  )
