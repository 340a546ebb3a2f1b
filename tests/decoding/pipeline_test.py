"""The hierarchical pipeline with tiny tokenizers (`token_world`) and tiny untrained stage LMs.

The path is what is tested: each window's cached sampling equals uncached sampling; durations are
exact; long generation carries its prefix; story segments switch conditioning at their frames;
continuation keeps the prompt's tokens; a request's music does not depend on its batch-mates.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from musiclm_jax.data import token_bundle
from musiclm_jax.decoding import sampling
from musiclm_jax.decoding.pipeline import MusicLMPipeline, PipelineConfig, Request, StorySegment
from musiclm_jax.layers.config import TransformerConfig
from musiclm_jax.models.stage_lm import SamplingConfig, StageLM
from musiclm_jax.stages import MULAN, PAD_ID, StageLayout
from tests.size_configs import size_config

pytestmark = [
  pytest.mark.usefixtures("persistent_compilation_cache"),
  pytest.mark.xdist_group("token_world"),
]

TINY = TransformerConfig(
  num_layers=1,
  num_heads=2,
  head_dim=8,
  d_model=16,
  d_ff=32,
  dropout_rate=0.0,
  relative_attention_num_buckets=8,
  relative_attention_max_distance=32,
)
CROPS = {"semantic": 4.0, "coarse": 2.0, "fine": 1.0}
RATE = 24_000


@pytest.fixture(scope="module")
def bundle(token_world):
  return token_bundle.load_bundle(token_world.bundle)


def _stages(bundle, crops=CROPS) -> dict:
  tokens = bundle.token_spec(4)
  stages = {}
  for index, (name, crop) in enumerate(crops.items()):
    model = StageLM(TINY, StageLayout(name, tokens, crop))
    params = model.get_initial_variables(jax.random.key(index))["params"]
    stages[name] = (model, nn.unbox(params))
  return stages


@pytest.fixture(scope="module")
def pipeline(bundle):
  return MusicLMPipeline(bundle, _stages(bundle), PipelineConfig(semantic_prefix_seconds=2.0))


class _Spy:
  """Wraps a stage's window program and records every call's (inputs, known ids, output ids)."""

  def __init__(self, pipeline, name):
    self.program, self.calls = pipeline._programs[name], []
    pipeline._programs[name] = self

  def __call__(self, params, inputs, known, keys, num_new, **kwargs):
    output = self.program(params, inputs, known, keys, num_new=num_new, **kwargs)
    self.calls.append((np.asarray(inputs), np.asarray(known), np.asarray(output.tokens)))
    return output


@pytest.fixture
def spies(pipeline):
  programs = dict(pipeline._programs)
  yield {name: _Spy(pipeline, name) for name in programs}
  pipeline._programs.update(programs)


def test_continue_batch_with_the_cache_equals_uncached_sampling(bundle):
  model, params = _stages(bundle)["coarse"]
  layout = model.layout
  rng = np.random.default_rng(0)
  ranges = layout.inputs_id_ranges()
  inputs = jnp.asarray(rng.integers(ranges[:, 0], ranges[:, 1], (2, len(ranges))), jnp.int32)
  target_ranges = layout.target_id_ranges()
  known = jnp.asarray(
    rng.integers(target_ranges[:40, 0], target_ranges[:40, 1], (2, 40)), jnp.int32
  )
  keys = jax.vmap(jax.random.key)(jnp.arange(2))
  config = SamplingConfig(temperature=0.9)
  output = jax.jit(
    functools.partial(model.continue_batch, sampling_config=config), static_argnames="num_new"
  )(params, inputs, known, keys, num_new=24)
  tokens = jnp.zeros((2, layout.targets_length), jnp.int32).at[:, :40].set(known)
  logits_fn = jax.jit(model.full_sequence_logits)
  for i in range(24):  # one full forward pass per token: the uncached reference
    logits = logits_fn(params, inputs, tokens)[:, 40 + i]
    processed = sampling.process_logits(
      logits, temperature=0.9, allowed_range=target_ranges[40 + i]
    )
    step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, i)
    token = jax.vmap(jax.random.categorical)(step_keys, processed)
    tokens = tokens.at[:, 40 + i].set(token)
  np.testing.assert_array_equal(np.asarray(output.tokens), np.asarray(tokens[:, 40:64]))


@pytest.mark.parametrize("seconds", [10.0, 1.3])
def test_durations_are_exact(pipeline, seconds):
  (generation,) = pipeline.generate([Request.from_text("a calm violin melody", seconds, seed=1)])
  assert generation.audio.shape == (round(seconds * RATE),)
  assert generation.semantic.shape == (int(np.ceil(seconds * 25)),)
  assert generation.acoustic.shape == (2 * int(np.ceil(seconds * 25)), 12)
  assert np.all(np.isfinite(generation.audio)) and generation.audio.std() > 0


def test_long_generation_carries_each_windows_prefix(pipeline, spies):
  (generation,) = pipeline.generate([Request.from_text("solo cello", 9.0, seed=2)])
  assert generation.audio.shape == (9 * RATE,)
  assert generation.windows["semantic"] == 4  # 4 s, then 2 s strides: 4 + 2 + 2 + 1
  offsets = pipeline.models["semantic"].layout.target_id_ranges()[:, 0]
  start = 0
  for window_index, (_, known, new) in enumerate(spies["semantic"].calls):
    if window_index:  # the 2 s prefix (50 frames) re-read is what the stream holds there
      np.testing.assert_array_equal(
        known[0] - offsets[:50], generation.semantic[start - 50 : start]
      )
    np.testing.assert_array_equal(
      new[0] - offsets[known.shape[1] : known.shape[1] + new.shape[1]],
      generation.semantic[start : start + new.shape[1]],
    )
    start += new.shape[1]
  assert start == 225


def test_paper_semantic_windows_make_45_seconds_in_30_and_15(bundle):
  crops = {"semantic": 30.0, "coarse": 2.0, "fine": 1.0}
  pipeline = MusicLMPipeline(bundle, _stages(bundle, crops), PipelineConfig())
  (generation,) = pipeline.generate([Request.from_text("an epic orchestra", 45.0, seed=3)])
  assert generation.audio.shape == (45 * RATE,)
  assert generation.windows["semantic"] == 2
  assert np.all(np.isfinite(generation.audio))


def test_story_segments_switch_conditioning_at_their_first_frame(pipeline, spies):
  story = Request((StorySegment("a calm violin", 1.5), StorySegment("loud drums", 2.5)), seed=4)
  (generation,) = pipeline.generate([story])
  assert generation.audio.shape == (4 * RATE,) and generation.mulan.shape == (2, 12)
  boundary = 38  # round(1.5 s × 25 Hz)
  layout = pipeline.models["semantic"].layout
  frames = 0
  for inputs, _, new in spies["semantic"].calls:
    conditioning = layout.decode_inputs(inputs)[MULAN][0]
    segment = 0 if frames < boundary else 1
    np.testing.assert_array_equal(conditioning, generation.mulan[segment])
    frames += new.shape[1]
    assert frames <= boundary or frames - new.shape[1] >= boundary  # never across the boundary
  coarse = pipeline.models["coarse"].layout
  assert any(
    np.array_equal(coarse.decode_inputs(inputs)[MULAN][0], generation.mulan[1])
    for inputs, _, _ in spies["coarse"].calls
  )


def test_continuation_keeps_the_prompts_tokens(pipeline, bundle):
  prompt = (0.2 * np.sin(np.arange(2 * RATE) * 2 * np.pi * 440 / RATE)).astype(np.float32)
  (generation,) = pipeline.generate([Request.from_text("piano", 5.0, seed=5, prompt_audio=prompt)])
  tokens = bundle.tokenize(prompt[None])
  np.testing.assert_array_equal(generation.semantic[:50], tokens["semantic"][0])
  np.testing.assert_array_equal(generation.acoustic[:100], tokens["acoustic"][0])
  assert generation.audio.shape == (5 * RATE,)


def test_a_requests_music_does_not_depend_on_its_batch_mates(pipeline):
  request = Request.from_text("a calm violin melody", 2.0, seed=6)
  alone = pipeline.generate([request])[0]
  batch = pipeline.generate([Request.from_text("jazz trio", 2.0, seed=9), request])
  np.testing.assert_array_equal(batch[1].acoustic, alone.acoustic)
  np.testing.assert_allclose(batch[1].audio, alone.audio, atol=1e-5)
  assert not np.array_equal(batch[0].acoustic, alone.acoustic)


def test_classifier_free_guidance_uses_pad_conditioning(bundle):
  stages = _stages(bundle)
  request = Request.from_text("a calm violin melody", 2.0, seed=7)
  plain = MusicLMPipeline(bundle, stages).generate([request])[0]
  guided_pipeline = MusicLMPipeline(bundle, stages, PipelineConfig(guidance_scale=3.0))
  spy = _Spy(guided_pipeline, "semantic")
  guided = guided_pipeline.generate([request])[0]
  assert not np.array_equal(plain.semantic, guided.semantic)
  assert guided.audio.shape == plain.audio.shape
  model = stages["semantic"][0]
  inputs = spy.calls[0][0]
  unconditional = np.array(inputs)
  unconditional[:, :12] = PAD_ID
  logits = model.full_sequence_logits(
    stages["semantic"][1], jnp.concatenate([inputs, unconditional]), jnp.zeros((2, 100), jnp.int32)
  )
  assert not np.allclose(logits[0], logits[1])  # the unconditional twin really differs


def test_stage_lms_of_other_tokens_are_refused(bundle):
  from musiclm_jax.stages import TokenSpec

  stages = _stages(bundle)
  model, params = stages["fine"]
  stages["fine"] = (StageLM(TINY, StageLayout("fine", TokenSpec.tiny(), 1.0)), params)
  with pytest.raises(ValueError, match="fine stage LM was trained on tokens"):
    MusicLMPipeline(bundle, stages)


def test_a_batch_split_over_eight_devices_equals_one_device(bundle, num_devices):
  assert num_devices == 8
  stages = _stages(bundle)
  requests = [Request.from_text(f"melody {i}", 1.0, seed=i) for i in range(8)]
  sharded = MusicLMPipeline(bundle, stages).generate(requests)
  single = MusicLMPipeline(bundle, stages, devices=jax.devices()[:1]).generate(requests)
  for a, b in zip(sharded, single):
    np.testing.assert_array_equal(a.acoustic, b.acoustic)


def test_new_prompts_of_a_seen_shape_compile_nothing(bundle):
  pipeline = MusicLMPipeline(bundle, _stages(bundle))
  pipeline.generate([Request.from_text("a calm violin melody", 1.5, seed=1)])
  compiled = {name: program._cache_size() for name, program in pipeline._programs.items()}
  pipeline.generate([Request.from_text("heavy metal guitars", 1.5, seed=2)])
  assert {name: p._cache_size() for name, p in pipeline._programs.items()} == compiled


def test_a_three_to_one_token_spec_aligns_every_stream(bundle):
  """A 75 Hz codec under 25 Hz semantics: 3 acoustic frames per semantic frame, everywhere."""
  import dataclasses

  from musiclm_jax.tokenizers.soundstream.codec import SoundStreamCodec

  tiny = size_config("soundstream", "tiny")
  config = dataclasses.replace(tiny, strides=(2, 4, 5, 8))  # hop 320: 75 Hz
  bundle3 = token_bundle.TokenizerBundle(
    bundle.config, SoundStreamCodec.random_init(config), bundle.semantic, bundle.mulan
  )
  tokens = bundle3.token_spec(2)
  assert tokens.acoustic_frames_per_semantic == 3
  stages = {}
  for index, (name, crop) in enumerate(CROPS.items()):
    model = StageLM(TINY, StageLayout(name, tokens, crop))
    stages[name] = (model, nn.unbox(model.get_initial_variables(jax.random.key(index))["params"]))
  pipeline = MusicLMPipeline(bundle3, stages, PipelineConfig(semantic_prefix_seconds=2.0))
  spies = {name: _Spy(pipeline, name) for name in list(pipeline._programs)}
  prompt = (0.2 * np.sin(np.arange(RATE) * 2 * np.pi * 440 / RATE)).astype(np.float32)
  request = Request.from_text("piano", 3.0, seed=5, prompt_audio=prompt)
  (generation,) = pipeline.generate([request])
  frames = 75  # 3 s × 25 Hz
  assert generation.semantic.shape == (frames,)
  assert generation.acoustic.shape == (3 * frames, 6)
  assert generation.audio.shape == (3 * RATE,)
  prompt_tokens = bundle3.tokenize(prompt[None])
  np.testing.assert_array_equal(generation.acoustic[:75], prompt_tokens["acoustic"][0])
  coarse, fine = (pipeline.models[name].layout for name in ("coarse", "fine"))
  for stage, layout, stream in (
    ("coarse", coarse, lambda start: generation.semantic[start : start + coarse.semantic_frames]),
    (
      "fine",
      fine,
      lambda start: generation.acoustic[3 * start : 3 * start + fine.acoustic_frames, :2],
    ),
  ):
    windows = pipeline._stage_windows(stage, pipeline.plan(request))  # all inside the 75 frames
    assert len(windows) == len(spies[stage].calls) > 1
    for window, (inputs, _, _) in zip(windows, spies[stage].calls):
      family = "semantic" if stage == "coarse" else "acoustic"
      np.testing.assert_array_equal(layout.decode_inputs(inputs)[family][0], stream(window.start))
