"""Tokens tasks and the stage tasks built on them, with tiny trained tokenizers (`token_world`).

The path is what is tested: tokens of a clip are each tokenizer's own and independent of the
batch; stage examples have DESIGN §3's lengths and id ranges at tiny and paper crops; semantic
and acoustic crops are aligned; cached and uncached datasets are identical for a seed; clips
shorter than the crop follow the short-clip policy.
"""

from __future__ import annotations

import numpy as np
import pytest
import seqio

from musiclm_jax.data import stage_tasks, token_bundle, token_cache, token_tasks
from musiclm_jax.data.token_tasks import _batched_clips
from musiclm_jax.stages import ACOUSTIC, PAD_ID, SEMANTIC, StageLayout
from tasks import musiclm

# One xdist worker builds the session's `token_world` (a minute of tokenizer training) for all three.
pytestmark = [
  pytest.mark.usefixtures("persistent_compilation_cache"),
  pytest.mark.xdist_group("token_world"),
]

RATE = 24_000
FRAME = 960


def _clip(name: str, seconds: float) -> dict:
  return {"id": name, "audio": np.zeros(round(seconds * RATE), np.float32)}


def test_batched_clips_groups_equal_trimmed_lengths_in_a_fixed_order():
  clips = [_clip("a", 2.5), _clip("b", 1.2), _clip("c", 2.9), _clip("d", 0.5), _clip("e", 0.01)]
  batches = list(_batched_clips(iter(clips), 2, RATE, FRAME, max_pending=8))
  assert [[c["id"] for c in b] for b in batches] == [["a", "c"], ["b"], ["d"]]
  assert [len(b[0]["audio"]) for b in batches] == [2 * RATE, RATE, 12 * FRAME]  # 'e' < 1 frame


def test_batched_clips_bounds_the_clips_waiting():
  clips = [_clip(str(i), 1 + i) for i in range(5)] + [_clip("x", 1.0)]
  batches = list(_batched_clips(iter(clips), 4, RATE, FRAME, max_pending=3))
  assert [[c["id"] for c in b] for b in batches] == [["3"], ["4"], ["0", "x"], ["1"], ["2"]]


@pytest.fixture(scope="module")
def bundle(token_world):
  return token_bundle.load_bundle(token_world.bundle)


def test_bundle_tokens_are_each_tokenizers_own_and_independent_of_the_batch(bundle):
  rng = np.random.default_rng(0)
  audio = (0.1 * rng.standard_normal((3, 2 * RATE))).astype(np.float32)
  tokens = bundle.tokenize(audio)
  assert tokens[ACOUSTIC].shape == (3, 100, 12) and tokens[SEMANTIC].shape == (3, 50)
  assert tokens["mulan"].shape == (3, 12)
  np.testing.assert_array_equal(tokens[ACOUSTIC], np.asarray(bundle.codec.encode(audio)))
  np.testing.assert_array_equal(tokens[SEMANTIC], bundle.semantic.semantic_tokens(audio))
  np.testing.assert_array_equal(tokens["mulan"], bundle.mulan.audio_tokens(audio))
  alone = bundle.tokenize(audio[1:2])
  for family, codes in alone.items():
    np.testing.assert_array_equal(codes[0], tokens[family][1])


def test_token_spec_from_metadata_is_the_loaded_tokenizers_spec(token_world, bundle):
  assert token_bundle.bundle_token_spec(token_world.bundle, 4) == bundle.token_spec(4)


def test_tokenize_rejects_a_length_that_is_not_whole_frames(bundle):
  with pytest.raises(ValueError, match="multiple of 960"):
    bundle.tokenize(np.zeros((1, 1000), np.float32))


@pytest.fixture(scope="module")
def cache_dir(token_world, tmp_path_factory):
  root = str(tmp_path_factory.mktemp("token_cache"))
  spec = musiclm.tokens_task_spec(
    "rendered_music", token_world.bundle, data_dir=token_world.data_dir
  )
  token_cache.cache_tokens_task(spec, root)
  return root


def _layout(token_world, stage: str, crop_seconds: float) -> StageLayout:
  return StageLayout(stage, token_bundle.bundle_token_spec(token_world.bundle, 4), crop_seconds)


def _examples(token_world, cache_dir, layout, *, use_cached=True, policy="drop", **kwargs):
  task = musiclm.stage_task(
    layout,
    "rendered_music",
    token_world.bundle,
    data_dir=token_world.data_dir,
    cache_dir=cache_dir,
    use_cached=use_cached,
    short_clip_policy=policy,
  )
  settings = dict(split="train", batch_size=1, seed=7, shuffle=False, num_epochs=1)
  dataset = stage_tasks.get_stage_dataset(task, layout, **{**settings, **kwargs})
  return list(dataset.as_numpy_iterator())


DESIGN_LENGTHS = [  # (stage, crop seconds, inputs length, targets length)
  ("semantic", 4.0, 12, 100),
  ("coarse", 2.0, 12 + 50, 100 * 4),
  ("fine", 1.0, 50 * 4, 50 * 8),
  ("semantic", 30.0, 12, 750),  # DESIGN §3's paper lengths: 12 + 750
  ("coarse", 10.0, 12 + 250, 2000),  # 12 + 250 + 2000
  ("fine", 3.0, 600, 1200),  # 600 + 1200
]


@pytest.mark.parametrize("stage,crop,inputs_length,targets_length", DESIGN_LENGTHS)
def test_stage_examples_have_the_design_lengths_and_id_ranges(
  token_world, cache_dir, stage, crop, inputs_length, targets_length
):
  layout = _layout(token_world, stage, crop)
  assert (layout.inputs_length, layout.targets_length) == (inputs_length, targets_length)
  examples = _examples(token_world, cache_dir, layout, policy="pad")
  assert len(examples) == 8  # every train clip: the 4 s clips are padded under paper crops
  ranges = np.concatenate([layout.inputs_id_ranges(), layout.target_id_ranges()])
  for example in examples:
    ids = example["decoder_target_tokens"][0]
    assert ids.shape == (inputs_length + targets_length,)
    real = ids != PAD_ID
    assert np.all((ids >= ranges[:, 0]) & (ids < ranges[:, 1]) | ~real)
    weights = example["decoder_loss_weights"][0]
    assert not weights[:inputs_length].any()
    np.testing.assert_array_equal(weights[inputs_length:], real[inputs_length:])


def _clip_streams(token_world, cache_dir) -> list[dict]:
  spec = musiclm.tokens_task_spec(
    "rendered_music", token_world.bundle, data_dir=token_world.data_dir
  )
  source = token_tasks.TokenStreamSource(spec, use_cached=True, cache_dir=cache_dir)
  return list(source.get_dataset("train", shuffle=False).as_numpy_iterator())


def _find_window(stream: np.ndarray, window: np.ndarray) -> list[int]:
  """Offsets where `window` occurs in `stream` along axis 0."""
  n = len(window)
  return [s for s in range(len(stream) - n + 1) if np.array_equal(stream[s : s + n], window)]


def test_coarse_crops_take_the_acoustic_frames_of_their_semantic_frames(token_world, cache_dir):
  layout = _layout(token_world, "coarse", 2.0)
  clips = _clip_streams(token_world, cache_dir)
  examples = _examples(token_world, cache_dir, layout, shuffle=True, num_epochs=2)
  starts = set()
  for example in examples:
    ids = example["decoder_target_tokens"][0]
    semantic = layout.decode_inputs(ids[: layout.inputs_length])[SEMANTIC]
    acoustic = layout.decode_targets(ids[layout.inputs_length :])[ACOUSTIC]
    matches = [
      (clip, s)
      for clip in clips
      for s in _find_window(clip[SEMANTIC], semantic)
      if np.array_equal(clip[ACOUSTIC][2 * s : 2 * s + 100, :4], acoustic)
    ]
    assert matches, "no clip holds these semantic frames with these acoustic frames after them"
    starts.add(matches[0][1])
  assert len(starts) > 1  # crops really are random


def test_fine_crops_split_one_window_of_acoustic_frames(token_world, cache_dir):
  layout = _layout(token_world, "fine", 1.0)
  clips = _clip_streams(token_world, cache_dir)
  for example in _examples(token_world, cache_dir, layout, shuffle=True):
    ids = example["decoder_target_tokens"][0]
    coarse = layout.decode_inputs(ids[: layout.inputs_length])[ACOUSTIC]
    fine = layout.decode_targets(ids[layout.inputs_length :])[ACOUSTIC]
    full = np.concatenate([coarse, fine], axis=-1)
    offsets = [r for clip in clips for r in _find_window(clip[ACOUSTIC], full)]
    assert offsets and all(r % 2 == 0 for r in offsets)  # starts on a semantic frame


@pytest.mark.parametrize("shuffle", [False, True])
def test_cached_and_uncached_datasets_give_identical_examples(token_world, cache_dir, shuffle):
  layout = _layout(token_world, "coarse", 2.0)
  kwargs = dict(shuffle=shuffle, batch_size=2, seed=11)
  cached = _examples(token_world, cache_dir, layout, use_cached=True, **kwargs)
  uncached = _examples(token_world, cache_dir, layout, use_cached=False, **kwargs)
  assert len(cached) == len(uncached) == 4
  for a, b in zip(cached, uncached):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_clips_shorter_than_the_crop_are_dropped_or_padded(token_world, cache_dir):
  layout = _layout(token_world, "semantic", 30.0)  # 750 frames; the clips have 100
  assert _examples(token_world, cache_dir, layout, policy="drop") == []
  padded = _examples(token_world, cache_dir, layout, policy="pad")
  targets = padded[0]["decoder_target_tokens"][0, layout.inputs_length :]
  assert np.all(targets[:100] != PAD_ID) and np.all(targets[100:] == PAD_ID)
  assert padded[0]["decoder_loss_weights"][0, layout.inputs_length :].sum() == 100


def test_the_tokens_task_can_only_be_read_from_its_cache(token_world):
  spec = musiclm.tokens_task_spec(
    "rendered_music", token_world.bundle, data_dir=token_world.data_dir
  )
  with pytest.raises(ValueError, match="requires caching"):
    spec.task().get_dataset(None, split="train", use_cached=False)


def test_a_mixture_samples_stage_examples_of_its_datasets(token_world, cache_dir):
  layout = _layout(token_world, "semantic", 4.0)
  mixture = musiclm.stage_mixture(
    layout,
    {"rendered_music": 1.0},
    token_world.bundle,
    data_dirs={"rendered_music": token_world.data_dir},
    cache_dir=cache_dir,
  )
  assert mixture.name == "musiclm_semantic_mix"
  batch = next(
    stage_tasks.get_stage_dataset(
      mixture, layout, split="train", batch_size=2, seed=0
    ).as_numpy_iterator()
  )
  assert batch["decoder_target_tokens"].shape == (2, 112)
  assert isinstance(seqio.get_mixture_or_task("musiclm_semantic_mix"), seqio.Mixture)


def test_every_dataset_gets_a_tokens_task(token_world):
  specs = musiclm.register_tokens_tasks(token_world.bundle, data_dir=token_world.data_dir)
  assert sorted(specs) == [
    f"musiclm_tokens_{d}" for d in ("audio_folder", "musiccaps", "rendered_music")
  ]
  assert specs["musiclm_tokens_musiccaps"].tfds_name == "musiccaps/24khz:1.0.0"
  for name in specs:
    assert seqio.TaskRegistry.get(name).requires_caching
  with pytest.raises(ValueError, match="Unknown dataset"):
    musiclm.tokens_task_spec("freesound", token_world.bundle)
