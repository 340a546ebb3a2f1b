"""`render_corpus`: music21 scores -> a MusicCaps-layout folder of captioned 24 kHz clips.

Layout written under `out_dir`:
  audio/{ytid}.wav       16-bit PCM mono, exactly clip_seconds long
  audio/{ytid}.mid       the notes and programs rendered (and the render settings, as text)
  musiccaps.csv          ytid,start_s,end_s,aspect_list,caption + melody_group,score_id,split
                         + metadata columns
  render_report.json     counts, skipped scores with reasons, failures, timings
  spectrograms/*.png     with `spectrograms=True`, for the first few clips

Two phases, both spread over worker processes: parse candidate scores (slow part), then render
clips (fast). The parent decides everything between them from the seed: candidates are taken in
their seeded order and each score's plan comes from a generator seeded by (seed, score id), so
outputs are byte-identical for any `num_workers`. A rerun keeps clips whose WAV and MIDI already
match the plan; files are written atomically, so a killed run leaves no half-written clip.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import itertools
import json
import math
import multiprocessing
import os
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np

from musiclm_jax.data.render import scores as scores_lib
from musiclm_jax.data.render import synth
from musiclm_jax.data.render.plan import ClipPlan, plan_score
from musiclm_jax.runtime.atomic import atomic_write_bytes

CSV_NAME = "musiccaps.csv"
AUDIO_SUBDIR = "audio"
REPORT_NAME = "render_report.json"
SPECTROGRAM_SUBDIR = "spectrograms"
NUM_SPECTROGRAMS = 8
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 96_000  # FluidSynth's synth.sample-rate range
RENDER_VERSION = 1  # bump when the same plan would sound different
CSV_COLUMNS = (
  "ytid",
  "start_s",
  "end_s",
  "aspect_list",
  "caption",
  "melody_group",
  "score_id",
  "split",
  "composer",
  "source",
  "instruments",
  "tempo_bpm",
  "key",
  "meter",
  "transpose",
  "num_parts",
  "title",
)


@dataclasses.dataclass
class RenderSummary:
  """What `render_corpus` did.

  Attributes:
    num_clips: clips listed in the CSV (rendered now or kept from an earlier run).
    audio_seconds: their total duration.
    wall_seconds: time the whole call took.
    soundfont: the soundfont used.
    csv_path: the CSV written.
    failures: "ytid: reason" of clips that could not be rendered (not in the CSV).
    num_rendered: clips synthesised by this call.
    num_reused: clips kept from an earlier run because they matched the plan.
    num_scores: scores the clips come from.
    skipped_scores: reason -> number of candidate scores left out for it.
    report_path: the JSON report written.
  """

  num_clips: int
  audio_seconds: float
  wall_seconds: float
  soundfont: str
  csv_path: str
  failures: list[str]
  num_rendered: int = 0
  num_reused: int = 0
  num_scores: int = 0
  skipped_scores: dict[str, int] = dataclasses.field(default_factory=dict)
  report_path: str = ""


@dataclasses.dataclass(frozen=True)
class _Settings:
  audio_dir: str
  sample_rate: int
  clip_seconds: float
  soundfont: str

  @property
  def num_samples(self) -> int:
    return int(round(self.clip_seconds * self.sample_rate))

  def label(self) -> str:
    size = os.path.getsize(self.soundfont)
    return (
      f"musiclm_jax render v{RENDER_VERSION} sample_rate={self.sample_rate} "
      f"clip_seconds={self.clip_seconds!r} soundfont={os.path.basename(self.soundfont)}:{size}"
    )


def _load(ref: scores_lib.ScoreRef) -> tuple[scores_lib.ScoreNotes | None, str | None]:
  """Worker task of phase 1: (parsed score, None) or (None, reason it is skipped)."""
  try:
    return scores_lib.load_score(ref), None
  except scores_lib.ScoreError as e:
    return None, str(e)


def _wav_complete(path: str, settings: _Settings) -> bool:
  """Whether `path` is a whole mono 16-bit WAV of the planned rate and length."""
  try:
    with wave.open(path, "rb") as w:
      header = (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes())
  except (OSError, EOFError, wave.Error):
    return False
  return header == (1, 2, settings.sample_rate, settings.num_samples)


def _render_clip(job: tuple[ClipPlan, _Settings]) -> tuple[str, str, str | None, float]:
  """Worker task of phase 2: renders one clip unless it exists as planned.

  Returns:
    (ytid, "rendered" | "reused" | "failed", reason of a failure or None, seconds spent).
  """
  start = time.perf_counter()
  ytid, status, reason = _render_or_reuse(*job)
  return ytid, status, reason, time.perf_counter() - start


def _render_or_reuse(plan: ClipPlan, settings: _Settings) -> tuple[str, str, str | None]:
  wav_path = os.path.join(settings.audio_dir, f"{plan.ytid}.wav")
  mid_path = os.path.join(settings.audio_dir, f"{plan.ytid}.mid")
  try:
    mid = synth.midi_bytes(plan.notes, plan.programs, plan.tempo_qpm, settings.label())
    if os.path.exists(mid_path) and _wav_complete(wav_path, settings):
      with open(mid_path, "rb") as f:
        if f.read() == mid:
          return plan.ytid, "reused", None
    audio = synth.synthesize(
      plan.notes,
      plan.programs,
      sample_rate=settings.sample_rate,
      num_samples=settings.num_samples,
      soundfont=settings.soundfont,
    )
    audio = synth.finish(audio, settings.sample_rate)
    atomic_write_bytes(wav_path, synth.wav_bytes(audio, settings.sample_rate))
    # The MIDI file goes last: its presence marks the clip complete for a rerun.
    atomic_write_bytes(mid_path, mid)
    return plan.ytid, "rendered", None
  except Exception as e:  # one bad clip is counted in the report, not fatal to the run
    return plan.ytid, "failed", f"{type(e).__name__}: {e}"


def _bar(total: int, desc: str, unit: str, enabled: bool):
  """A tqdm progress bar, or None."""
  if not enabled:
    return None
  from tqdm import tqdm

  return tqdm(total=total, desc=desc, unit=unit)


@dataclasses.dataclass
class _Selection:
  clips: list[ClipPlan]
  score_ids: list[str]
  skipped: list[tuple[str, str]]
  parse_seconds: float


@dataclasses.dataclass(frozen=True)
class _PlanArgs:
  num_clips: int
  clip_seconds: float
  seed: int
  group_size: int
  max_passages: int


def _plan(score: scores_lib.ScoreNotes, args: _PlanArgs) -> tuple[list[list[ClipPlan]], str]:
  """(melody groups, "") of a parsed score, or ([], reason) when it has no usable passage."""
  try:
    groups = plan_score(
      score,
      seed=args.seed,
      clip_seconds=args.clip_seconds,
      max_passages=args.max_passages,
      group_size=args.group_size,
    )
  except scores_lib.ScoreError as e:
    return [], str(e)
  return groups, ""


def _select(mapper: Callable, args: _PlanArgs, num_workers: int, progress: bool) -> _Selection:
  """Phase 1: parses candidates (in batches, maybe in parallel) until enough groups are planned.

  Candidates are consumed strictly in their seeded order, so the selection does not depend on
  `num_workers`; results past the last needed candidate of a parallel batch are dropped.
  """
  order: Iterator[scores_lib.ScoreRef] = scores_lib.candidate_order(
    scores_lib.list_scores(), np.random.default_rng([args.seed, 0])
  )
  num_groups = math.ceil(args.num_clips / args.group_size)
  max_attempts = max(50, 5 * math.ceil(num_groups / args.max_passages))
  sel, groups, attempts = _Selection([], [], [], 0.0), 0, 0
  bar = _bar(num_groups, "plan", "group", progress)
  while groups < num_groups and attempts < max_attempts:
    want = math.ceil((num_groups - groups) / args.max_passages) + num_workers - 1
    batch = list(itertools.islice(order, min(want, max_attempts - attempts)))
    if not batch:
      break
    for ref, (score, reason) in zip(batch, mapper(_load, batch)):
      if groups >= num_groups:
        break
      attempts += 1
      planned = []
      if score is not None:
        sel.parse_seconds += score.parse_seconds
        planned, reason = _plan(score, args)
      if not planned:
        sel.skipped.append((ref.score_id, reason or "unknown"))
        continue
      planned = planned[: num_groups - groups]
      groups += len(planned)
      sel.score_ids.append(ref.score_id)
      sel.clips.extend(c for g in planned for c in g)
      if bar:
        bar.update(len(planned))
  if bar:
    bar.close()
  sel.clips = sel.clips[: args.num_clips]
  return sel


def _assign_splits(sel: _Selection, eval_fraction: float, seed: int) -> None:
  """Eval gets round(eval_fraction * scores) whole scores (at least one when there are two)."""
  n = len(sel.score_ids)
  n_eval = int(round(eval_fraction * n))
  if eval_fraction > 0 and n >= 2:
    n_eval = min(max(n_eval, 1), n - 1)
  rng = np.random.default_rng([seed, 1])
  eval_ids = {sel.score_ids[i] for i in rng.choice(n, size=min(n_eval, n), replace=False)}
  sel.clips = [
    dataclasses.replace(c, split="eval" if c.score_id in eval_ids else "train") for c in sel.clips
  ]


def _csv_text(clips: list[ClipPlan], clip_seconds: float) -> str:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(CSV_COLUMNS)
  for c in sorted(clips, key=lambda c: c.ytid):
    m = c.meta
    writer.writerow(
      [
        c.ytid,
        0,
        f"{clip_seconds:g}",
        repr(list(c.aspects)),
        c.caption,
        c.melody_group,
        c.score_id,
        c.split,
        m.composer,
        m.source,
        ", ".join(m.instruments),
        m.tempo_bpm,
        m.key,
        m.meter or "",
        c.transpose,
        m.num_parts,
        c.title,
      ]
    )
  return buf.getvalue()


def _write_spectrograms(out_dir: str, clips: list[ClipPlan], sample_rate: int) -> None:
  from musiclm_jax.data.spectrogram import save_spectrogram_png

  for c in sorted(clips, key=lambda c: c.ytid)[:NUM_SPECTROGRAMS]:
    with wave.open(os.path.join(out_dir, AUDIO_SUBDIR, f"{c.ytid}.wav"), "rb") as w:
      pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    path = os.path.join(out_dir, SPECTROGRAM_SUBDIR, f"{c.ytid}.png")
    save_spectrogram_png(pcm.astype(np.float32) / 32768.0, sample_rate, path, title=c.caption)


def _preflight(soundfont: str | None) -> str:
  """Resolves the soundfont and checks that FluidSynth loads it, before any work is done."""
  path = synth.resolve_soundfont(soundfont)
  fluidsynth = synth.load_fluidsynth()
  probe = fluidsynth.Synth(samplerate=24_000, **{"synth.dynamic-sample-loading": 1})
  try:
    if probe.sfload(path) < 0:
      raise synth.RenderError(f"FluidSynth cannot load the soundfont {path}")
  finally:
    probe.delete()
  return path


def _remove_stale_temporaries(audio_dir: str) -> None:
  """Deletes temporary files a killed run left behind (see `runtime.atomic`)."""
  for path in glob.glob(os.path.join(audio_dir, ".*.tmp")):
    os.remove(path)


def _report(
  sel: _Selection, outcomes: dict[str, tuple[str, str | None]], summary: RenderSummary, **extra
) -> dict:
  status = Counter(s for s, _ in outcomes.values())
  listed = [c for c in sel.clips if outcomes[c.ytid][0] != "failed"]
  return {
    **extra,
    "num_clips": summary.num_clips,
    "rendered": status["rendered"],
    "reused": status["reused"],
    "failed": summary.failures,
    "audio_seconds": summary.audio_seconds,
    "wall_seconds": round(summary.wall_seconds, 3),
    "parse_seconds": round(sel.parse_seconds, 3),
    "rendered_audio_seconds_per_second": round(
      status["rendered"] * extra["clip_seconds"] / max(summary.wall_seconds, 1e-9), 2
    ),
    "num_scores": len(sel.score_ids),
    "scores_by_split": dict(
      sorted(Counter(s for _, s in {(c.score_id, c.split) for c in listed}).items())
    ),
    "clips_by_source": dict(sorted(Counter(c.meta.source for c in listed).items())),
    "skipped_scores": summary.skipped_scores,
    "skipped_score_list": [list(s) for s in sel.skipped],
    "soundfont": summary.soundfont,
  }


def render_corpus(
  out_dir: str,
  *,
  num_clips: int,
  clip_seconds: float,
  seed: int,
  sample_rate: int = 24_000,
  num_workers: int = 1,
  soundfont: str | None = None,
  eval_fraction: float = 0.1,
  group_size: int = 2,
  progress: bool = True,
  max_passages_per_score: int = 2,
  spectrograms: bool = False,
) -> RenderSummary:
  """Renders captioned clips of music21 corpus scores in MusicCaps layout (see module doc).

  Args:
    out_dir: output folder (created).
    num_clips: clips to render.
    clip_seconds: length of each clip.
    seed: decides everything; the same seed gives byte-identical WAVs and CSV.
    sample_rate: Hz of the WAVs (FluidSynth renders at this rate).
    num_workers: processes for parsing and rendering (1: all in this process). Workers are
      spawned (safe next to JAX/TF threads), so a script calling this with more than one worker
      needs the usual `if __name__ == "__main__":` guard.
    soundfont: .sf2 path; default FluidR3_GM.sf2 when installed, else pretty_midi's TimGM6mb.sf2.
    eval_fraction: fraction of scores (not clips) in the eval split.
    group_size: renditions of each passage with different instruments (a melody group).
    progress: show a tqdm bar.
    max_passages_per_score: melody groups cut from one score at most.
    spectrograms: also write PNG spectrograms of the first NUM_SPECTROGRAMS clips.

  Returns:
    A `RenderSummary`; details are in `out_dir/render_report.json`.

  Raises:
    ValueError: a non-positive count or length, or a sample rate FluidSynth cannot render.
    FileNotFoundError: the soundfont does not exist.
    synth.RenderError: FluidSynth cannot be loaded (install hint in the message).
  """
  if num_clips < 1 or clip_seconds <= 0 or group_size < 1 or num_workers < 1:
    raise ValueError("num_clips, clip_seconds, group_size and num_workers must be positive")
  if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
    raise ValueError(
      f"sample_rate {sample_rate} is outside FluidSynth's {MIN_SAMPLE_RATE}-"
      f"{MAX_SAMPLE_RATE} Hz; render at 24000 and resample afterwards"
    )
  start = time.perf_counter()
  settings = _Settings(
    os.path.join(out_dir, AUDIO_SUBDIR), sample_rate, float(clip_seconds), _preflight(soundfont)
  )
  os.makedirs(settings.audio_dir, exist_ok=True)
  _remove_stale_temporaries(settings.audio_dir)
  pool = multiprocessing.get_context("spawn").Pool(num_workers) if num_workers > 1 else None
  try:
    args = _PlanArgs(num_clips, float(clip_seconds), seed, group_size, max_passages_per_score)
    sel = _select(pool.imap if pool else map, args, num_workers, progress)
    _assign_splits(sel, eval_fraction, seed)
    outcomes, render_seconds = _render_all(pool, sel.clips, settings, progress)
  finally:
    if pool:
      pool.close()
      pool.join()
  return _finish(
    out_dir,
    sel,
    outcomes,
    settings,
    start,
    spectrograms,
    seed=seed,
    num_workers=num_workers,
    group_size=group_size,
    render_seconds=round(render_seconds, 3),
  )


def _render_all(
  pool, clips: list[ClipPlan], settings: _Settings, progress: bool
) -> tuple[dict[str, tuple[str, str | None]], float]:
  """Phase 2: renders clips (in `pool` when given); returns ytid -> (status, reason) and the
  seconds the workers spent."""
  jobs = [(c, settings) for c in clips]
  results = pool.imap_unordered(_render_clip, jobs) if pool else map(_render_clip, jobs)
  outcomes, seconds = {}, 0.0
  bar = _bar(len(jobs), "render", "clip", progress)
  for ytid, status, reason, spent in results:
    outcomes[ytid] = (status, reason)
    seconds += spent
    if bar:
      bar.update()
  if bar:
    bar.close()
  return outcomes, seconds


def _finish(
  out_dir: str,
  sel: _Selection,
  outcomes: dict[str, tuple[str, str | None]],
  settings: _Settings,
  start: float,
  spectrograms: bool,
  **extra,
) -> RenderSummary:
  """Writes the CSV, spectrograms and report; returns the summary."""
  listed = [c for c in sel.clips if outcomes[c.ytid][0] != "failed"]
  csv_path = os.path.join(out_dir, CSV_NAME)
  atomic_write_bytes(csv_path, _csv_text(listed, settings.clip_seconds).encode("utf-8"))
  if spectrograms and listed:
    _write_spectrograms(out_dir, listed, settings.sample_rate)
  summary = RenderSummary(
    num_clips=len(listed),
    audio_seconds=len(listed) * settings.clip_seconds,
    wall_seconds=time.perf_counter() - start,
    soundfont=settings.soundfont,
    csv_path=csv_path,
    failures=sorted(f"{y}: {r}" for y, (s, r) in outcomes.items() if s == "failed"),
    num_rendered=sum(s == "rendered" for s, _ in outcomes.values()),
    num_reused=sum(s == "reused" for s, _ in outcomes.values()),
    num_scores=len({c.score_id for c in listed}),
    skipped_scores=dict(sorted(Counter(r for _, r in sel.skipped).items())),
    report_path=os.path.join(out_dir, REPORT_NAME),
  )
  report = _report(
    sel,
    outcomes,
    summary,
    sample_rate=settings.sample_rate,
    clip_seconds=settings.clip_seconds,
    **extra,
  )
  atomic_write_bytes(summary.report_path, json.dumps(report, indent=2).encode("utf-8"))
  return summary
