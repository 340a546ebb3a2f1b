"""Text-to-music speed behind `musiclm-jax bench pipeline`.

`MusicLMPipeline.generate` on random-init tokenizers (`token_benchmarks.random_bundle`) and stage
LMs: the programs, hence the speed, do not depend on the weights' values, only on the sizes, the
window plan and the sampling (paper temperatures 1.0 / 0.95 / 0.4, no top-k or top-p).

Each batch size is run once as a warm-up, which compiles every window program, MuLan's text tower
and the SoundStream decoder for those shapes (reported as compile_s), then timed. The pipeline
reports each window as it finishes (`progress`), and each window ends by copying its tokens to the
host, so the time between the last windows of two stages is the later stage's wall time. The
MuLan text call that opens `generate` is timed alone just before (same texts, same batch) and
taken off the semantic stage; what follows the last fine window is the SoundStream decode.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from musiclm_jax.data.token_bundle import TokenizerBundle
from musiclm_jax.decoding.pipeline import MusicLMPipeline, PipelineConfig, Request
from musiclm_jax.models.stage_lm import StageLM
from musiclm_jax.stages import (
  COARSE_STAGE,
  FINE_STAGE,
  SEMANTIC_STAGE,
  STAGES,
  StageLayout,
  TokenSpec,
)

PyTree = Any
TEXT = "a calm violin melody over soft piano chords"
# The paper's semantic windows are 30 s with a 15 s prefix: half the crop, kept at every size.
SEMANTIC_PREFIX_FRACTION = 0.5


def random_stages(
  models: Mapping[str, StageLM], tokens: TokenSpec, seed: int = 0
) -> dict[str, tuple[StageLM, PyTree]]:
  """Stage LMs of the given architectures and crops over `tokens`, with random parameters.

  Args:
    models: stage name → a StageLM (e.g. a size's gin MODEL); its transformer config, stage and
      crop are kept, its token spec is replaced by `tokens`.
    tokens: the spec the tokenizers produce (`TokenizerBundle.token_spec`).
    seed: of the parameters (stage i uses seed + i).

  Returns:
    stage name → (StageLM, unboxed params), as `MusicLMPipeline` takes them.
  """
  stages = {}
  for index, name in enumerate(STAGES):
    layout = models[name].layout
    model = StageLM(models[name].config, StageLayout(name, tokens, layout.crop_seconds))
    init = jax.jit(lambda key, model=model: model.get_initial_variables(key)["params"])
    stages[name] = (model, nn.unbox(init(jax.random.key(seed + index))))
  return stages


def paper_config(stages: Mapping[str, tuple[StageLM, PyTree]]) -> PipelineConfig:
  """The paper's sampling and windowing, the semantic prefix scaled to the stage's crop."""
  crop = stages[SEMANTIC_STAGE][0].layout.crop_seconds
  return PipelineConfig(semantic_prefix_seconds=SEMANTIC_PREFIX_FRACTION * crop)


def new_tokens_per_request(tokens: TokenSpec, frames: int) -> dict[str, int]:
  """Tokens each stage samples for `frames` semantic frames: F, 2F·nc and 2F·(L − nc)."""
  acoustic = tokens.acoustic_frames_per_semantic * frames
  return {
    SEMANTIC_STAGE: frames,
    COARSE_STAGE: acoustic * tokens.num_coarse_levels,
    FINE_STAGE: acoustic * (tokens.acoustic_levels - tokens.num_coarse_levels),
  }


@dataclasses.dataclass
class _Marks:
  """Wall-clock marks of one `generate`: its start, each stage's last window and its end."""

  start: float = 0.0
  stage_end: dict[str, float] = dataclasses.field(default_factory=dict)
  windows: dict[str, int] = dataclasses.field(default_factory=dict)
  end: float = 0.0

  def __call__(self, stage: str, done: int, total: int) -> None:
    self.stage_end[stage], self.windows[stage] = time.perf_counter(), total


def _timed_generate(pipeline: MusicLMPipeline, requests: list[Request]) -> _Marks:
  marks = _Marks(start=time.perf_counter())
  pipeline.generate(requests, progress=marks)
  marks.end = time.perf_counter()
  return marks


def _mulan_seconds(pipeline: MusicLMPipeline, texts: list[str], repeats: int) -> float:
  """Median wall seconds of the pipeline's MuLan call (text tower + RVQ) on `texts`."""
  times = []  # compiled by the warm-up generate
  for _ in range(repeats):
    start = time.perf_counter()
    np.asarray(pipeline.tokenizers.mulan.text_tokens(texts))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _stage_seconds(marks: _Marks, mulan_s: float) -> dict[str, float]:
  """Wall seconds of each stage, the codec decode and the whole `generate`."""
  ends = [marks.stage_end[name] for name in STAGES]
  starts = [marks.start + mulan_s, *ends[:-1]]
  seconds = {f"{name}_s": end - start for name, start, end in zip(STAGES, starts, ends)}
  return {**seconds, "codec_s": marks.end - ends[-1], "total_s": marks.end - marks.start}


def _measure(
  pipeline: MusicLMPipeline, requests: list[Request], bucket: int, repeats: int
) -> dict[str, Any]:
  """compile_s (the warm-up generate), then medians over `repeats` timed generates."""
  start = time.perf_counter()
  pipeline.generate(requests)
  compile_s = time.perf_counter() - start
  runs = [_timed_generate(pipeline, requests) for _ in range(repeats)]
  # The pipeline pads the batch to its bucket and tokenizes every padded row's text.
  mulan_s = _mulan_seconds(pipeline, [TEXT] * bucket, repeats)
  seconds = [_stage_seconds(marks, mulan_s) for marks in runs]
  medians = {key: float(np.median([s[key] for s in seconds])) for key in seconds[0]}
  return {"compile_s": compile_s, "mulan_s": mulan_s, **medians, "windows": runs[0].windows}


def bench_pipeline(
  bundle: TokenizerBundle,
  stages: Mapping[str, tuple[StageLM, PyTree]],
  *,
  seconds: float,
  batch_sizes: Sequence[int],
  repeats: int = 1,
  config: PipelineConfig | None = None,
) -> list[dict[str, Any]]:
  """Wall time of text → audio, stage by stage, for batches of equal text requests.

  Args:
    bundle: the tokenizers (`token_benchmarks.random_bundle`).
    stages: stage name → (StageLM, params) over `bundle.token_spec(...)` (`random_stages`).
    seconds: audio per request.
    batch_sizes: requests per `generate` call (each a different seed); one row per size.
    repeats: timed `generate` calls per row (median), after one warm-up call that compiles.
    config: sampling and windowing (default `paper_config(stages)`).

  Returns:
    One dict per batch size: seconds, batch, frames (semantic frames every stage generates: the
    output's F, or a stage's window where that is longer), compile_s (the warm-up generate:
    compiles + one run), mulan_tokens and mulan_s (the text → MuLan tokens call); for each of
    semantic / coarse / fine: *_windows, *_new_tokens (per request: F, 2F·nc, 2F·(L − nc)), *_s
    (wall seconds) and *_tokens_per_s (new tokens × batch / *_s); codec_s (SoundStream decode),
    total_s (the whole generate), real_time_factor (total_s / (seconds × batch): < 1 is faster
    than real time) and audio_seconds_per_s (its inverse).
  """
  if seconds <= 0 or not batch_sizes or min(batch_sizes) < 1 or repeats < 1:
    raise ValueError(
      f"bench_pipeline needs seconds > 0, batch sizes >= 1 and repeats >= 1; got "
      f"seconds={seconds}, batch_sizes={batch_sizes}, repeats={repeats}."
    )
  config = config or paper_config(stages)
  if max(batch_sizes) > max(config.batch_buckets):
    raise ValueError(f"batch sizes {batch_sizes} exceed the largest bucket of {config}")
  pipeline = MusicLMPipeline(bundle, stages, config)
  tokens = pipeline.tokens
  rows = []
  for batch in batch_sizes:
    requests = [Request.from_text(TEXT, seconds, seed=i) for i in range(batch)]
    frames = pipeline.plan(requests[0]).internal
    bucket = min(b for b in config.batch_buckets if b >= batch)
    m = _measure(pipeline, requests, bucket, repeats)
    row = {
      "seconds": seconds,
      "batch": batch,
      "frames": frames,
      "compile_s": m["compile_s"],
      "mulan_tokens": tokens.mulan_levels,
      "mulan_s": m["mulan_s"],
    }
    for name, count in new_tokens_per_request(tokens, frames).items():
      row[f"{name}_windows"] = m["windows"][name]
      row[f"{name}_new_tokens"] = count
      row[f"{name}_s"] = m[f"{name}_s"]
      row[f"{name}_tokens_per_s"] = count * batch / m[f"{name}_s"]
    row["codec_s"], row["total_s"] = m["codec_s"], m["total_s"]
    row["real_time_factor"] = m["total_s"] / (seconds * batch)
    row["audio_seconds_per_s"] = seconds * batch / m["total_s"]
    rows.append(row)
  return rows
