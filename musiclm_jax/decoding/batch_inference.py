"""Offline batch decoding: a prompts file in, one WAV per prompt and a manifest out.

    prompts.jsonl ─► parse + validate ─► this host's shard ─► minus the manifest's ids
                        │ bad lines                            │
                        ▼                                      ▼
                   errors.jsonl             batches of equal durations ─► pipeline.generate
                                                                          ─► <id>.wav, manifest line

Prompt lines, their checks, sharding and batching: `prompts.py`.

The manifest is the source of truth. A prompt is done when a manifest line with its id exists;
its WAV is written first (temporary file + rename, then fsync), so a run killed at any point
leaves, at worst, a WAV without a manifest line, which the next run generates again. Each shard
appends (and fsyncs) to its own manifest file, and a run reads every manifest file in the output
directory, so re-running with another shard count never repeats a finished prompt.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TextIO

import numpy as np

from musiclm_jax.data import audio_io, token_bundle
from musiclm_jax.decoding.pipeline import (
  MusicLMPipeline,
  PipelineConfig,
  Request,
  load_pipeline,
)
from musiclm_jax.decoding.prompts import (
  Prompt,
  PromptError,
  batches,
  parse_prompts,
  shard_prompts,
)
from musiclm_jax.runtime.atomic import atomic_write_text

SINGLE_MANIFEST = "manifest.jsonl"
SINGLE_ERRORS = "errors.jsonl"


# -- output files ----------------------------------------------------------------------------------


def _shard_suffix(shard_id: int, num_shards: int) -> str:
  return f"{shard_id:05d}-of-{num_shards:05d}"


def manifest_path(out_dir: str, shard_id: int = 0, num_shards: int = 1) -> str:
  """`manifest.jsonl` for one shard, else `manifest.SSSSS-of-NNNNN.jsonl` (one file per host)."""
  if num_shards == 1:
    return os.path.join(out_dir, SINGLE_MANIFEST)
  return os.path.join(out_dir, f"manifest.{_shard_suffix(shard_id, num_shards)}.jsonl")


def errors_path(out_dir: str, shard_id: int = 0, num_shards: int = 1) -> str:
  """`errors.jsonl` for one shard, else `errors.SSSSS-of-NNNNN.jsonl`."""
  if num_shards == 1:
    return os.path.join(out_dir, SINGLE_ERRORS)
  return os.path.join(out_dir, f"errors.{_shard_suffix(shard_id, num_shards)}.jsonl")


def wav_path(out_dir: str, prompt_id: str) -> str:
  return os.path.join(out_dir, f"{prompt_id}.wav")


def _complete_records(path: str) -> tuple[list[dict[str, Any]], bool]:
  """(records of the complete, valid lines of a JSONL file, whether every line was one).

  A run killed mid-append leaves a partial last line: it is not a record.
  """
  records, clean = [], True
  with open(path, "rb") as f:
    data = f.read()
  for raw in data.split(b"\n"):
    if not raw.strip():
      continue
    try:
      record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
      clean = False
      continue
    if isinstance(record, dict) and isinstance(record.get("id"), str):
      records.append(record)
    else:
      clean = False
  return records, clean and (not data or data.endswith(b"\n"))


def manifest_files(out_dir: str) -> list[str]:
  """Every manifest file in `out_dir`, of any shard count (sorted)."""
  single = os.path.join(out_dir, SINGLE_MANIFEST)
  sharded = glob.glob(os.path.join(glob.escape(out_dir), "manifest.*-of-*.jsonl"))
  return sorted(([single] if os.path.exists(single) else []) + sharded)


def read_manifests(out_dir: str) -> dict[str, dict[str, Any]]:
  """id → manifest record, over every manifest file in `out_dir` (the first record of an id)."""
  done: dict[str, dict[str, Any]] = {}
  for path in manifest_files(out_dir):
    for record in _complete_records(path)[0]:
      done.setdefault(record["id"], record)
  return done


def _fsync_dir(directory: str) -> None:
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _write_lines_atomically(path: str, records: Iterable[Mapping[str, Any]]) -> None:
  atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records))


class JsonlAppender:
  """Appends records to a JSONL file, one fsync per line; a partial last line is repaired first.

  Args:
    path: the file (created if missing).
    fresh: start the file empty (rewritten atomically) instead of keeping its records.
  """

  def __init__(self, path: str, fresh: bool = False):
    self.path = path
    if fresh:
      _write_lines_atomically(path, [])
    elif os.path.exists(path):
      records, clean = _complete_records(path)
      if not clean:
        _write_lines_atomically(path, records)

  def append(self, record: Mapping[str, Any]) -> None:
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line)
      os.fsync(fd)
    finally:
      os.close(fd)


def _remove_stale_temporaries(out_dir: str, ids: set[str]) -> None:
  """Deletes temporary WAVs (`.<id>.wav.XXXX.tmp`) a killed run of this shard left behind."""
  for name in os.listdir(out_dir):
    if name.startswith(".") and name.endswith(".tmp") and ".wav." in name:
      if name[1:].rsplit(".wav.", 1)[0] in ids:
        os.unlink(os.path.join(out_dir, name))


def _write_wav_durably(path: str, audio: np.ndarray, sample_rate: int) -> None:
  """Atomic (tmp + rename) and on disk before the manifest line that vouches for it."""
  audio_io.write_wav(path, audio, sample_rate)
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
  _fsync_dir(os.path.dirname(os.path.abspath(path)))


# -- progress --------------------------------------------------------------------------------------


class StageProgress:
  """The pipeline's `progress` callback: a bar per stage on stderr, and each stage's wall time.

  On a terminal the bar redraws in place (`\\r`); in a log it prints one line per finished stage.
  """

  def __init__(self, stream: TextIO | None = None, indent: str = "  ", width: int = 30):
    self.stream = stream or sys.stderr
    self.indent, self.width = indent, width
    self.tty = getattr(self.stream, "isatty", lambda: False)()
    self.reset()

  def reset(self) -> None:
    """Starts timing a new `generate` call."""
    self.started = self._last = time.perf_counter()
    self.stage_seconds: dict[str, float] = {}

  def __call__(self, stage: str, done: int, total: int) -> None:
    now = time.perf_counter()
    self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + now - self._last
    self._last = now
    seconds = self.stage_seconds[stage]
    if self.tty:
      filled = self.width * done // max(total, 1)
      bar = "#" * filled + "-" * (self.width - filled)
      end = "\n" if done == total else ""
      self.stream.write(
        f"\r{self.indent}{stage:<9}[{bar}] {done}/{total} windows {seconds:6.1f}s{end}"
      )
    elif done == total:
      self.stream.write(f"{self.indent}{stage:<9}{done}/{total} windows in {seconds:.1f}s\n")
    self.stream.flush()

  def finish(self) -> dict[str, float]:
    """Per-stage seconds of the call, plus 'audio_decode' (the codec, after the last window)."""
    seconds = {k: round(v, 4) for k, v in self.stage_seconds.items()}
    seconds["audio_decode"] = round(time.perf_counter() - self._last, 4)
    return seconds


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# -- the job ---------------------------------------------------------------------------------------


class Generated(Protocol):
  audio: np.ndarray


class Generator(Protocol):
  """What `run_inference` needs of a pipeline (`MusicLMPipeline` is one)."""

  def generate(
    self, requests: Sequence[Request], progress: Callable[[str, int, int], None] | None = None
  ) -> Sequence[Generated]: ...


@dataclasses.dataclass
class InferenceReport:
  """What a run of one shard did.

  Attributes:
    shard: "SSSSS-of-NNNNN".
    prompts: valid prompts of this shard.
    done_before: of those, already in a manifest when the run started.
    generated: generated by this run.
    failed: prompts of this shard not generated (see the errors file).
    bad_lines: lines of the prompts file that are not valid prompts (all shards).
    audio_seconds: seconds of audio this run generated.
    wall_seconds: the run's wall time.
    manifest: this shard's manifest file; errors: its errors file.
  """

  shard: str
  prompts: int
  done_before: int
  generated: int
  failed: int
  bad_lines: int
  audio_seconds: float
  wall_seconds: float
  manifest: str
  errors: str

  @property
  def complete(self) -> bool:
    """Every line of the file is a valid prompt and every prompt of the shard is done."""
    return self.failed == 0 and self.bad_lines == 0

  def summary(self) -> str:
    return (
      f"shard {self.shard}: {self.done_before + self.generated}/{self.prompts} prompts done "
      f"({self.generated} now, {self.done_before} before), {self.failed} failed, "
      f"{self.bad_lines} bad prompt lines; {self.audio_seconds:.1f} audio-s in "
      f"{self.wall_seconds:.1f}s. Manifest: {self.manifest}; errors: {self.errors}"
    )


def _conflict(prompt: Prompt, record: Mapping[str, Any]) -> str | None:
  """Why a manifest record of the same id does not match the prompt (None when it does)."""
  wanted = prompt.record()
  for key in ("segments", "text", "seconds", "seed"):
    if record.get(key) != wanted.get(key):
      return (
        f"id {prompt.id!r} is already in the manifest with {key}={record.get(key)!r}, but this "
        f"line asks for {wanted.get(key)!r}: give the prompt a new id or use another --out_dir"
      )
  return None


@dataclasses.dataclass
class _Run:
  """The state of one run: where it writes, what it has done, what it tells the user."""

  generator: Generator
  out_dir: str
  sample_rate: int
  run_info: Mapping[str, Any]
  shard: str
  manifest: JsonlAppender
  errors: JsonlAppender
  log: TextIO
  total: int
  done: int = 0
  audio_total: float = 0.0
  audio_done: float = 0.0
  generated: int = 0
  failed: int = 0
  generate_seconds: float = 0.0

  def unfinished(
    self, prompts: Sequence[Prompt], finished: Mapping[str, Mapping[str, Any]]
  ) -> list[Prompt]:
    """The prompts no manifest holds; counts the others as done (or failed: see `_conflict`)."""
    pending = []
    for prompt in prompts:
      if prompt.id not in finished:
        pending.append(prompt)
      elif (reason := _conflict(prompt, finished[prompt.id])) is not None:
        self.fail(prompt, reason)
      else:
        self.done += 1
    self.audio_total = sum(p.seconds for p in pending)
    return pending

  def fail(self, prompt: Prompt, reason: str) -> None:
    self.errors.append(PromptError(prompt.source, reason, prompt.id).record())
    self.failed += 1

  def run_batch(self, batch: list[Prompt], progress: StageProgress) -> None:
    started = time.perf_counter()
    progress.reset()
    try:
      outputs = self.generator.generate([p.request() for p in batch], progress=progress)
    except ValueError as e:  # a request the pipeline refuses; the other batches go on
      for prompt in batch:
        self.fail(prompt, f"generation failed: {e}")
      return
    generate_s = time.perf_counter() - started
    self.generate_seconds += generate_s
    timing = {
      "batch_size": len(batch),
      "batch_generate_s": round(generate_s, 4),
      "generate_s_per_prompt": round(generate_s / len(batch), 4),
      "stages_s": progress.finish(),
    }
    for prompt, output in zip(batch, outputs):
      self._write(prompt, np.asarray(output.audio), timing)

  def _write(self, prompt: Prompt, audio: np.ndarray, timing: Mapping[str, Any]) -> None:
    expected = int(round(prompt.seconds * self.sample_rate))
    if audio.shape != (expected,):
      self.fail(prompt, f"generated audio of shape {audio.shape}, expected ({expected},)")
      return
    started = time.perf_counter()
    try:
      _write_wav_durably(wav_path(self.out_dir, prompt.id), audio, self.sample_rate)
    except (ValueError, OSError) as e:
      self.fail(prompt, f"could not write its WAV: {e}")
      return
    record = {
      **prompt.record(),
      "wav": os.path.basename(wav_path(self.out_dir, prompt.id)),
      "samples": expected,
      "sample_rate": self.sample_rate,
      "source": prompt.source,
      "shard": self.shard,
      "timings": {**timing, "write_s": round(time.perf_counter() - started, 4)},
      "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      **self.run_info,
    }
    self.manifest.append(record)
    self.generated += 1
    self.done += 1
    self.audio_done += prompt.seconds

  def report_progress(self) -> None:
    rate = self.generate_seconds / self.audio_done if self.audio_done else float("nan")
    remaining = self.audio_total - self.audio_done
    eta = _clock(rate * remaining) if self.audio_done else "?"
    self.log.write(
      f"infer {self.shard}: {self.done}/{self.total} prompts, {self.failed} failed; "
      f"{self.audio_done:.1f}/{self.audio_total:.1f} audio-s this run, {rate:.2f} s per audio-s, "
      f"ETA {eta}\n"
    )
    self.log.flush()


def run_inference(
  generator: Generator,
  prompts_path: str,
  out_dir: str,
  *,
  shard_id: int = 0,
  num_shards: int = 1,
  batch_size: int = 8,
  sample_rate: int = 24_000,
  run_info: Mapping[str, Any] | None = None,
  log: TextIO | None = None,
) -> InferenceReport:
  """Generates this shard's prompts that no manifest in `out_dir` holds yet.

  Args:
    generator: the pipeline (anything with `generate(requests, progress=None)` returning objects
      with `.audio` float [round(seconds · sample_rate)]).
    prompts_path: the prompts JSONL file (see the module docstring).
    out_dir: where `<id>.wav`, the manifest and the errors file go.
    shard_id, num_shards: this host's part of the prompts (by a hash of each id).
    batch_size: prompts per `generate` call (prompts of equal durations batch together).
    sample_rate: of the generated audio.
    run_info: fields added to every manifest line (sampling settings, checkpoint identities).
    log: where progress goes (stderr).

  Returns:
    The run's `InferenceReport`. Bad lines (reported by shard 0) and failed prompts are in the
    errors file, one JSON object per line: {"source": "file:line", "id", "reason"}.
  """
  started, log = time.perf_counter(), log or sys.stderr
  prompts, bad_lines = parse_prompts(prompts_path)
  mine = shard_prompts(prompts, shard_id, num_shards)
  os.makedirs(out_dir, exist_ok=True)
  errors = JsonlAppender(errors_path(out_dir, shard_id, num_shards), fresh=True)
  for error in bad_lines if shard_id == 0 else []:
    errors.append(error.record())
  run = _Run(
    generator,
    out_dir,
    sample_rate,
    dict(run_info or {}),
    _shard_suffix(shard_id, num_shards),
    JsonlAppender(manifest_path(out_dir, shard_id, num_shards)),
    errors,
    log,
    total=len(mine),
  )
  pending = run.unfinished(mine, read_manifests(out_dir))
  done_before = run.done
  _remove_stale_temporaries(out_dir, {p.id for p in pending})
  log.write(
    f"infer {run.shard}: {len(mine)} of {len(prompts)} prompts in this shard, {done_before} "
    f"already done, {len(pending)} to generate ({run.audio_total:.1f} audio-s); "
    f"{len(bad_lines)} bad lines\n"
  )
  progress = StageProgress(log)
  for batch in batches(pending, batch_size):
    run.run_batch(batch, progress)
    run.report_progress()
  return InferenceReport(
    shard=run.shard,
    prompts=len(mine),
    done_before=done_before,
    generated=run.generated,
    failed=run.failed,
    bad_lines=len(bad_lines),
    audio_seconds=run.audio_done,
    wall_seconds=time.perf_counter() - started,
    manifest=run.manifest.path,
    errors=errors.path,
  )


# -- models ----------------------------------------------------------------------------------------


def load_models(
  tokenizers_config: token_bundle.TokenizerBundleConfig,
  stage_dirs: Mapping[str, str],
  config: PipelineConfig,
) -> tuple[MusicLMPipeline, dict[str, Any]]:
  """The pipeline, and what its manifest lines say about the models.

  Args:
    tokenizers_config: a `TokenizerBundleConfig`.
    stage_dirs: 'semantic' / 'coarse' / 'fine' → the stage LM's model dir.
    config: the `PipelineConfig`.

  Returns:
    (`MusicLMPipeline`, {'sampling': the PipelineConfig as a dict, 'checkpoints': {'stages': per
    stage {dir, step, model, committed_ns}, 'tokenizers': `tokenizer_identity`}}).
  """
  pipeline, steps = load_pipeline(
    token_bundle.load_bundle(tokenizers_config),
    stage_dirs["semantic"],
    stage_dirs["coarse"],
    stage_dirs["fine"],
    config,
  )
  stages = {}
  for name, model_dir in stage_dirs.items():
    identity = token_bundle.checkpoint_identity(
      os.path.join(model_dir, token_bundle.CHECKPOINT_SUBDIR)
    )
    if identity["step"] != steps[name]:  # a newer step landed while loading
      identity = {"dir": identity["dir"], "step": steps[name]}
    stages[name] = identity
  info = {
    "sampling": dataclasses.asdict(config),
    "checkpoints": {
      "stages": stages,
      "tokenizers": token_bundle.tokenizer_identity(tokenizers_config),
    },
  }
  return pipeline, info
