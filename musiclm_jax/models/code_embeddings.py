"""Data-dependent initialisation of a stage LM's acoustic ids from the codec's own codebooks.

A stage LM starts with random embeddings: code 17 and code 18 of a level are unrelated vectors,
and the LM must discover from the data which codes sound alike, for every one of the
levels × codebook_size ids, before it can learn that the next frame mostly repeats the last one.
A tiny LM (width 32, a few hundred CPU steps) never gets there: it memorises its training clips
and predicts held-out frames at chance.

The codec already knows which codes sound alike: its codebook vectors. This module maps each
acoustic level's code vectors to rows of width `d_model` (principal axes first, so a narrower
model keeps the most variance; a fixed random rotation per level, so the levels do not share
axes; unit RMS), adds a random direction shared by all codes of the level (what attention needs
to find the previous frame's code of the same level) and writes them into both the token embedding and the output projection
(`StageLM.get_initial_variables`). A model whose attention copies the previous frame then
predicts codes near it from the first step: the same lever as the k-means initialisation of the
RVQ codebooks (README, "Design notes"). Only the initial values change; the architecture, the
checkpoint layout and the paper configs are those of a randomly initialised model.
"""

from __future__ import annotations

import numpy as np

from musiclm_jax.stages import ACOUSTIC, StageLayout


def level_rows(codebook: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
  """One level's code vectors as embedding rows.

  Args:
    codebook: [codes, dim] the level's code vectors.
    width: the row width (the LM's d_model).
    rng: draws the level's rotation.
  Returns:
    [codes, width] float32 rows: centred code vectors in their principal axes (truncated or
    zero-padded to `width`), rotated by a random orthogonal matrix, scaled to unit RMS.
  """
  centred = np.asarray(codebook, np.float64)
  centred = centred - centred.mean(axis=0)
  _, _, axes_t = np.linalg.svd(centred, full_matrices=False)
  coords = (centred @ axes_t.T)[:, :width]
  coords = np.pad(coords, ((0, 0), (0, width - coords.shape[1])))
  rotation, _ = np.linalg.qr(rng.standard_normal((width, width)))
  rows = coords @ rotation
  rms = np.sqrt(np.mean(rows**2))
  return (rows / max(rms, 1e-12)).astype(np.float32)


def acoustic_code_rows(
  layout: StageLayout, codebooks: np.ndarray, width: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Embedding rows for every acoustic id of `layout`, from the codec's codebooks.

  Args:
    layout: the stage's vocabulary layout (its acoustic id range, if it has one).
    codebooks: [levels, codes, dim] the codec's code vectors (`AudioCodec.codebooks()`).
    width: the LM's d_model.
    seed: seeds the per-level rotations.
  Returns:
    (ids [n] int32, rows [n, width] float32): each level's `level_rows` plus a random unit-RMS
    vector shared by the level, over sqrt(2); empty for a stage without acoustic ids.
  Raises:
    ValueError: the codebooks do not match the layout's acoustic levels or codebook size.
  """
  levels = layout.family_levels.get(ACOUSTIC, 0)
  if levels == 0:
    return np.zeros((0,), np.int32), np.zeros((0, width), np.float32)
  size = layout.tokens.codebook_size(ACOUSTIC)
  if codebooks.ndim != 3 or codebooks.shape[0] < levels or codebooks.shape[1] != size:
    raise ValueError(
      f"codec codebooks of shape {codebooks.shape} cannot initialise a {layout.stage} stage "
      f"with {levels} acoustic levels of {size} codes: was the LM's token spec made from "
      "another codec?"
    )
  rng = np.random.default_rng(seed)
  base = layout.family_base[ACOUSTIC]
  ids = base + np.arange(levels * size, dtype=np.int32)
  rows = []
  for level in range(levels):
    # A direction shared by the level's codes: attention can find "the last code of my level"
    # (the previous frame) from the first step instead of learning it id by id.
    shared = rng.standard_normal(width)
    shared /= np.sqrt(np.mean(shared**2))
    rows.append((level_rows(codebooks[level], width, rng) + shared) / np.sqrt(2.0))
  return ids, np.concatenate(rows).astype(np.float32)
