"""Text to music: the hierarchy of DESIGN §1–§3 as one batched pipeline.

    text ─► MuLan text embedding ─► RVQ tokens [12] ─┐
                                                     ├► semantic LM (T 1.0) ─► semantic [F]
                                                     ├► coarse LM (T 0.95) ─► acoustic levels 1–4
                       fine LM (T 0.4, 3 s windows) ◄┘                     ─► levels 5–12
                                                         SoundStream decoder ─► 24 kHz audio

Every stage generates window by window (`windows.plan_windows`): a stream longer than the stage's
crop continues with a prefix of already generated frames (paper: semantic windows of 30 s with a
15 s prefix), and story mode switches the MuLan tokens at each segment's first frame. A
continuation prompt (audio) is tokenized and its tokens are the first frames of every stream.

Requests with the same plan (duration, segment boundaries, prompt length) run as one batch,
padded to a batch bucket; each stage's window program is jitted once per (bucket, known frames,
new frames), so thousands of prompts of a few durations compile a handful of programs. Each
request has its own PRNG key, so its music does not depend on its batch-mates.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from musiclm_jax.data.token_bundle import TokenizerBundle
from musiclm_jax.decoding.windows import Window, plan_windows
from musiclm_jax.models.stage_lm import SamplingConfig, StageLM, load_stage_lm
from musiclm_jax.stages import (
  ACOUSTIC,
  COARSE_STAGE,
  FINE_STAGE,
  MULAN,
  PAD_ID,
  SEMANTIC,
  SEMANTIC_STAGE,
  STAGES,
)

PyTree = Any
Progress = Callable[[str, int, int], None]  # (stage, windows done, windows in all)


@dataclasses.dataclass(frozen=True)
class StorySegment:
  """`seconds` of music described by `text`."""

  text: str
  seconds: float


@dataclasses.dataclass(frozen=True, eq=False)
class Request:
  """One piece of music to generate.

  Attributes:
    segments: the story: one segment for a plain text prompt; the conditioning switches at each
      segment's first frame.
    seed: the request's PRNG seed (its music depends on it alone).
    prompt_audio: float [samples] at 24 kHz to continue (AudioLM-style), or None. It is the
      first part of the output: the total length is still the sum of the segments' seconds.
  """

  segments: tuple[StorySegment, ...]
  seed: int = 0
  prompt_audio: np.ndarray | None = None

  @classmethod
  def from_text(cls, text: str, seconds: float, seed: int = 0, prompt_audio=None) -> Request:
    return cls((StorySegment(text, seconds),), seed, prompt_audio)

  @property
  def seconds(self) -> float:
    return sum(s.seconds for s in self.segments)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Sampling and windowing of the three stages. Defaults are the paper's.

  Attributes:
    semantic, coarse, fine: each stage's sampling (temperature, top-k, top-p).
    semantic_prefix_seconds: known seconds a continuation window of the semantic stage re-reads
      (paper 15 s of a 30 s window: a 15 s stride; None: half its crop).
    coarse_prefix_seconds: the same for the coarse stage (None: half its crop).
    fine_prefix_seconds: the same for the fine stage (None: a third of its crop).
    guidance_scale: classifier-free guidance on the MuLan conditioning of the semantic and coarse
      stages (1.0: off). Needs stages trained with conditioning dropout.
    batch_buckets: batch sizes programs are compiled for; a batch is padded up to one.
  """

  semantic: SamplingConfig = SamplingConfig(temperature=1.0)
  coarse: SamplingConfig = SamplingConfig(temperature=0.95)
  fine: SamplingConfig = SamplingConfig(temperature=0.4)
  semantic_prefix_seconds: float | None = 15.0
  coarse_prefix_seconds: float | None = None
  fine_prefix_seconds: float | None = None
  guidance_scale: float = 1.0
  batch_buckets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)


@dataclasses.dataclass
class Generation:
  """What one request produced.

  Attributes:
    audio: float32 [round(seconds · 24000)].
    semantic: int32 [F] semantic codes (F = ceil(seconds · semantic_rate_hz)).
    acoustic: int32 [R·F, levels] SoundStream codes, R = the token spec's
      `acoustic_frames_per_semantic` (2 at the paper's 50 Hz / 25 Hz).
    mulan: int32 [segments, mulan_levels] the conditioning tokens of each segment.
    windows: windows per stage.
  """

  audio: np.ndarray
  semantic: np.ndarray
  acoustic: np.ndarray
  mulan: np.ndarray
  windows: dict[str, int]


@dataclasses.dataclass(frozen=True)
class _Plan:
  """The frame arithmetic shared by a batch of requests (all numbers in semantic frames)."""

  frames: int  # F: frames of the output
  internal: int  # frames generated (>= every stage's window, so windows have full inputs)
  boundaries: tuple[int, ...]
  prompt: int
  samples: int  # output samples


class MusicLMPipeline:
  """The three stage LMs and the tokenizers, ready to generate.

  Args:
    tokenizers: MuLan (text → conditioning tokens), SoundStream (tokens → audio) and, for
      continuation prompts, the semantic tokenizer.
    stages: stage name → (StageLM, params), for 'semantic', 'coarse' and 'fine'.
    config: sampling and windowing.
    devices: devices a batch is split over (default: this host's). Each host of a multi-host job
      runs its own pipeline on its own prompts (`batch_inference` shards the prompts).
  """

  def __init__(
    self,
    tokenizers: TokenizerBundle,
    stages: Mapping[str, tuple[StageLM, PyTree]],
    config: PipelineConfig = PipelineConfig(),
    devices: Sequence[jax.Device] | None = None,
  ):
    missing = [s for s in STAGES if s not in stages]
    if missing:
      raise ValueError(f"the pipeline needs the {missing} stage LM(s)")
    self.tokenizers, self.config = tokenizers, config
    self.models = {name: stages[name][0] for name in STAGES}
    self._mesh = Mesh(np.asarray(devices or jax.local_devices()), ("data",))
    replicated = NamedSharding(self._mesh, PartitionSpec())
    self.params = {name: jax.device_put(stages[name][1], replicated) for name in STAGES}
    # The first device's replica, for batches that do not split evenly (no second copy).
    self._first_params = jax.tree.map(lambda a: a.addressable_shards[0].data, self.params)
    self.tokens = self.models[COARSE_STAGE].layout.tokens
    self._check_tokens()
    self._programs = {name: self._program(name) for name in STAGES}

  def _check_tokens(self) -> None:
    produced = self.tokenizers.token_spec(self.tokens.num_coarse_levels)
    for name, model in self.models.items():
      if model.layout.tokens != produced:
        raise ValueError(
          f"The {name} stage LM was trained on tokens {model.layout.tokens}, but the tokenizers "
          f"produce {produced}."
        )

  def _program(self, name: str) -> Callable[..., Any]:
    sampling = {
      SEMANTIC_STAGE: self.config.semantic,
      COARSE_STAGE: self.config.coarse,
      FINE_STAGE: self.config.fine,
    }[name]
    guided = name != FINE_STAGE and self.config.guidance_scale != 1.0
    return jax.jit(
      functools.partial(
        self.models[name].continue_batch,
        sampling_config=sampling,
        guidance_scale=self.config.guidance_scale if guided else 1.0,
      ),
      static_argnames="num_new",
    )

  # -- planning ---------------------------------------------------------------------------------

  @property
  def semantic_rate(self) -> int:
    return self.tokens.semantic_rate_hz

  def _window_frames(self, name: str) -> tuple[int, int]:
    """(window, prefix) of a stage, in semantic frames."""
    layout = self.models[name].layout
    window = layout.semantic_frames
    seconds = {
      SEMANTIC_STAGE: self.config.semantic_prefix_seconds,
      COARSE_STAGE: self.config.coarse_prefix_seconds,
      FINE_STAGE: self.config.fine_prefix_seconds,
    }[name]
    default = {SEMANTIC_STAGE: window // 2, COARSE_STAGE: window // 2, FINE_STAGE: window // 3}
    prefix = default[name] if seconds is None else round(seconds * self.semantic_rate)
    return window, min(prefix, window - 1)

  def plan(self, request: Request) -> _Plan:
    """The request's frame arithmetic; requests with equal plans batch together."""
    if not request.segments or any(s.seconds <= 0 for s in request.segments):
      raise ValueError(f"every segment needs seconds > 0, got {request.segments}")
    rate, samples_per_frame = self.semantic_rate, self.tokenizers.samples_per_semantic_frame
    frames = int(np.ceil(round(request.seconds * rate, 6)))
    cumulative = np.cumsum([s.seconds for s in request.segments])[:-1]
    boundaries = tuple(sorted({int(round(c * rate)) for c in cumulative} - {0, frames}))
    prompt = 0
    if request.prompt_audio is not None:
      prompt = len(request.prompt_audio) // samples_per_frame
      if not 0 < prompt < frames:
        raise ValueError(
          f"a continuation prompt of {len(request.prompt_audio)} samples must hold at least one "
          f"semantic frame and be shorter than the {request.seconds:g} s requested"
        )
    internal = max([frames] + [self._window_frames(n)[0] for n in (COARSE_STAGE, FINE_STAGE)])
    samples = int(round(request.seconds * self.tokenizers.sample_rate))
    return _Plan(frames, internal, boundaries, prompt, samples)

  # -- generation -------------------------------------------------------------------------------

  def generate(
    self, requests: Sequence[Request], progress: Progress | None = None
  ) -> list[Generation]:
    """Generates every request; the results are in request order."""
    results: list[Generation | None] = [None] * len(requests)
    groups: dict[_Plan, list[int]] = {}
    for index, request in enumerate(requests):
      groups.setdefault(self.plan(request), []).append(index)
    largest = max(self.config.batch_buckets)
    for plan, indices in groups.items():
      for chunk_start in range(0, len(indices), largest):
        chunk = indices[chunk_start : chunk_start + largest]
        batch = self._generate_batch([requests[i] for i in chunk], plan, progress)
        for i, generation in zip(chunk, batch):
          results[i] = generation
    return results

  def _bucket(self, size: int) -> int:
    return min(b for b in self.config.batch_buckets if b >= size)

  def _generate_batch(
    self, requests: list[Request], plan: _Plan, progress: Progress | None
  ) -> list[Generation]:
    rows = len(requests)
    padded = requests + [requests[-1]] * (self._bucket(rows) - rows)
    seeds = np.asarray([r.seed for r in padded], np.uint32)
    mulan = self._mulan_tokens(padded)  # [B, segments, M]
    semantic, acoustic = self._prompt_tokens(padded, plan)
    counts = {}
    for stage_index, name in enumerate(STAGES):
      windows = self._stage_windows(name, plan)
      keys = _stage_keys(seeds, stage_index)
      for i, window in enumerate(windows):
        self._run_window(
          name, window, jax.vmap(jax.random.fold_in, (0, None))(keys, i), mulan, semantic, acoustic
        )
        if progress:
          progress(name, i + 1, len(windows))
      counts[name] = len(windows)
    acoustic_frames = self.tokens.acoustic_frames_per_semantic * plan.frames
    audio = np.asarray(self.tokenizers.codec.decode(acoustic[:, :acoustic_frames]))
    return [
      Generation(
        audio=audio[row, : plan.samples].astype(np.float32),
        semantic=semantic[row, : plan.frames].copy(),
        acoustic=acoustic[row, :acoustic_frames].copy(),
        mulan=mulan[row],
        windows=dict(counts),
      )
      for row in range(rows)
    ]

  def _mulan_tokens(self, requests: list[Request]) -> np.ndarray:
    """[B, segments, M]: each segment's text → MuLan RVQ tokens."""
    texts = [s.text for r in requests for s in r.segments]
    tokens = self.tokenizers.mulan.text_tokens(texts)
    return tokens.reshape(len(requests), len(requests[0].segments), -1).astype(np.int32)

  def _prompt_tokens(self, requests: list[Request], plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """Empty streams of the plan's length, holding the continuation prompts' tokens."""
    batch, levels = len(requests), self.tokens.acoustic_levels
    ratio = self.tokens.acoustic_frames_per_semantic
    semantic = np.zeros((batch, plan.internal), np.int32)
    acoustic = np.zeros((batch, ratio * plan.internal, levels), np.int32)
    if plan.prompt:
      samples = plan.prompt * self.tokenizers.samples_per_semantic_frame
      audio = np.stack([r.prompt_audio[:samples] for r in requests]).astype(np.float32)
      tokens = self.tokenizers.tokenize(audio)
      semantic[:, : plan.prompt] = tokens[SEMANTIC]
      acoustic[:, : ratio * plan.prompt] = tokens[ACOUSTIC]
    return semantic, acoustic

  def _stage_windows(self, name: str, plan: _Plan) -> list[Window]:
    window, prefix = self._window_frames(name)
    return plan_windows(
      plan.internal,
      window,
      prefix,
      boundaries=plan.boundaries if name != FINE_STAGE else (),
      prompt=plan.prompt,
      inputs_frames=None if name == SEMANTIC_STAGE else plan.internal,
    )

  def _run_window(
    self,
    name: str,
    window: Window,
    keys: jax.Array,
    mulan: np.ndarray,
    semantic: np.ndarray,
    acoustic: np.ndarray,
  ) -> None:
    """Generates one window's new frames into `semantic` or `acoustic` (in place)."""
    layout = self.models[name].layout
    inputs = self._window_inputs(name, window, mulan[:, window.segment], semantic, acoustic)
    stream, scale, levels = self._window_target(name, semantic, acoustic)
    known = stream[:, scale * window.start : scale * window.new_start, levels]
    new_frames = slice(scale * window.new_start, scale * window.new_end)
    new_shape = stream[:, new_frames, levels].shape
    num_known, num_new = known[0].size, int(np.prod(new_shape[1:]))
    offsets = layout.target_id_ranges()[:, 0].astype(np.int32)
    extra = {}
    if name != FINE_STAGE and self.config.guidance_scale != 1.0:
      extra["unconditional_inputs"] = _without_conditioning(inputs, self.tokens.mulan_levels)
    params, batch = self._placement(name, len(inputs))
    output = self._programs[name](
      params,
      jax.device_put(inputs, batch),
      jax.device_put(known.reshape(len(known), -1) + offsets[:num_known], batch),
      jax.device_put(keys, batch),
      num_new=num_new,
      **{k: jax.device_put(v, batch) for k, v in extra.items()},
    )
    codes = np.asarray(output.tokens) - offsets[num_known : num_known + num_new]
    stream[:, new_frames, levels] = codes.reshape(new_shape)

  def _placement(self, name: str, rows: int) -> tuple[PyTree, jax.sharding.Sharding]:
    """(params, input sharding): rows split over the devices when they divide evenly, else all
    on the first device (replicating them would repeat the work on every device)."""
    if rows % self._mesh.size == 0:
      return self.params[name], NamedSharding(self._mesh, PartitionSpec("data"))
    first = self._first_params[name]
    return first, jax.sharding.SingleDeviceSharding(self._mesh.devices.flat[0])

  def _window_inputs(
    self,
    name: str,
    window: Window,
    conditioning: np.ndarray,
    semantic: np.ndarray,
    acoustic: np.ndarray,
  ) -> np.ndarray:
    """The stage's input ids for a window: MuLan tokens, and the time-aligned lower stream."""
    layout, nc = self.models[name].layout, self.tokens.num_coarse_levels
    if name == SEMANTIC_STAGE:
      return layout.encode_inputs({MULAN: conditioning})
    if name == COARSE_STAGE:
      span = semantic[:, window.start : window.start + layout.semantic_frames]
      return layout.encode_inputs({MULAN: conditioning, SEMANTIC: span})
    start = self.tokens.acoustic_frames_per_semantic * window.start
    span = acoustic[:, start : start + layout.acoustic_frames, :nc]
    return layout.encode_inputs({ACOUSTIC: span})

  def _window_target(
    self, name: str, semantic: np.ndarray, acoustic: np.ndarray
  ) -> tuple[np.ndarray, int, Any]:
    """(stream a stage writes, its frames per semantic frame, its level index)."""
    nc = self.tokens.num_coarse_levels
    if name == SEMANTIC_STAGE:
      return semantic[..., None], 1, 0  # a view with a level axis: the same indexing for all
    levels = slice(0, nc) if name == COARSE_STAGE else slice(nc, None)
    return acoustic, self.tokens.acoustic_frames_per_semantic, levels


def _without_conditioning(inputs: np.ndarray, mulan_levels: int) -> np.ndarray:
  """The unconditional twin of semantic/coarse inputs: the MuLan tokens replaced by PAD."""
  inputs = np.array(inputs)
  inputs[:, :mulan_levels] = PAD_ID
  return inputs


def _stage_keys(seeds: np.ndarray, stage_index: int) -> jax.Array:
  """One key per request for a stage: fold_in(key(seed), stage)."""
  return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), stage_index))(seeds)


def load_pipeline(
  tokenizers: TokenizerBundle,
  semantic_dir: str,
  coarse_dir: str,
  fine_dir: str,
  config: PipelineConfig = PipelineConfig(),
) -> tuple[MusicLMPipeline, dict[str, int]]:
  """The pipeline of trained stage LMs (rebuilt from their checkpoints) and their steps."""
  stages, steps = {}, {}
  for name, model_dir in (
    (SEMANTIC_STAGE, semantic_dir),
    (COARSE_STAGE, coarse_dir),
    (FINE_STAGE, fine_dir),
  ):
    model, params, step = load_stage_lm(model_dir)
    if model.layout.stage != name:
      raise ValueError(f"{model_dir} holds a {model.layout.stage} stage LM, not a {name} one")
    stages[name], steps[name] = (model, params), step
  return MusicLMPipeline(tokenizers, stages, config), steps
