"""Tests of the stage vocabularies and sequence formats."""

import numpy as np
import pytest

from musiclm_jax import stages

TINY = stages.TokenSpec.tiny()
PAPER = stages.TokenSpec()
TINY_LAYOUTS = stages.stage_layouts(
  TINY, semantic_crop_seconds=4.0, coarse_crop_seconds=2.0, fine_crop_seconds=1.0
)
PAPER_LAYOUTS = stages.stage_layouts(PAPER)
ALL_LAYOUTS = [
  pytest.param(layouts[stage], id=f"{size}-{stage}")
  for size, layouts in (("tiny", TINY_LAYOUTS), ("paper", PAPER_LAYOUTS))
  for stage in stages.STAGES
]


def _random_crop(layout: stages.StageLayout, rng: np.random.Generator, batch=()) -> dict:
  """Raw codes of one crop: mulan [*batch, L_m], semantic [*batch, F], acoustic [*batch, 2F, L]."""
  spec = layout.tokens
  return {
    "mulan": rng.integers(0, spec.mulan_codebook_size, batch + (spec.mulan_levels,)),
    "semantic": rng.integers(0, spec.semantic_codebook_size, batch + (layout.semantic_frames,)),
    "acoustic": rng.integers(
      0, spec.acoustic_codebook_size, batch + (layout.acoustic_frames, spec.acoustic_levels)
    ),
  }


@pytest.mark.parametrize(
  "stage, inputs_length, targets_length, vocab_size, padded",
  [
    ("semantic", 12, 750, 2 + 12 * 1024 + 1024, 13440),
    ("coarse", 12 + 250, 2000, 2 + 12 * 1024 + 1024 + 4 * 1024, 17536),
    ("fine", 600, 1200, 2 + 12 * 1024, 12416),
  ],
)
def test_paper_lengths_and_vocab(stage, inputs_length, targets_length, vocab_size, padded):
  layout = PAPER_LAYOUTS[stage]
  assert (layout.inputs_length, layout.targets_length) == (inputs_length, targets_length)
  assert layout.vocab_size == vocab_size
  assert layout.padded_vocab_size() == padded
  assert layout.padded_vocab_size(multiple=1) == vocab_size


def _assert_parts_equal(got: dict, want: dict) -> None:
  assert got.keys() == want.keys()
  for family in want:
    assert got[family].dtype == np.int32
    np.testing.assert_array_equal(got[family], want[family])


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)], ids=["unbatched", "batch3", "batch2x2"])
def test_encode_decode_round_trip(layout, batch):
  crop = _random_crop(layout, np.random.default_rng(0), batch)
  inputs, targets = layout.encode(crop)
  assert inputs.dtype == np.int32 and targets.dtype == np.int32
  assert inputs.shape == batch + (layout.inputs_length,)
  assert targets.shape == batch + (layout.targets_length,)
  want_inputs, want_targets = layout.split_clip(crop)
  _assert_parts_equal(layout.decode_inputs(inputs), want_inputs)
  _assert_parts_equal(layout.decode_targets(targets), want_targets)
  np.testing.assert_array_equal(layout.encode_inputs(layout.decode_inputs(inputs)), inputs)
  np.testing.assert_array_equal(layout.encode_targets(layout.decode_targets(targets)), targets)


def _ranges_by_family_level(layout: stages.StageLayout) -> dict:
  """{(family, level): (lo, hi)} from the per-position id ranges of inputs and targets."""
  out = {}
  segments = layout.inputs_segments + layout.targets_segments
  ranges = np.concatenate([layout.inputs_id_ranges(), layout.target_id_ranges()])
  levels = np.concatenate([s.position_levels() for s in segments])
  families = np.concatenate([[s.family] * s.length for s in segments])
  for family, level, (lo, hi) in zip(families, levels, ranges):
    assert out.setdefault((str(family), int(level)), (int(lo), int(hi))) == (lo, hi)
  return out


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_family_levels_have_distinct_ranges_tiling_the_vocab(layout):
  ranges = sorted(_ranges_by_family_level(layout).values())
  assert ranges[0][0] == stages.NUM_RESERVED_IDS
  assert ranges[-1][1] == layout.vocab_size
  for (_, hi), (lo, _) in zip(ranges, ranges[1:]):
    assert hi == lo, "ranges must be disjoint and leave no gaps"


@pytest.mark.parametrize("layouts", [TINY_LAYOUTS, PAPER_LAYOUTS], ids=["tiny", "paper"])
def test_ids_consistent_across_stages(layouts):
  semantic = _ranges_by_family_level(layouts["semantic"])
  coarse = _ranges_by_family_level(layouts["coarse"])
  fine = _ranges_by_family_level(layouts["fine"])
  for key in semantic:
    assert coarse[key] == semantic[key]
  shifts = {coarse[key][0] - fine[key][0] for key in coarse if key[0] == "acoustic"}
  assert len(shifts) == 1, "acoustic ids of coarse and fine stages differ by one constant"


def test_frame_major_order_by_hand():
  coarse, fine = TINY_LAYOUTS["coarse"], TINY_LAYOUTS["fine"]
  crop = _random_crop(coarse, np.random.default_rng(1))
  crop["acoustic"][0] = [3, 5, 0, 0, 1, 2]
  crop["acoustic"][1] = [7, 9, 4, 6, 8, 15]
  # Tiny coarse vocab: reserved 2 + mulan 4×16 + semantic 32 → acoustic starts at 98.
  _, targets = coarse.encode(crop)
  assert targets[:4].tolist() == [98 + 3, 98 + 16 + 5, 98 + 7, 98 + 16 + 9]
  # Tiny fine vocab holds acoustic only: level q of code c is 2 + 16 q + c.
  inputs, targets = fine.encode({"acoustic": crop["acoustic"][: fine.acoustic_frames]})
  assert inputs[:4].tolist() == [2 + 3, 2 + 16 + 5, 2 + 7, 2 + 16 + 9]
  assert targets[:8].tolist() == [34 + 0, 50 + 0, 66 + 1, 82 + 2, 34 + 4, 50 + 6, 66 + 8, 82 + 15]


def _set(family: str, index, value: int):
  """A mutation writing one raw code."""

  def mutate(crop):
    crop[family][index] = value

  return mutate


ERROR_CASES = [
  (
    "coarse",
    lambda c: c.update(acoustic=c["acoustic"][:-1]),
    r"misaligned crop: 8 semantic frames need 16 acoustic frames \(2 per semantic frame\), got 15",
  ),
  (
    "coarse",
    _set("semantic", 3, 32),
    r"coarse inputs: raw code 32 at position 7 \('semantic' frame 3\) is outside .*\[0, 32\)",
  ),
  (
    "coarse",
    _set("acoustic", (2, 1), -1),
    r"coarse targets: raw code -1 at position 5 \('acoustic' level 1 frame 2\)",
  ),
  (
    "fine",
    _set("acoustic", (1, 4), 16),
    r"fine targets: raw code 16 at position 6 \('acoustic' level 4 frame 1\)",
  ),
  (
    "semantic",
    _set("mulan", 2, 99),
    r"semantic inputs: raw code 99 at position 2 \('mulan' level 2\)",
  ),
  (
    "semantic",
    lambda c: c.update(mulan=c["mulan"][:3]),
    r"'mulan' tokens must have trailing shape \(4,\) \[levels\], got shape \(3,\)",
  ),
  (
    "semantic",
    lambda c: c.update(semantic=c["semantic"][:7]),
    r"'semantic' tokens must have trailing shape \(16,\) \[frames\], got shape \(7,\)",
  ),
  (
    "coarse",
    lambda c: c.update(semantic=c["semantic"][:7], acoustic=c["acoustic"][:14]),
    r"'semantic' tokens must have trailing shape \(8,\)",
  ),
  (
    "fine",
    lambda c: c.update(acoustic=c["acoustic"][:, :5]),
    r"'acoustic' tokens must be \[\.\.\., frames, 6 levels\], got shape \(8, 5\)",
  ),
  ("coarse", lambda c: c.pop("mulan"), r"coarse stage needs token families \['mulan'\]"),
  (
    "semantic",
    lambda c: c.update(semantic=c["semantic"].astype(np.float32)),
    r"'semantic' tokens must be integers, got float32",
  ),
  (
    "coarse",
    lambda c: c.update(mulan=np.stack([c["mulan"]] * 2)),
    r"coarse inputs: token families have different batch shapes",
  ),
]


@pytest.mark.parametrize("stage, mutate, match", ERROR_CASES)
def test_encode_errors(stage, mutate, match):
  layout = TINY_LAYOUTS[stage]
  crop = _random_crop(layout, np.random.default_rng(2))
  mutate(crop)
  with pytest.raises(ValueError, match=match):
    layout.encode(crop)


def test_decode_rejects_id_of_wrong_level():
  layout = TINY_LAYOUTS["coarse"]
  _, targets = layout.encode(_random_crop(layout, np.random.default_rng(3), (2,)))
  targets[1, 1] = targets[1, 0]  # a level-0 id where level 1 belongs
  with pytest.raises(
    ValueError,
    match=r"coarse targets: id \d+ at position 1 \('acoustic' level 1 frame 0\) \(batch index "
    r"\(1,\)\) is outside the allowed range \[114, 130\)",
  ):
    layout.decode_targets(targets)


def test_decode_rejects_pad_and_wrong_length():
  layout = TINY_LAYOUTS["semantic"]
  _, targets = layout.encode(_random_crop(layout, np.random.default_rng(4)))
  with pytest.raises(ValueError, match=r"ids must be integers of shape \[\.\.\., 16\]"):
    layout.decode_targets(targets[:-1])
  targets[-1] = stages.PAD_ID
  with pytest.raises(ValueError, match=r"id 0 at position 15 \('semantic' frame 15\)"):
    layout.decode_targets(targets)


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_id_ranges_agree_with_encode(layout):
  spec = layout.tokens
  crop = _random_crop(layout, np.random.default_rng(5))
  lowest = {k: np.zeros_like(v) for k, v in crop.items()}
  highest = {k: np.full_like(v, spec.codebook_size(k) - 1) for k, v in crop.items()}
  for ranges, index in ((layout.inputs_id_ranges(), 0), (layout.target_id_ranges(), 1)):
    assert ranges.shape == ((layout.inputs_length, layout.targets_length)[index], 2)
    np.testing.assert_array_equal(layout.encode(lowest)[index], ranges[:, 0])
    np.testing.assert_array_equal(layout.encode(highest)[index], ranges[:, 1] - 1)
    ids = layout.encode(crop)[index]
    assert np.all((ids >= ranges[:, 0]) & (ids < ranges[:, 1]))


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(num_coarse_levels=12), r"num_coarse_levels must be in \[1, acoustic_levels=12\)"),
    (dict(acoustic_rate_hz=60), r"acoustic_rate_hz=60 must be an integer multiple"),
    (dict(mulan_levels=0), r"TokenSpec.mulan_levels must be a positive integer, got 0"),
  ],
)
def test_token_spec_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    stages.TokenSpec(**kwargs)


@pytest.mark.parametrize(
  "stage, crop_seconds, match",
  [
    ("fine", 0.03, r"fine stage: crop_seconds=0.03 × semantic_rate_hz=25 must be a positive"),
    ("coarse", 0.0, r"must be a positive integer number of frames"),
    ("medium", 10.0, r"StageLayout.stage must be one of"),
  ],
)
def test_stage_layout_validation(stage, crop_seconds, match):
  with pytest.raises(ValueError, match=match):
    stages.StageLayout(stage, PAPER, crop_seconds)
