"""Codec-initialised acoustic embeddings: the rows keep the codebook's geometry and land where the
stage's acoustic ids are, in the embedding table and the output projection, nowhere else."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from musiclm_jax import stages
from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.models import code_embeddings
from musiclm_jax.models.stage_lm import StageLM

TOKENS = stages.TokenSpec.tiny()  # acoustic: 6 levels × 16 codes, 2 coarse
CONFIG = TransformerConfig(
  num_layers=1, num_heads=2, head_dim=8, d_model=32, d_ff=64, dropout_rate=0.0
)


def _codebooks(levels=6, codes=16, dim=8, seed=0):
  rng = np.random.default_rng(seed)
  # Levels of very different scales (as residual levels are): each level's rows get unit RMS.
  scales = 10.0 ** -np.arange(levels)
  return rng.standard_normal((levels, codes, dim)) * scales[:, None, None]


def _pairwise(x):
  return np.linalg.norm(x[:, None] - x[None], axis=-1)


def test_rows_keep_the_codebooks_distances_up_to_scale():
  codebook = _codebooks()[3]
  rows = code_embeddings.level_rows(codebook, 32, np.random.default_rng(0))
  assert rows.shape == (16, 32)
  np.testing.assert_allclose(np.sqrt(np.mean(rows**2)), 1.0, rtol=1e-5)
  ratio = _pairwise(rows)[np.triu_indices(16, 1)] / _pairwise(codebook)[np.triu_indices(16, 1)]
  np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)


def test_a_narrower_model_keeps_the_principal_axes():
  rng = np.random.default_rng(1)
  # Variance concentrated in 2 of 8 dims: 2-wide rows must keep nearly all distances.
  codebook = rng.standard_normal((16, 8)) * np.array([10, 8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
  rows = code_embeddings.level_rows(codebook, 2, np.random.default_rng(0))
  corr = np.corrcoef(_pairwise(rows).ravel(), _pairwise(codebook).ravel())[0, 1]
  assert corr > 0.99


def test_rows_cover_exactly_the_stages_acoustic_ids():
  coarse = stages.StageLayout("coarse", TOKENS, 1.0)
  ids, rows = code_embeddings.acoustic_code_rows(coarse, _codebooks(), 32)
  base = coarse.family_base[stages.ACOUSTIC]
  np.testing.assert_array_equal(ids, base + np.arange(2 * 16))  # the coarse levels only
  assert rows.shape == (32, 32)
  semantic = stages.StageLayout("semantic", TOKENS, 4.0)
  ids, rows = code_embeddings.acoustic_code_rows(semantic, _codebooks(), 32)
  assert ids.shape == (0,) and rows.shape == (0, 32)


def test_codebooks_of_another_codec_are_refused():
  coarse = stages.StageLayout("coarse", TOKENS, 1.0)
  with pytest.raises(ValueError, match="another codec"):
    code_embeddings.acoustic_code_rows(coarse, _codebooks(codes=32), 32)


def test_stage_lm_starts_from_the_rows_and_nothing_else_changes():
  layout = stages.StageLayout("coarse", TOKENS, 1.0)
  ids, rows = code_embeddings.acoustic_code_rows(layout, _codebooks(), CONFIG.d_model)
  plain = StageLM(CONFIG, layout)
  seeded = plain.with_initial_code_rows(ids, rows)
  assert plain.initial_code_rows is None
  init = lambda model: nn.unbox(  # noqa: E731
    jax.jit(model.get_initial_variables)(jax.random.key(0))["params"]
  )
  before, after = init(plain), init(seeded)
  np.testing.assert_array_equal(after["token_embedding"][ids], rows)
  np.testing.assert_allclose(
    after["logits_dense"]["kernel"][:, ids], rows.T / np.sqrt(CONFIG.d_model), rtol=1e-6
  )
  others = np.setdiff1d(np.arange(plain.vocab_size), ids)
  np.testing.assert_array_equal(after["token_embedding"][others], before["token_embedding"][others])
  np.testing.assert_array_equal(
    after["logits_dense"]["kernel"][:, others], before["logits_dense"]["kernel"][:, others]
  )
  rest = lambda p: {k: v for k, v in p.items() if k not in ("token_embedding", "logits_dense")}  # noqa: E731
  jax.tree.map(np.testing.assert_array_equal, rest(after), rest(before))


def test_codes_of_one_level_share_a_direction_the_other_levels_lack():
  coarse = stages.StageLayout("coarse", TOKENS, 1.0)
  _, rows = code_embeddings.acoustic_code_rows(coarse, _codebooks(), 32)
  unit = rows / np.linalg.norm(rows, axis=-1, keepdims=True)
  cosine = unit @ unit.T
  same = np.kron(np.eye(2), np.ones((16, 16))).astype(bool) & ~np.eye(32, dtype=bool)
  assert (
    cosine[same].mean() > 0.3
    and abs(cosine[~np.kron(np.eye(2), np.ones((16, 16))).astype(bool)].mean()) < 0.2
  )
