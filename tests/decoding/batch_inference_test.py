"""Batch inference without models: prompt validation, sharding, manifests and resuming.

The generator is a stand-in for `MusicLMPipeline` (something outside this module's subject): it
returns a deterministic tone per request, so the files `run_inference` writes can be checked
exactly. The real pipeline runs end to end in tests/main/infer_cli_test.py.
"""

from __future__ import annotations

import io
import json
import os
import types

import numpy as np
import pytest
import soundfile as sf

from musiclm_jax.decoding import batch_inference as bi
from musiclm_jax.decoding import prompts as pr
from musiclm_jax.decoding.pipeline import StorySegment

RATE = 24_000


class _Crash(Exception):
  """What a killed run looks like from inside: generation stops mid-way."""


class ToneGenerator:
  """`generate(requests, progress)` → a tone per request whose pitch depends on its seed.

  Args:
    crash_on_call: raise `_Crash` on this call (1-based), as if the process died there.
    nan_seeds: requests with these seeds come back with NaN audio.
    short_seeds: requests with these seeds come back one sample short.
  """

  def __init__(self, crash_on_call=None, nan_seeds=(), short_seeds=()):
    self.crash_on_call, self.nan_seeds, self.short_seeds = crash_on_call, nan_seeds, short_seeds
    self.calls: list[list[tuple[float, ...]]] = []

  def generate(self, requests, progress=None):
    self.calls.append([tuple(s.seconds for s in r.segments) for r in requests])
    if len(self.calls) == self.crash_on_call:
      raise _Crash
    for stage in ("semantic", "coarse", "fine"):
      if progress:
        progress(stage, 1, 1)
    return [types.SimpleNamespace(audio=self._audio(r)) for r in requests]

  def _audio(self, request):
    audio = tone(request.seed, request.seconds)
    if request.seed in self.nan_seeds:
      audio[0] = np.nan
    return audio[:-1] if request.seed in self.short_seeds else audio


def tone(seed: int, seconds: float) -> np.ndarray:
  t = np.arange(int(round(seconds * RATE))) / RATE
  return (0.5 * np.sin(2 * np.pi * (100 + seed % 1000) * t)).astype(np.float32)


def write_prompts(path, lines) -> str:
  with open(path, "wb") as f:
    for line in lines:
      f.write(
        line
        if isinstance(line, bytes)
        else (json.dumps(line) if not isinstance(line, str) else line).encode()
      )
      f.write(b"\n")
  return str(path)


def run(generator, prompts, out_dir, **kwargs):
  return bi.run_inference(generator, prompts, str(out_dir), log=io.StringIO(), **kwargs)


def manifest_ids(out_dir) -> list[str]:
  ids = []
  for path in bi.manifest_files(str(out_dir)):
    with open(path) as f:
      ids += [json.loads(line)["id"] for line in f]
  return ids


def errors(path) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]


PLAIN = {"id": "calm", "text": "a calm violin melody", "seconds": 2}
STORY = {
  "id": "story",
  "segments": [{"text": "a quiet intro", "seconds": 1}, {"text": "a loud finale", "seconds": 1.5}],
}


# -- parsing ---------------------------------------------------------------------------------------


def test_valid_lines_parse_with_stable_default_seeds(tmp_path):
  path = write_prompts(
    tmp_path / "p.jsonl",
    [
      PLAIN,
      "",
      {"id": 7, "text": "folk", "seconds": 1.5, "seed": 3},
      STORY,
      {**STORY, "id": "titled", "text": "a story", "seconds": 2.5},
    ],
  )
  prompts, bad = pr.parse_prompts(path)
  assert bad == []
  assert [p.id for p in prompts] == ["calm", "7", "story", "titled"]
  assert [p.source for p in prompts] == [f"{path}:{n}" for n in (1, 3, 4, 5)]
  calm, folk, story, titled = prompts
  assert calm.segments == (StorySegment("a calm violin melody", 2.0),)
  assert calm.seed == pr.stable_seed("calm") and folk.seed == 3
  assert story.segments == (StorySegment("a quiet intro", 1.0), StorySegment("a loud finale", 1.5))
  assert story.seconds == 2.5 and story.text is None and titled.text == "a story"
  assert story.request().segments == story.segments and story.request().seed == story.seed


def test_default_seed_is_a_stable_uint32_hash_of_the_id():
  seeds = [pr.stable_seed(f"prompt-{i}") for i in range(200)]
  assert seeds == [pr.stable_seed(f"prompt-{i}") for i in range(200)]
  assert all(0 <= s < 2**32 for s in seeds) and len(set(seeds)) == 200


@pytest.mark.parametrize(
  "line, reason",
  [
    ("{not json", "invalid JSON"),
    (b'{"id": "x", "text": "caf\xe9", "seconds": 1}', "not UTF-8"),
    ('["id", "x"]', "must be a JSON object"),
    ({"text": "t", "seconds": 1}, "missing 'id'"),
    ({"id": "x", "seconds": 1}, "missing ['text']"),
    ({"id": "x", "text": "t"}, "missing ['seconds']"),
    ({"id": "x", "text": "t", "seconds": 0}, "must be > 0"),
    ({"id": "x", "text": "t", "seconds": -2.5}, "must be > 0"),
    ({"id": "x", "text": "t", "seconds": 1e9}, "at most 3600"),
    ({"id": "x", "segments": [{"text": "t", "seconds": 3000}] * 2}, "more than 3600"),
    ({"id": "x", "text": "t", "seconds": "10"}, "finite number"),
    ({"id": "x", "text": "t", "seconds": True}, "finite number"),
    ('{"id": "x", "text": "t", "seconds": NaN}', "finite number"),
    ({"id": "x", "text": "  ", "seconds": 1}, "non-empty string"),
    ({"id": "", "text": "t", "seconds": 1}, "non-empty string"),
    ({"id": "a/b", "text": "t", "seconds": 1}, "cannot name a file"),
    ({"id": "..", "text": "t", "seconds": 1}, "cannot name a file"),
    ({"id": "x", "text": "t", "seconds": 1, "seed": -1}, "'seed' must be an integer"),
    ({"id": "x", "text": "t", "seconds": 1, "seed": 2**32}, "'seed' must be an integer"),
    ({"id": "x", "text": "t", "seconds": 1, "seed": 1.5}, "'seed' must be an integer"),
    ({"id": "x", "text": "t", "second": 1}, "unknown field(s) ['second']"),
    ({"id": "x", "segments": []}, "non-empty list"),
    ({"id": "x", "segments": [{"text": "t"}]}, "exactly 'text' and 'seconds'"),
    ({"id": "x", "segments": [{"text": "t", "seconds": 0}]}, "segments[0].seconds must be > 0"),
    ({**STORY, "id": "x", "seconds": 3}, "differs from the segments' sum"),
  ],
)
def test_a_bad_line_is_reported_with_file_line_and_the_others_go_on(tmp_path, line, reason):
  path = write_prompts(tmp_path / "p.jsonl", [PLAIN, line, STORY])
  prompts, bad = pr.parse_prompts(path)
  assert [p.id for p in prompts] == ["calm", "story"]
  assert len(bad) == 1 and bad[0].source == f"{path}:2", bad
  assert reason in bad[0].reason


def test_a_repeated_id_is_an_error_naming_the_first_line(tmp_path):
  path = write_prompts(tmp_path / "p.jsonl", [PLAIN, STORY, {**PLAIN, "seconds": 3}])
  prompts, bad = pr.parse_prompts(path)
  assert [p.id for p in prompts] == ["calm", "story"] and prompts[0].seconds == 2.0
  assert [(e.source, e.id) for e in bad] == [(f"{path}:3", "calm")]
  assert "duplicate id 'calm' (first on line 1)" in bad[0].reason


# -- sharding and batching -------------------------------------------------------------------------


def _prompts(n: int) -> list[pr.Prompt]:
  return [pr.Prompt(f"p{i}", (StorySegment("t", 1.0 + i % 3),), i, f"f:{i}") for i in range(n)]


@pytest.mark.parametrize("num_shards", [1, 2, 3, 8])
def test_shards_cover_every_prompt_exactly_once(num_shards):
  prompts = _prompts(50)
  shards = [pr.shard_prompts(prompts, i, num_shards) for i in range(num_shards)]
  ids = [p.id for shard in shards for p in shard]
  assert sorted(ids) == sorted(p.id for p in prompts) and len(ids) == len(set(ids))
  if num_shards > 1:
    assert all(shards), "every shard gets some of 50 prompts"


def test_a_prompts_shard_depends_on_its_id_alone():
  prompts = _prompts(40)
  edited = [prompts[-1]] + prompts[5:20] + _prompts(60)[40:]  # reordered, some removed, some added
  for shard_id in range(3):
    before = {p.id for p in pr.shard_prompts(prompts, shard_id, 3)}
    after = {p.id for p in pr.shard_prompts(edited, shard_id, 3)}
    assert before & {p.id for p in edited} == after & {p.id for p in prompts}
  with pytest.raises(ValueError, match="shard_id"):
    pr.shard_prompts(prompts, 3, 3)


def test_batches_hold_equal_durations_up_to_batch_size():
  prompts = _prompts(10)  # durations 1, 2, 3, 1, 2, 3, ...
  story = pr.Prompt("s", (StorySegment("a", 1.0), StorySegment("b", 1.0)), 0, "f:99")
  groups = pr.batches(prompts + [story], batch_size=3)
  assert [[p.id for p in b] for b in groups] == [
    ["p0", "p3", "p6"],
    ["p9"],
    ["p1", "p4", "p7"],
    ["p2", "p5", "p8"],
    ["s"],
  ]


# -- running, resuming -----------------------------------------------------------------------------


def _check_outputs(out_dir, prompts_path):
  """Every valid prompt is in the manifests exactly once, with its exact WAV."""
  prompts, _ = pr.parse_prompts(prompts_path)
  ids = manifest_ids(out_dir)
  assert sorted(ids) == sorted(p.id for p in prompts), ids
  for p in prompts:
    audio, rate = sf.read(bi.wav_path(str(out_dir), p.id), dtype="float32")
    assert rate == RATE and audio.shape == (int(round(p.seconds * RATE)),)
    np.testing.assert_allclose(audio, tone(p.seed, p.seconds), atol=1 / 2**15)


def test_run_writes_wavs_manifest_and_errors(tmp_path):
  prompts = write_prompts(
    tmp_path / "p.jsonl", [PLAIN, "oops", STORY, {**PLAIN, "id": "b", "seed": 5}]
  )
  generator = ToneGenerator()
  report = run(
    generator, prompts, tmp_path / "out", batch_size=4, run_info={"checkpoints": {"x": 1}}
  )
  assert (report.prompts, report.generated, report.failed, report.bad_lines) == (3, 3, 0, 1)
  assert not report.complete and report.audio_seconds == 6.5
  assert generator.calls == [[(2.0,), (2.0,)], [(1.0, 1.5)]]
  _check_outputs(tmp_path / "out", prompts)
  with open(tmp_path / "out" / "manifest.jsonl") as f:
    calm = json.loads(f.readline())
  assert calm["text"] == "a calm violin melody" and calm["seconds"] == 2.0
  assert calm["seed"] == pr.stable_seed("calm") and calm["samples"] == 48_000
  assert calm["source"] == f"{prompts}:1" and calm["checkpoints"] == {"x": 1}
  assert calm["timings"]["batch_size"] == 2 and set(calm["timings"]["stages_s"]) == {
    "semantic",
    "coarse",
    "fine",
    "audio_decode",
  }
  assert [e["source"] for e in errors(report.errors)] == [f"{prompts}:2"]


def test_a_killed_run_resumes_without_repeating_or_losing_a_prompt(tmp_path):
  lines = [{**PLAIN, "id": f"p{i}", "seconds": 1 + i % 2} for i in range(6)] + [STORY]
  prompts, out = write_prompts(tmp_path / "p.jsonl", lines), tmp_path / "out"
  with pytest.raises(_Crash):
    run(ToneGenerator(crash_on_call=2), prompts, out, batch_size=2)
  assert manifest_ids(out) == ["p0", "p2"]
  # What a SIGKILL can leave besides: a half-written manifest line, a WAV whose manifest line was
  # never written, a temporary WAV.
  with open(out / "manifest.jsonl", "a") as f:
    f.write('{"id": "p4", "text": "a calm')
  bi.audio_io.write_wav(out / "p1.wav", np.zeros(10), RATE)
  (out / ".p3.wav.abc123.tmp").write_bytes(b"partial")
  generator = ToneGenerator()
  report = run(generator, prompts, out, batch_size=2)
  assert (report.done_before, report.generated, report.failed) == (2, 5, 0)
  assert sorted(map(len, generator.calls)) == [1, 1, 1, 2]  # p4 / p1 p3 / p5 / the story
  _check_outputs(out, prompts)
  assert not (out / ".p3.wav.abc123.tmp").exists()
  again = ToneGenerator()
  report = run(again, prompts, out)
  assert again.calls == [] and (report.done_before, report.generated) == (7, 0) and report.complete


def test_shards_write_their_own_files_and_any_shard_count_resumes(tmp_path):
  lines = [{**PLAIN, "id": f"p{i}"} for i in range(9)] + ["bad"]
  prompts, out = write_prompts(tmp_path / "p.jsonl", lines), tmp_path / "out"
  reports = [run(ToneGenerator(), prompts, out, shard_id=i, num_shards=2) for i in range(2)]
  assert sorted(os.path.basename(r.manifest) for r in reports) == [
    "manifest.00000-of-00002.jsonl",
    "manifest.00001-of-00002.jsonl",
  ]
  assert sum(r.generated for r in reports) == 9 and all(r.generated for r in reports)
  assert [len(errors(r.errors)) for r in reports] == [1, 0]  # bad lines: shard 0 reports them
  _check_outputs(out, prompts)
  generator = ToneGenerator()
  assert run(generator, prompts, out, shard_id=0, num_shards=3).generated == 0
  assert generator.calls == []


def test_a_finished_id_asked_for_again_differently_is_an_error_not_a_rerun(tmp_path):
  out = tmp_path / "out"
  run(ToneGenerator(), write_prompts(tmp_path / "a.jsonl", [PLAIN, STORY]), out)
  changed = write_prompts(tmp_path / "b.jsonl", [{**PLAIN, "seed": 1}, STORY])
  generator = ToneGenerator()
  report = run(generator, changed, out)
  assert generator.calls == [] and (report.failed, report.done_before) == (1, 1)
  (error,) = errors(report.errors)
  assert error["id"] == "calm" and "seed" in error["reason"] and "new id" in error["reason"]


def test_failed_generations_are_reported_and_retried_next_run(tmp_path):
  lines = [
    {**PLAIN, "id": "nan", "seed": 1},
    {**PLAIN, "id": "short", "seed": 2},
    {**PLAIN, "id": "ok", "seed": 3},
  ]
  prompts, out = write_prompts(tmp_path / "p.jsonl", lines), tmp_path / "out"
  report = run(ToneGenerator(nan_seeds={1}, short_seeds={2}), prompts, out)
  assert (report.generated, report.failed) == (1, 2) and manifest_ids(out) == ["ok"]
  reasons = {e["id"]: e["reason"] for e in errors(report.errors)}
  assert "NaN" in reasons["nan"] and "expected (48000,)" in reasons["short"]
  assert not (out / "nan.wav").exists() and not (out / "short.wav").exists()
  report = run(ToneGenerator(), prompts, out)
  assert (report.generated, report.failed) == (2, 0) and errors(report.errors) == []
  _check_outputs(out, prompts)


def test_a_batch_the_pipeline_refuses_fails_alone(tmp_path):
  class Refuses(ToneGenerator):
    def generate(self, requests, progress=None):
      if requests[0].seconds == 3:
        raise ValueError("a continuation prompt must be shorter")
      return super().generate(requests, progress)

  prompts = write_prompts(tmp_path / "p.jsonl", [{**PLAIN, "seconds": 3}, {**PLAIN, "id": "b"}])
  report = run(Refuses(), prompts, tmp_path / "out")
  assert (report.generated, report.failed) == (1, 1) and manifest_ids(tmp_path / "out") == ["b"]
  assert "generation failed: a continuation" in errors(report.errors)[0]["reason"]


def test_progress_reports_an_eta_and_stage_lines(tmp_path):
  prompts = write_prompts(tmp_path / "p.jsonl", [PLAIN, {**PLAIN, "id": "b", "seconds": 4}])
  log = io.StringIO()
  bi.run_inference(ToneGenerator(), prompts, str(tmp_path / "out"), batch_size=1, log=log)
  text = log.getvalue()
  assert "2 to generate (6.0 audio-s)" in text and "fine     1/1 windows" in text
  assert "1/2 prompts" in text and "2.0/6.0 audio-s this run" in text and "ETA 0:" in text


def test_appender_drops_a_partial_last_line(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "te')
  appender = bi.JsonlAppender(str(path))
  appender.append({"id": "d"})
  assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a", "b", "d"]
