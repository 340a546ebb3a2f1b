"""Vocabulary layouts and sequence formats of the three MusicLM stage LMs.

Each stage LM is a decoder-only prefix LM over `inputs` (conditioning) followed by `targets`
(DESIGN §3). This module is the single place that says which raw token goes to which id:

* ids 0 and 1 are reserved (`PAD_ID`, which shift-right also uses as BOS, and `EOS_ID`).
* A stage's vocabulary holds only the token families that stage uses, one after another in the
  fixed order mulan, semantic, acoustic. Inside a family, RVQ level q owns the ids
  `[q * codebook_size, (q + 1) * codebook_size)`, so the LM never confuses a code of level 1 with
  the same code of level 2. A family holds the levels 0..(highest level the stage uses).
* Consequently mulan and semantic ids are identical in the semantic and coarse stages, and
  acoustic level q has the same id in every stage up to a per-stage constant (the size of the
  mulan + semantic ranges, which the fine stage does not have). Stages exchange raw codes
  (`decode_targets` of one stage → `encode_inputs` of the next), never ids.
* Acoustic frames are flattened frame-major: `t0q0 t0q1 … t1q0 …`.

| stage    | inputs                            | targets                 | paper lengths |
| semantic | mulan                             | semantic                | 12 + 750      |
| coarse   | mulan + semantic of the crop      | acoustic levels [0, nc) | 262 + 2000    |
| fine     | acoustic levels [0, nc) of crop   | acoustic levels [nc, L) | 600 + 1200    |

Everything here is numpy; the tf.data version in `musiclm_jax/data/stage_tasks.py` reuses the
segments and offsets defined here so that both produce identical ids.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np

PAD_ID = 0
EOS_ID = 1
NUM_RESERVED_IDS = 2

MULAN = "mulan"
SEMANTIC = "semantic"
ACOUSTIC = "acoustic"
FAMILIES = (MULAN, SEMANTIC, ACOUSTIC)

SEMANTIC_STAGE = "semantic"
COARSE_STAGE = "coarse"
FINE_STAGE = "fine"
STAGES = (SEMANTIC_STAGE, COARSE_STAGE, FINE_STAGE)

PAPER_CROP_SECONDS = {SEMANTIC_STAGE: 30.0, COARSE_STAGE: 10.0, FINE_STAGE: 3.0}


@dataclasses.dataclass(frozen=True)
class TokenSpec:
  """Codebook configuration of the three token families. Defaults are the paper's.

  Attributes:
    mulan_levels: RVQ levels of the MuLan conditioning tokens (one token per level).
    mulan_codebook_size: codes per MuLan RVQ level.
    semantic_codebook_size: k-means clusters of the w2v-BERT semantic tokens.
    acoustic_levels: SoundStream RVQ levels.
    acoustic_codebook_size: codes per SoundStream RVQ level.
    num_coarse_levels: acoustic levels [0, num_coarse_levels) are coarse, the rest fine.
    semantic_rate_hz: semantic frames per second.
    acoustic_rate_hz: acoustic frames per second; an integer multiple of `semantic_rate_hz`.
  """

  mulan_levels: int = 12
  mulan_codebook_size: int = 1024
  semantic_codebook_size: int = 1024
  acoustic_levels: int = 12
  acoustic_codebook_size: int = 1024
  num_coarse_levels: int = 4
  semantic_rate_hz: int = 25
  acoustic_rate_hz: int = 50

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"TokenSpec.{field.name} must be a positive integer, got {value!r}")
    if not 1 <= self.num_coarse_levels < self.acoustic_levels:
      raise ValueError(
        f"TokenSpec.num_coarse_levels must be in [1, acoustic_levels={self.acoustic_levels}) so "
        f"both coarse and fine stages have levels, got {self.num_coarse_levels}"
      )
    if self.acoustic_rate_hz % self.semantic_rate_hz:
      raise ValueError(
        f"TokenSpec.acoustic_rate_hz={self.acoustic_rate_hz} must be an integer multiple of "
        f"semantic_rate_hz={self.semantic_rate_hz} so that crops of both streams align"
      )

  @classmethod
  def tiny(cls) -> TokenSpec:
    """A small spec for tests and the quickstart: 4×16 mulan, 32 semantic, 6×16 acoustic."""
    return cls(
      mulan_levels=4,
      mulan_codebook_size=16,
      semantic_codebook_size=32,
      acoustic_levels=6,
      acoustic_codebook_size=16,
      num_coarse_levels=2,
      semantic_rate_hz=4,
      acoustic_rate_hz=8,
    )

  @property
  def acoustic_frames_per_semantic(self) -> int:
    """Acoustic frames covered by one semantic frame (2 in the paper)."""
    return self.acoustic_rate_hz // self.semantic_rate_hz

  def codebook_size(self, family: str) -> int:
    """Codes per RVQ level of `family`."""
    return {
      MULAN: self.mulan_codebook_size,
      SEMANTIC: self.semantic_codebook_size,
      ACOUSTIC: self.acoustic_codebook_size,
    }[family]


@dataclasses.dataclass(frozen=True)
class Segment:
  """A contiguous run of sequence positions holding levels [level_lo, level_hi) of one family.

  Attributes:
    family: one of `FAMILIES`.
    level_lo: first RVQ level held.
    level_hi: one past the last RVQ level held.
    frames: time frames held; None for mulan, which has no time axis.
  """

  family: str
  level_lo: int
  level_hi: int
  frames: int | None

  @property
  def num_levels(self) -> int:
    return self.level_hi - self.level_lo

  @property
  def raw_shape(self) -> tuple[int, ...]:
    """Trailing shape of the raw token array: mulan [levels], semantic [frames],
    acoustic [frames, levels]."""
    if self.family == MULAN:
      return (self.num_levels,)
    if self.family == SEMANTIC:
      return (self.frames,)
    return (self.frames, self.num_levels)

  @property
  def length(self) -> int:
    return int(np.prod(self.raw_shape))

  def position_levels(self) -> np.ndarray:
    """RVQ level of each position of the flattened segment, int64 [length]."""
    if self.family == SEMANTIC:
      return np.zeros(self.frames, np.int64)
    levels = np.arange(self.level_lo, self.level_hi, dtype=np.int64)
    return levels if self.family == MULAN else np.tile(levels, self.frames)

  def describe(self, index: int) -> str:
    """Human-readable name of flat position `index` inside this segment."""
    if self.family == MULAN:
      return f"'mulan' level {self.level_lo + index}"
    if self.family == SEMANTIC:
      return f"'semantic' frame {index}"
    frame, level = divmod(index, self.num_levels)
    return f"'acoustic' level {self.level_lo + level} frame {frame}"


@dataclasses.dataclass(frozen=True)
class StageLayout:
  """Sequence format and vocabulary of one stage LM.

  Attributes:
    stage: one of `STAGES`.
    tokens: the codebook configuration.
    crop_seconds: crop length of this stage; crop_seconds × semantic_rate_hz must be an integer.
  """

  stage: str
  tokens: TokenSpec
  crop_seconds: float

  def __post_init__(self):
    if self.stage not in STAGES:
      raise ValueError(f"StageLayout.stage must be one of {STAGES}, got {self.stage!r}")
    frames = self.crop_seconds * self.tokens.semantic_rate_hz
    if self.crop_seconds <= 0 or abs(frames - round(frames)) > 1e-6:
      raise ValueError(
        f"{self.stage} stage: crop_seconds={self.crop_seconds} × semantic_rate_hz="
        f"{self.tokens.semantic_rate_hz} must be a positive integer number of frames"
      )

  @property
  def semantic_frames(self) -> int:
    """Semantic frames in one crop (750 for the paper's 30 s semantic stage)."""
    return round(self.crop_seconds * self.tokens.semantic_rate_hz)

  @property
  def acoustic_frames(self) -> int:
    """Acoustic frames in one crop; always frames_per_semantic × semantic_frames."""
    return self.semantic_frames * self.tokens.acoustic_frames_per_semantic

  @functools.cached_property
  def inputs_segments(self) -> tuple[Segment, ...]:
    """The segments of `inputs`, in sequence order."""
    spec = self.tokens
    mulan = Segment(MULAN, 0, spec.mulan_levels, None)
    if self.stage == SEMANTIC_STAGE:
      return (mulan,)
    if self.stage == COARSE_STAGE:
      return (mulan, Segment(SEMANTIC, 0, 1, self.semantic_frames))
    return (Segment(ACOUSTIC, 0, spec.num_coarse_levels, self.acoustic_frames),)

  @functools.cached_property
  def targets_segments(self) -> tuple[Segment, ...]:
    """The segments of `targets`, in sequence order."""
    spec = self.tokens
    if self.stage == SEMANTIC_STAGE:
      return (Segment(SEMANTIC, 0, 1, self.semantic_frames),)
    if self.stage == COARSE_STAGE:
      return (Segment(ACOUSTIC, 0, spec.num_coarse_levels, self.acoustic_frames),)
    levels = (spec.num_coarse_levels, spec.acoustic_levels)
    return (Segment(ACOUSTIC, *levels, self.acoustic_frames),)

  @property
  def families(self) -> tuple[str, ...]:
    """Token families this stage reads, in vocabulary order."""
    used = {s.family for s in self.inputs_segments + self.targets_segments}
    return tuple(f for f in FAMILIES if f in used)

  @functools.cached_property
  def family_levels(self) -> dict[str, int]:
    """Levels in each family's id range: 0..(highest level any segment of the stage holds)."""
    levels = {}
    for segment in self.inputs_segments + self.targets_segments:
      levels[segment.family] = max(levels.get(segment.family, 0), segment.level_hi)
    return levels

  @functools.cached_property
  def family_base(self) -> dict[str, int]:
    """First id of each family's range; families follow each other after the reserved ids."""
    bases, next_id = {}, NUM_RESERVED_IDS
    for family in self.families:
      bases[family] = next_id
      next_id += self.family_levels[family] * self.tokens.codebook_size(family)
    return bases

  @property
  def inputs_length(self) -> int:
    return sum(s.length for s in self.inputs_segments)

  @property
  def targets_length(self) -> int:
    return sum(s.length for s in self.targets_segments)

  @property
  def vocab_size(self) -> int:
    """Unpadded vocabulary size: reserved ids plus every id range the stage uses."""
    last = self.families[-1]
    return self.family_base[last] + self.family_levels[last] * self.tokens.codebook_size(last)

  def padded_vocab_size(self, multiple: int = 128) -> int:
    """`vocab_size` rounded up to a multiple (for even sharding of the embedding/logits)."""
    return -(-self.vocab_size // multiple) * multiple

  def _id_ranges(self, segments: tuple[Segment, ...]) -> np.ndarray:
    parts = []
    for segment in segments:
      size = self.tokens.codebook_size(segment.family)
      lo = self.family_base[segment.family] + segment.position_levels() * size
      parts.append(np.stack([lo, lo + size], axis=-1))
    return np.concatenate(parts, axis=0)

  def codebook_of_id(self) -> np.ndarray:
    """The half-open id range [lo, hi) of each id's own codebook, int64 [padded_vocab_size, 2].

    Ids of family f, level l share one codebook's range; a reserved or padding id is its own
    range [id, id + 1). A loss restricted to the target's codebook (`StageLM.codebook_softmax`)
    reads the range of each target from this table.
    """
    ids = np.arange(self.padded_vocab_size())
    table = np.stack([ids, ids + 1], axis=-1)
    for family in self.families:
      size = self.tokens.codebook_size(family)
      for level in range(self.family_levels[family]):
        lo = self.family_base[family] + level * size
        table[lo : lo + size] = (lo, lo + size)
    return table

  def inputs_id_ranges(self) -> np.ndarray:
    """Allowed half-open id range [lo, hi) at each inputs position, int64 [inputs_length, 2]."""
    return self._id_ranges(self.inputs_segments)

  def target_id_ranges(self) -> np.ndarray:
    """Allowed half-open id range [lo, hi) at each target position, int64 [targets_length, 2].

    A sampler masks logits outside the range so that every decoded id decodes to a valid code.
    """
    return self._id_ranges(self.targets_segments)

  def split_clip(self, tokens: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """Splits one crop of clip tokens into the raw parts of inputs and targets.

    Args:
      tokens: raw codes of one crop, leading batch dims allowed: `mulan` [..., mulan_levels],
        `semantic` [..., semantic_frames], `acoustic` [..., acoustic_frames, acoustic_levels].
        Only the families this stage uses are required.

    Returns:
      (inputs_parts, targets_parts) in the format `encode_inputs` / `encode_targets` take.
    """
    missing = [f for f in self.families if f not in tokens]
    if missing:
      raise ValueError(f"{self.stage} stage needs token families {missing}; got {sorted(tokens)}")
    arrays = {f: np.asarray(tokens[f]) for f in self.families}
    _check_alignment(self, arrays)
    if ACOUSTIC in arrays:
      acoustic = arrays[ACOUSTIC]
      if acoustic.ndim < 2 or acoustic.shape[-1] != self.tokens.acoustic_levels:
        raise ValueError(
          f"{self.stage} stage: 'acoustic' tokens must be [..., frames, "
          f"{self.tokens.acoustic_levels} levels], got shape {acoustic.shape}"
        )

    def parts(segments):
      out = {}
      for s in segments:
        x = arrays[s.family]
        out[s.family] = x[..., s.level_lo : s.level_hi] if s.family == ACOUSTIC else x
      return out

    return parts(self.inputs_segments), parts(self.targets_segments)

  def encode(self, tokens: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Encodes one crop (or a batch of crops) of raw codes into stage ids.

    Args:
      tokens: see `split_clip`.

    Returns:
      (inputs, targets): int32 [..., inputs_length] and [..., targets_length].
    """
    inputs_parts, targets_parts = self.split_clip(tokens)
    return self.encode_inputs(inputs_parts), self.encode_targets(targets_parts)

  def encode_inputs(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
    """Encodes raw inputs parts (the format `decode_inputs` returns) to int32 [..., inputs_length]."""
    return _encode_segments(self, "inputs", self.inputs_segments, parts)

  def encode_targets(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
    """Encodes raw targets parts (the format `decode_targets` returns) to int32 [..., targets_length]."""
    return _encode_segments(self, "targets", self.targets_segments, parts)

  def decode_inputs(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Inverts `encode_inputs`: int [..., inputs_length] → raw int32 codes per family.

    Coarse stage: {'mulan': [..., mulan_levels], 'semantic': [..., semantic_frames]}; fine stage:
    {'acoustic': [..., acoustic_frames, num_coarse_levels]}; semantic stage: {'mulan': ...}.
    """
    return _decode_segments(self, "inputs", self.inputs_segments, ids)

  def decode_targets(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Inverts `encode_targets`: int [..., targets_length] → raw int32 codes per family.

    Semantic stage: {'semantic': [..., semantic_frames]}; coarse / fine stage: {'acoustic':
    [..., acoustic_frames, levels of that stage]}.
    """
    return _decode_segments(self, "targets", self.targets_segments, ids)


def _check_alignment(layout: StageLayout, arrays: Mapping[str, np.ndarray]) -> None:
  """Semantic and acoustic crops must cover the same time span."""
  if SEMANTIC not in arrays or ACOUSTIC not in arrays:
    return
  semantic_frames = arrays[SEMANTIC].shape[-1] if arrays[SEMANTIC].ndim else 0
  acoustic_frames = arrays[ACOUSTIC].shape[-2] if arrays[ACOUSTIC].ndim >= 2 else 0
  ratio = layout.tokens.acoustic_frames_per_semantic
  if acoustic_frames != ratio * semantic_frames:
    raise ValueError(
      f"{layout.stage} stage: misaligned crop: {semantic_frames} semantic frames need "
      f"{ratio * semantic_frames} acoustic frames ({ratio} per semantic frame), got "
      f"{acoustic_frames}"
    )


def _describe(segments: tuple[Segment, ...], position: int) -> str:
  """Names the family/level/frame held at a flat sequence position."""
  start = 0
  for segment in segments:
    if position < start + segment.length:
      return f"position {position} ({segment.describe(position - start)})"
    start += segment.length
  raise IndexError(position)


def _check_in_range(
  values: np.ndarray, ranges: np.ndarray, segments: tuple[Segment, ...], what: str
) -> None:
  """Raises naming the first position whose value lies outside its [lo, hi) range.

  Args:
    values: int [..., length].
    ranges: int [length, 2].
    segments: the segments the positions belong to.
    what: prefix of the error message, e.g. "coarse targets: raw code".
  """
  bad = (values < ranges[:, 0]) | (values >= ranges[:, 1])
  if not bad.any():
    return
  index = np.unravel_index(np.argmax(bad), bad.shape)
  position = int(index[-1])
  lo, hi = ranges[position]
  batch = f" (batch index {tuple(int(i) for i in index[:-1])})" if len(index) > 1 else ""
  raise ValueError(
    f"{what} {int(values[index])} at {_describe(segments, position)}{batch} is outside the "
    f"allowed range [{lo}, {hi})"
  )


def _batch_shape(layout: StageLayout, part: str, segment: Segment, array: np.ndarray) -> tuple:
  """Validates dtype and trailing shape of one family's raw array; returns its batch shape."""
  if not np.issubdtype(array.dtype, np.integer):
    raise ValueError(
      f"{layout.stage} {part}: '{segment.family}' tokens must be integers, got {array.dtype}"
    )
  raw_rank = len(segment.raw_shape)
  if array.ndim < raw_rank or array.shape[array.ndim - raw_rank :] != segment.raw_shape:
    names = {MULAN: "[levels]", SEMANTIC: "[frames]", ACOUSTIC: "[frames, levels]"}
    raise ValueError(
      f"{layout.stage} {part}: '{segment.family}' tokens must have trailing shape "
      f"{segment.raw_shape} {names[segment.family]}, got shape {array.shape}"
    )
  return array.shape[: array.ndim - raw_rank]


def _encode_segments(
  layout: StageLayout, part: str, segments: tuple[Segment, ...], parts: Mapping[str, np.ndarray]
) -> np.ndarray:
  """Flattens raw codes segment by segment and adds each position's id offset.

  Returns:
    int32 [..., sum of segment lengths].
  """
  missing = [s.family for s in segments if s.family not in parts]
  if missing:
    raise ValueError(f"{layout.stage} {part} need token families {missing}; got {sorted(parts)}")
  flat, batch_shapes = [], set()
  for segment in segments:
    array = np.asarray(parts[segment.family])
    batch_shape = _batch_shape(layout, part, segment, array)
    batch_shapes.add(batch_shape)
    flat.append(array.reshape(batch_shape + (segment.length,)).astype(np.int64))
  if len(batch_shapes) > 1:
    raise ValueError(
      f"{layout.stage} {part}: token families have different batch shapes {sorted(batch_shapes)}"
    )
  raw = np.concatenate(flat, axis=-1)
  ranges = layout._id_ranges(segments)
  sizes = ranges[:, 1] - ranges[:, 0]
  codebook_ranges = np.stack([np.zeros_like(sizes), sizes], axis=-1)
  _check_in_range(raw, codebook_ranges, segments, f"{layout.stage} {part}: raw code")
  return (raw + ranges[:, 0]).astype(np.int32)


def _decode_segments(
  layout: StageLayout, part: str, segments: tuple[Segment, ...], ids: np.ndarray
) -> dict[str, np.ndarray]:
  """Subtracts id offsets and un-flattens each segment back to its raw shape."""
  ids = np.asarray(ids)
  length = sum(s.length for s in segments)
  if not np.issubdtype(ids.dtype, np.integer) or ids.ndim < 1 or ids.shape[-1] != length:
    raise ValueError(
      f"{layout.stage} {part}: ids must be integers of shape [..., {length}], got "
      f"{ids.dtype} {ids.shape}"
    )
  ranges = layout._id_ranges(segments)
  _check_in_range(ids, ranges, segments, f"{layout.stage} {part}: id")
  raw = (ids.astype(np.int64) - ranges[:, 0]).astype(np.int32)
  out, start = {}, 0
  for segment in segments:
    chunk = raw[..., start : start + segment.length]
    out[segment.family] = chunk.reshape(ids.shape[:-1] + segment.raw_shape)
    start += segment.length
  return out


def stage_layouts(
  tokens: TokenSpec,
  *,
  semantic_crop_seconds: float = PAPER_CROP_SECONDS[SEMANTIC_STAGE],
  coarse_crop_seconds: float = PAPER_CROP_SECONDS[COARSE_STAGE],
  fine_crop_seconds: float = PAPER_CROP_SECONDS[FINE_STAGE],
) -> dict[str, StageLayout]:
  """Builds the layouts of all three stages from one TokenSpec and per-stage crop lengths.

  Args:
    tokens: the codebook configuration shared by all stages.
    semantic_crop_seconds: crop of the semantic stage (paper 30 s).
    coarse_crop_seconds: crop of the coarse stage (paper 10 s).
    fine_crop_seconds: crop of the fine stage (paper 3 s).

  Returns:
    {stage name: StageLayout} for 'semantic', 'coarse' and 'fine'.
  """
  crops = {
    SEMANTIC_STAGE: semantic_crop_seconds,
    COARSE_STAGE: coarse_crop_seconds,
    FINE_STAGE: fine_crop_seconds,
  }
  return {stage: StageLayout(stage, tokens, crops[stage]) for stage in STAGES}
