"""Tests of the stage SeqIO tasks and of the synthetic token source they train on."""

import itertools

import numpy as np
import pytest
import seqio
import tensorflow as tf

from musiclm_jax import stages
from musiclm_jax.data import stage_tasks, synthetic_tokens

TOKENS = stages.TokenSpec.tiny()
# Crops of 16, 8 and 4 semantic frames; clips of 24 frames leave room for random starts.
LAYOUTS = stages.stage_layouts(
  TOKENS, semantic_crop_seconds=4.0, coarse_crop_seconds=2.0, fine_crop_seconds=1.0
)
CLIP_SECONDS = 6.0
NUM_CLIPS = 8
SOURCE_KWARGS = dict(num_clips=NUM_CLIPS, clip_seconds=CLIP_SECONDS, seed=0)
# Varying lengths in [0.5, 6] s: some clips are shorter than every crop.
SHORT_KWARGS = dict(num_clips=12, clip_seconds=CLIP_SECONDS, seed=1, min_clip_seconds=0.5)


def _source(**kwargs) -> seqio.DataSource:
  return synthetic_tokens.synthetic_token_source(TOKENS, **kwargs)


def _clips(**kwargs) -> list[dict[str, np.ndarray]]:
  return list(synthetic_tokens.synthetic_clips(TOKENS, **kwargs))


def _task(stage: str, policy: str = "drop", **source_kwargs) -> seqio.Task:
  name = f"stage_tasks_test_{stage}_{policy}_{source_kwargs['seed']}"
  return stage_tasks.make_stage_task(
    name, _source(**source_kwargs), LAYOUTS[stage], short_clip_policy=policy
  )


def _examples(task: seqio.Task, layout: stages.StageLayout) -> list[dict[str, np.ndarray]]:
  """One epoch of task examples, unshuffled."""
  dataset = task.get_dataset(
    stage_tasks.stage_feature_lengths(layout), split="train", shuffle=False, seed=0
  )
  return list(dataset.as_numpy_iterator())


def _batches(task, layout, count: int, **kwargs) -> list[dict[str, np.ndarray]]:
  kwargs = dict(split="train", batch_size=4, seed=3) | kwargs
  dataset = stage_tasks.get_stage_dataset(task, layout, **kwargs)
  return list(dataset.take(count).as_numpy_iterator())


def _crop_encodings(layout: stages.StageLayout, clips: list) -> dict:
  """{(inputs bytes, targets bytes): (clip index, start)} over every aligned crop of every clip."""
  ratio = TOKENS.acoustic_frames_per_semantic
  frames = layout.semantic_frames
  out = {}
  for index, clip in enumerate(clips):
    for start in range(clip["semantic"].size - frames + 1):
      crop = {
        "mulan": clip["mulan"],
        "semantic": clip["semantic"][start : start + frames],
        "acoustic": clip["acoustic"][ratio * start : ratio * (start + frames)],
      }
      inputs, targets = layout.encode(crop)
      out.setdefault((inputs.tobytes(), targets.tobytes()), (index, start))
  return out


@pytest.mark.parametrize("stage", stages.STAGES)
def test_examples_are_aligned_crops_encoded_like_numpy(stage):
  """Each example equals `StageLayout.encode` of the source clip cropped at semantic s and
  acoustic 2s, for some clip and s; starts vary, so crops are random."""
  layout = LAYOUTS[stage]
  examples = _examples(_task(stage, **SOURCE_KWARGS), layout)
  assert len(examples) == NUM_CLIPS
  crops = _crop_encodings(layout, _clips(**SOURCE_KWARGS))
  matches = []
  for example in examples:
    assert example["inputs"].dtype == np.int32 and example["targets"].dtype == np.int32
    key = (example["inputs"].tobytes(), example["targets"].tobytes())
    assert key in crops, "example is not an aligned crop of any source clip"
    matches.append(crops[key])
  assert sorted(index for index, _ in matches) == list(range(NUM_CLIPS))
  assert len({start for _, start in matches}) > 1


@pytest.mark.parametrize("stage", stages.STAGES)
@pytest.mark.parametrize("policy", stage_tasks.SHORT_CLIP_POLICIES)
def test_short_clip_policy(stage, policy):
  layout = LAYOUTS[stage]
  clips = _clips(**SHORT_KWARGS)
  lengths = [clip["semantic"].size for clip in clips]
  assert min(lengths) < layout.semantic_frames <= max(lengths), "source must exercise both cases"
  examples = _examples(_task(stage, policy, **SHORT_KWARGS), layout)
  kept = [n for n in lengths if n >= (layout.semantic_frames if policy == "drop" else 1)]
  assert len(examples) == len(kept)
  ranges = {"inputs": layout.inputs_id_ranges(), "targets": layout.target_id_ranges()}
  pad_counts = []
  for example, frames in zip(examples, kept):
    for name, ids in example.items():
      assert ids.shape == (len(ranges[name]),)
      is_pad = ids == stages.PAD_ID
      inside = (ids >= ranges[name][:, 0]) & (ids < ranges[name][:, 1])
      assert np.all(inside | is_pad), f"{name} ids outside their ranges"
    # Target positions per semantic frame: semantic 1, coarse 2·2 levels, fine 2·4 levels.
    per_frame = layout.targets_length // layout.semantic_frames
    real_frames = min(frames, layout.semantic_frames)
    assert np.sum(example["targets"] != stages.PAD_ID) == real_frames * per_frame
    pad_counts.append(np.sum(example["targets"] == stages.PAD_ID))
  assert (max(pad_counts) > 0) == (policy == "pad")


def test_pad_policy_keeps_pad_out_of_the_loss():
  layout = LAYOUTS["coarse"]  # short clips put PAD inside the inputs (semantic) and targets
  task = _task("coarse", "pad", **SHORT_KWARGS)
  (batch,) = _batches(task, layout, 1, batch_size=12, shuffle=False, num_epochs=1)
  tokens = batch["decoder_target_tokens"]
  assert np.any(tokens[:, : layout.inputs_length] == stages.PAD_ID), "need PAD in the prefix"
  weights = batch["decoder_loss_weights"]
  assert np.all(weights[:, : layout.inputs_length] == 0)
  np.testing.assert_array_equal(
    weights[:, layout.inputs_length :], tokens[:, layout.inputs_length :] != 0
  )


@pytest.mark.parametrize("stage", stages.STAGES)
def test_prefix_lm_features(stage):
  layout = LAYOUTS[stage]
  (batch,) = _batches(_task(stage, **SOURCE_KWARGS), layout, 1)
  length = layout.inputs_length + layout.targets_length
  assert set(batch) == {
    "decoder_target_tokens",
    "decoder_input_tokens",
    "decoder_loss_weights",
    "decoder_causal_attention",
  }
  for value in batch.values():
    assert value.shape == (4, length) and value.dtype == np.int32
  tokens = batch["decoder_target_tokens"]
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 0], stages.PAD_ID)
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], tokens[:, :-1])
  positions = np.arange(length)[None, :].repeat(4, axis=0)
  np.testing.assert_array_equal(batch["decoder_loss_weights"], positions >= layout.inputs_length)
  # The prefix attends bidirectionally, plus the position reading the last prefix token.
  np.testing.assert_array_equal(
    batch["decoder_causal_attention"], positions <= layout.inputs_length
  )


def _assert_batches_equal(got: list, want: list) -> None:
  assert len(got) == len(want)
  for a, b in zip(got, want):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_deterministic_for_a_seed_and_resumable_with_skip_batches():
  layout = LAYOUTS["coarse"]
  task = _task("coarse", **SOURCE_KWARGS)
  # 6 batches of 4 from 8 clips repeat the data 3 times: later epochs must re-crop too.
  run = _batches(task, layout, 6)
  _assert_batches_equal(_batches(task, layout, 6), run)
  _assert_batches_equal(_batches(task, layout, 3, skip_batches=3), run[3:])
  other_seed = _batches(task, layout, 6, seed=4)
  assert any(
    not np.array_equal(a["decoder_target_tokens"], b["decoder_target_tokens"])
    for a, b in zip(run, other_seed)
  )
  epochs = [
    np.sort(np.concatenate([b["decoder_target_tokens"] for b in run[i : i + 2]]), 0) for i in (0, 2)
  ]
  assert not np.array_equal(*epochs), "a new epoch must draw new crops"


def test_host_shards_are_disjoint_and_cover_the_data():
  layout = LAYOUTS["semantic"]
  # Clips exactly one crop long: each example is one whole clip.
  kwargs = dict(num_clips=7, clip_seconds=layout.crop_seconds, seed=5)
  task = _task("semantic", **kwargs)
  shards = []
  for shard_id in range(2):
    batches = _batches(
      task, layout, 100, batch_size=1, num_epochs=1, shard_id=shard_id, num_shards=2
    )
    shards.append([b["decoder_target_tokens"][0].tobytes() for b in batches])
  assert sorted(map(len, shards)) == [3, 4]
  assert not set(shards[0]) & set(shards[1])
  want = set()
  for clip in _clips(**kwargs):
    inputs, targets = layout.encode(clip)
    want.add(np.concatenate([inputs, targets]).tobytes())
  assert set(shards[0]) | set(shards[1]) == want


def test_reregistering_a_name_replaces_the_task():
  first = _task("fine", **SOURCE_KWARGS)
  second = _task("fine", **SOURCE_KWARGS)
  assert first is not second
  assert seqio.get_mixture_or_task(first.name) is second


def _tensor_source(**features) -> seqio.DataSource:
  """A one-clip source; arrays with a None dim are fed with an unknown static length."""

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    clip = {k: tf.constant(v, tf.int32) for k, v in features.items()}
    signature = {k: tf.TensorSpec([None] * v.shape.rank, tf.int32) for k, v in clip.items()}
    return tf.data.Dataset.from_generator(lambda: iter([clip]), output_signature=signature)

  return seqio.FunctionDataSource(dataset_fn, splits=["train"])


GOOD_CLIP = dict(mulan=np.zeros(4), semantic=np.zeros(24), acoustic=np.zeros((48, 6)))
BAD_SOURCES = {
  "missing-family": (
    dict(mulan=GOOD_CLIP["mulan"], semantic=GOOD_CLIP["semantic"]),
    ValueError,
    r"coarse stage task needs token families \['acoustic'\]",
  ),
  "code-too-large": (
    GOOD_CLIP | dict(semantic=np.full(24, 32)),
    tf.errors.InvalidArgumentError,
    r"coarse stage task: semantic codes must be in \[0, 32\)",
  ),
  "negative-code": (
    GOOD_CLIP | dict(acoustic=np.full((48, 6), -3)),
    tf.errors.InvalidArgumentError,
    r"coarse stage task: acoustic codes must be in \[0, 16\)",
  ),
  "wrong-mulan-levels": (
    GOOD_CLIP | dict(mulan=np.zeros(5)),
    tf.errors.InvalidArgumentError,
    r"mulan tokens must have 4 levels",
  ),
  "wrong-rank": (
    GOOD_CLIP | dict(acoustic=np.zeros(48)),
    ValueError,
    r"source feature 'acoustic' must be an integer tensor of shape \[None, 6\]",
  ),
}


@pytest.mark.parametrize("features, error, match", BAD_SOURCES.values(), ids=BAD_SOURCES.keys())
def test_bad_sources_fail_clearly(features, error, match):
  layout = LAYOUTS["coarse"]
  task = stage_tasks.make_stage_task(
    "stage_tasks_test_bad", _tensor_source(**features), layout, register=False
  )
  with pytest.raises(error, match=match):
    _examples(task, layout)


def test_argument_validation():
  layout = LAYOUTS["fine"]
  with pytest.raises(ValueError, match=r"short_clip_policy must be one of \('drop', 'pad'\)"):
    stage_tasks.make_stage_task("x", _source(**SOURCE_KWARGS), layout, short_clip_policy="loop")
  task = _task("fine", **SOURCE_KWARGS)
  with pytest.raises(ValueError, match=r"shard_id=2 must be in \[0, num_shards=2\)"):
    stage_tasks.get_stage_dataset(
      task, layout, split="train", batch_size=2, seed=0, shard_id=2, num_shards=2
    )


def test_synthetic_source_is_seeded_structured_and_varies_in_length():
  clips = _clips(**SHORT_KWARGS)
  again = _clips(**SHORT_KWARGS)
  other = _clips(**(SHORT_KWARGS | dict(seed=2)))
  for a, b in zip(clips, again):
    for family in a:
      np.testing.assert_array_equal(a[family], b[family])
  assert any(not np.array_equal(a["semantic"], b["semantic"]) for a, b in zip(clips, other))
  lengths = {clip["semantic"].size for clip in clips}
  assert len(lengths) > 3 and min(lengths) >= 2 and max(lengths) <= 24
  for clip in clips:
    assert clip["acoustic"].shape == (2 * clip["semantic"].size, TOKENS.acoustic_levels)
  # Learnable structure: with 5% noise, a semantic id and its phase mostly fix the level-0 code.
  pairs = itertools.chain.from_iterable(
    zip(np.repeat(c["semantic"], 2), np.arange(c["acoustic"].shape[0]) % 2, c["acoustic"][:, 0])
    for c in _clips(num_clips=40, clip_seconds=CLIP_SECONDS, seed=0)
  )
  by_context = {}
  for semantic, phase, code in pairs:
    by_context.setdefault((semantic, phase), []).append(code)
  majority = sum(max(np.bincount(codes)) for codes in by_context.values())
  assert majority / sum(map(len, by_context.values())) > 0.9


def test_statically_wrong_levels_fail_at_construction():
  clip = GOOD_CLIP | dict(mulan=np.zeros(5))

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensors({k: tf.constant(v, tf.int32) for k, v in clip.items()})

  layout = LAYOUTS["semantic"]
  source = seqio.FunctionDataSource(dataset_fn, splits=["train"])
  task = stage_tasks.make_stage_task("stage_tasks_test_static", source, layout, register=False)
  with pytest.raises(
    ValueError, match=r"source feature 'mulan' must be an integer tensor of shape \[4\]"
  ):
    _examples(task, layout)


def test_paper_layout_batches():
  paper = stages.TokenSpec()
  layout = stages.stage_layouts(paper)["coarse"]
  source = synthetic_tokens.synthetic_token_source(paper, num_clips=2, clip_seconds=12.0, seed=0)
  task = stage_tasks.make_stage_task("stage_tasks_test_paper_coarse", source, layout)
  (batch,) = _batches(task, layout, 1, batch_size=2)
  assert batch["decoder_target_tokens"].shape == (2, 262 + 2000)
  np.testing.assert_array_equal(batch["decoder_loss_weights"].sum(axis=1), [2000, 2000])
  inputs, targets = np.split(batch["decoder_target_tokens"], [262], axis=1)
  assert layout.decode_inputs(inputs)["semantic"].shape == (2, 250)
  assert layout.decode_targets(targets)["acoustic"].shape == (2, 500, 4)


@pytest.mark.parametrize("stage", ["semantic", "coarse"])
def test_conditioning_dropout_replaces_the_mulan_tokens_by_pad(stage):
  layout, levels = LAYOUTS[stage], TOKENS.mulan_levels
  plain = _examples(_task(stage, **SOURCE_KWARGS), layout)

  def dropped(rate):
    task = stage_tasks.make_stage_task(
      f"stage_tasks_test_dropout_{stage}_{rate}",
      _source(**SOURCE_KWARGS),
      layout,
      conditioning_dropout=rate,
    )
    return _examples(task, layout)

  everything, some = dropped(1.0), dropped(0.5)
  for a, b in zip(plain, everything):
    assert np.all(b["inputs"][:levels] == stages.PAD_ID)
    np.testing.assert_array_equal(a["inputs"][levels:], b["inputs"][levels:])
    np.testing.assert_array_equal(a["targets"], b["targets"])
  kept = [np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(plain, some)]
  assert 0 < sum(kept) < len(kept)
  assert [np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(some, dropped(0.5))] == [
    True
  ] * len(some)


def test_conditioning_dropout_needs_conditioning():
  with pytest.raises(ValueError, match="no MuLan conditioning"):
    stage_tasks.make_stage_task(
      "x", _source(**SOURCE_KWARGS), LAYOUTS["fine"], conditioning_dropout=0.1
    )
