"""A learnable, structured stand-in source of token streams (not audio).

Until the real tokenizers (MuLan, w2v-BERT + k-means, SoundStream) exist, tests and the quickstart
train the stage LMs on synthetic streams with the same shapes and rates as real ones, built so that
every stage has something to learn:

* a clip has a *style* (one of `num_styles`); its `mulan` tokens are the style's fixed codes, so
  the semantic stage can read the style from its prefix;
* `semantic` tokens follow the style's Markov chain: the next id is the style's fixed successor
  of the current id, except with probability `noise` where it is uniform;
* `acoustic` frame `r * i + p` (r = acoustic frames per semantic frame, p its parity/phase) of
  level 0 is a fixed function of (semantic[i], p), and level q > 0 a fixed function of (q, p, the
  code of level q - 1 in the same frame); each code is replaced by a uniform one with
  probability `noise`. So coarse levels follow from the semantic tokens and fine levels from
  the coarse ones.

All tables come from `seed`; clip k of a split comes from (seed, split, k) alone, so streams are
identical across runs, hosts and re-iterations.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator

import numpy as np
import seqio
import tensorflow as tf

from musiclm_jax.stages import ACOUSTIC, MULAN, SEMANTIC, TokenSpec

SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class _World:
  """Seeded tables shared by every clip of every split.

  Attributes:
    style_mulan: int32 [num_styles, mulan_levels], the mulan codes of each style.
    style_successor: int32 [num_styles, semantic_codebook_size], next semantic id per style.
    level0: int32 [frames_per_semantic, semantic_codebook_size], acoustic level-0 code from
      (phase, semantic id).
    next_level: int32 [acoustic_levels, frames_per_semantic, acoustic_codebook_size], level-q
      code from (q, phase, level q-1 code), a permutation of the codes; row 0 is unused.
  """

  style_mulan: np.ndarray
  style_successor: np.ndarray
  level0: np.ndarray
  next_level: np.ndarray


def _cyclic_successor(rng: np.random.Generator, size: int) -> np.ndarray:
  """A successor table [size] that visits all ids in one random cycle.

  A plain random permutation would leave many ids on cycles of length 1 or 2, i.e. streams that
  repeat one or two ids forever.
  """
  order = rng.permutation(size)
  successor = np.empty(size, np.int64)
  successor[order] = np.roll(order, -1)
  return successor


def _make_world(tokens: TokenSpec, seed: int, num_styles: int) -> _World:
  rng = np.random.default_rng([seed])
  ratio = tokens.acoustic_frames_per_semantic
  semantic_size, acoustic_size = tokens.semantic_codebook_size, tokens.acoustic_codebook_size
  successor = np.stack([_cyclic_successor(rng, semantic_size) for _ in range(num_styles)])
  # Permutations keep every level as diverse as level 0; random maps would collapse the chain.
  next_level = np.stack(
    [
      np.stack([rng.permutation(acoustic_size) for _ in range(ratio)])
      for _ in range(tokens.acoustic_levels)
    ]
  )
  return _World(
    style_mulan=rng.integers(0, tokens.mulan_codebook_size, (num_styles, tokens.mulan_levels)),
    style_successor=successor,
    level0=rng.integers(0, acoustic_size, (ratio, semantic_size)),
    next_level=next_level,
  )


def _noisy(rng: np.random.Generator, codes: np.ndarray, size: int, noise: float) -> np.ndarray:
  """Replaces each code by a uniform one with probability `noise`."""
  flip = rng.random(codes.shape) < noise
  return np.where(flip, rng.integers(0, size, codes.shape), codes)


def _semantic_chain(
  rng: np.random.Generator, successor: np.ndarray, frames: int, size: int, noise: float
) -> np.ndarray:
  """A Markov chain of `frames` semantic ids following `successor` [size]. Returns [frames]."""
  out = np.empty(frames, np.int64)
  jumps = rng.random(frames) < noise
  uniform = rng.integers(0, size, frames)
  for t in range(frames):
    out[t] = uniform[t] if t == 0 or jumps[t] else successor[out[t - 1]]
  return out


def _acoustic_codes(
  rng: np.random.Generator, world: _World, semantic: np.ndarray, tokens: TokenSpec, noise: float
) -> np.ndarray:
  """Acoustic codes aligned with `semantic` [T]. Returns [T * frames_per_semantic, levels]."""
  ratio = tokens.acoustic_frames_per_semantic
  phase = np.arange(semantic.size * ratio) % ratio
  semantic_per_frame = np.repeat(semantic, ratio)
  size = tokens.acoustic_codebook_size
  levels = [_noisy(rng, world.level0[phase, semantic_per_frame], size, noise)]
  for q in range(1, tokens.acoustic_levels):
    levels.append(_noisy(rng, world.next_level[q, phase, levels[-1]], size, noise))
  return np.stack(levels, axis=-1)


def _semantic_frames(tokens: TokenSpec, seconds: float, what: str) -> int:
  frames = seconds * tokens.semantic_rate_hz
  if seconds < 0 or abs(frames - round(frames)) > 1e-6:
    raise ValueError(
      f"{what}={seconds} × semantic_rate_hz={tokens.semantic_rate_hz} must be a non-negative "
      f"integer number of frames"
    )
  return round(frames)


def synthetic_clips(
  tokens: TokenSpec,
  num_clips: int,
  clip_seconds: float,
  seed: int,
  *,
  split: str = "train",
  min_clip_seconds: float | None = None,
  num_styles: int = 8,
  noise: float = 0.05,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields the clips of one split, in a fixed order.

  Args:
    tokens: codebook configuration (shapes and code ranges).
    num_clips: clips in this split.
    clip_seconds: clip length (the longest one when `min_clip_seconds` is set).
    seed: seeds the shared tables and every clip.
    split: one of `SPLITS`; splits share the tables but not the clips.
    min_clip_seconds: if set, each clip's length is uniform in [min_clip_seconds, clip_seconds]
      (in whole semantic frames), so some clips can be shorter than a stage crop.
    num_styles: number of styles (mulan code sets / semantic Markov chains).
    noise: probability that a semantic or acoustic code is uniform instead of structured.

  Yields:
    {'mulan': int32 [mulan_levels], 'semantic': int32 [T], 'acoustic': int32
    [T * frames_per_semantic, acoustic_levels]}, T varying per clip if `min_clip_seconds`.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  max_frames = _semantic_frames(tokens, clip_seconds, "clip_seconds")
  min_frames = max_frames
  if min_clip_seconds is not None:
    min_frames = math.ceil(min_clip_seconds * tokens.semantic_rate_hz - 1e-6)
    if not 0 <= min_frames <= max_frames:
      raise ValueError(f"min_clip_seconds={min_clip_seconds} must be in [0, {clip_seconds}]")
  world = _make_world(tokens, seed, num_styles)
  for index in range(num_clips):
    rng = np.random.default_rng([seed, SPLITS.index(split) + 1, index])
    style = rng.integers(num_styles)
    frames = int(rng.integers(min_frames, max_frames + 1))
    semantic = _semantic_chain(
      rng, world.style_successor[style], frames, tokens.semantic_codebook_size, noise
    )
    yield {
      MULAN: world.style_mulan[style].astype(np.int32),
      SEMANTIC: semantic.astype(np.int32),
      ACOUSTIC: _acoustic_codes(rng, world, semantic, tokens, noise).astype(np.int32),
    }


def synthetic_token_source(
  tokens: TokenSpec,
  num_clips: int,
  clip_seconds: float,
  seed: int,
  *,
  num_validation_clips: int | None = None,
  min_clip_seconds: float | None = None,
  num_styles: int = 8,
  noise: float = 0.05,
) -> seqio.FunctionDataSource:
  """A seqio source with 'train' and 'validation' splits of synthetic clips.

  The source yields clips in a fixed order whatever `shuffle_files` / `seed` seqio passes;
  shuffling happens in the Task. See `synthetic_clips` for the arguments.

  Args:
    tokens: codebook configuration.
    num_clips: clips in 'train'.
    clip_seconds: (longest) clip length.
    seed: seeds all streams.
    num_validation_clips: clips in 'validation'; default max(1, num_clips // 10).
    min_clip_seconds: shortest clip length; None makes all clips `clip_seconds` long.
    num_styles: number of styles.
    noise: probability of an unstructured code.

  Returns:
    A `seqio.FunctionDataSource` of features `mulan` int32 [mulan_levels], `semantic` int32 [T],
    `acoustic` int32 [T * frames_per_semantic, acoustic_levels].
  """
  sizes = {"train": num_clips, "validation": num_validation_clips or max(1, num_clips // 10)}
  clip_kwargs = dict(min_clip_seconds=min_clip_seconds, num_styles=num_styles, noise=noise)
  _semantic_frames(tokens, clip_seconds, "clip_seconds")  # fail at construction, not in tf.data
  signature = {
    MULAN: tf.TensorSpec([tokens.mulan_levels], tf.int32),
    SEMANTIC: tf.TensorSpec([None], tf.int32),
    ACOUSTIC: tf.TensorSpec([None, tokens.acoustic_levels], tf.int32),
  }

  source_seed = seed  # `dataset_fn` must name its own argument `seed` for seqio.

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed  # The order is fixed; the Task shuffles with its own seed.
    clips = functools.partial(
      synthetic_clips, tokens, sizes[split], clip_seconds, source_seed, split=split, **clip_kwargs
    )
    return tf.data.Dataset.from_generator(clips, output_signature=signature)

  return seqio.FunctionDataSource(dataset_fn, splits=SPLITS, num_input_examples=sizes)
