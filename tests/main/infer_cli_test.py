"""`musiclm-jax infer` and `generate` with the real tiny pipeline: three stage LMs trained for two
steps on the token_world cache, the token_world tokenizers, a few seconds of audio per prompt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest
import soundfile as sf

import gin
from musiclm_jax.decoding import prompts
from musiclm_jax.main import cli
from tests import multiprocess

pytestmark = [
  pytest.mark.usefixtures("persistent_compilation_cache"),
  pytest.mark.xdist_group("token_world"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = ("semantic", "coarse", "fine")
PROMPTS = [
  {"id": "calm", "text": "a calm violin melody over soft piano", "seconds": 2},
  {
    "id": "story",
    "segments": [
      {"text": "a quiet chorale", "seconds": 1},
      {"text": "a lively dance", "seconds": 1},
    ],
  },
  '{"id": "broken", "text": "no closing brace", "seconds": 2',
  {"id": "folk", "text": "a fast folk tune", "seconds": 2, "seed": 3},
  {"id": "longer", "text": "a slow organ chorale", "seconds": 3},
]
VALID = {"calm": 2, "story": 2, "folk": 2, "longer": 3}


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)  # gin file paths are relative to the repository, as in the README
  yield
  gin.clear_config()


@pytest.fixture(scope="module")
def stage_dirs(token_world, tmp_path_factory):
  """The three tiny stage LMs, two steps each on a token cache of the token_world corpus."""
  root = tmp_path_factory.mktemp("infer_stages")
  world = [
    f"--gin.TOKENIZERS_DIR='{token_world.tokenizers_dir}'",
    f"--gin.DATA_DIR='{token_world.data_dir}'",
  ]
  cache = root / "cache"
  code = cli.main(
    [
      "tokenize",
      "--gin_file=gin/runs/tokenize_rendered.gin",
      *world,
      "--gin.TOKENIZE_BATCH_SIZE=4",
      "--tasks=musiclm_tokens_rendered_music",
      f"--output_cache_dir={cache}",
    ]
  )
  gin.clear_config()
  assert code == 0
  dirs = {}
  for stage in STAGES:
    dirs[stage] = root / stage
    code = cli.main(
      [
        "train",
        f"--gin_file=gin/models/{stage}/tiny.gin",
        "--gin_file=gin/runs/stage_rendered.gin",
        "--gin_file=gin/mesh/single_device.gin",
        f"--gin.MODEL_DIR='{dirs[stage]}'",
        *world,
        f"--gin.CACHE_DIR='{cache}'",
        "--gin.NUM_STEPS=2",
        "--gin.BATCH_SIZE=4",
        "--gin.NUM_COARSE_LEVELS=4",
      ]
    )
    gin.clear_config()
    assert code == 0
  return dirs


@pytest.fixture
def infer_flags(token_world, stage_dirs):
  return [
    "--gin_file=gin/runs/infer.gin",
    f"--gin.TOKENIZERS_DIR='{token_world.tokenizers_dir}'",
    "--gin.NUM_COARSE_LEVELS=4",
    *[f"--gin.{stage.upper()}_DIR='{stage_dirs[stage]}'" for stage in STAGES],
    "--gin.BATCH_BUCKETS=(2,)",  # one compiled program per plan, whatever the batch
  ]


@pytest.fixture
def prompts_file(tmp_path):
  path = tmp_path / "prompts.jsonl"
  path.write_text("".join((p if isinstance(p, str) else json.dumps(p)) + "\n" for p in PROMPTS))
  return path


def _manifest(out_dir) -> list[dict]:
  with open(out_dir / "manifest.jsonl") as f:
    return [json.loads(line) for line in f]


def _check_every_prompt_once(out_dir):
  ids = [record["id"] for record in _manifest(out_dir)]
  assert sorted(ids) == sorted(VALID), ids
  for prompt_id, seconds in VALID.items():
    info = sf.info(str(out_dir / f"{prompt_id}.wav"))
    assert (info.samplerate, info.frames) == (24_000, round(seconds * 24_000))


@pytest.mark.slow
def test_infer_writes_a_wav_and_a_manifest_line_per_prompt_and_reports_the_bad_line(
  infer_flags, prompts_file, tmp_path, capsys
):
  out = tmp_path / "out"
  code = cli.main(
    ["infer", *infer_flags, f"--prompts={prompts_file}", f"--out_dir={out}", "--batch_size=2"]
  )
  assert code == 1  # the bad line
  _check_every_prompt_once(out)
  with open(out / "errors.jsonl") as f:
    (error,) = [json.loads(line) for line in f]
  assert error["source"] == f"{prompts_file}:3" and "invalid JSON" in error["reason"]
  records = {r["id"]: r for r in _manifest(out)}
  assert records["story"]["segments"][1] == {"text": "a lively dance", "seconds": 1.0}
  assert records["folk"]["seed"] == 3 and records["calm"]["seed"] == prompts.stable_seed("calm")
  calm = records["calm"]
  assert [calm["sampling"][s]["temperature"] for s in STAGES] == [1.0, 0.95, 0.4]
  assert {s: calm["checkpoints"]["stages"][s]["step"] for s in STAGES} == dict.fromkeys(STAGES, 2)
  assert set(calm["checkpoints"]["tokenizers"]) == {
    "soundstream",
    "w2v_bert",
    "kmeans",
    "mulan",
    "mulan_quantizer",
  }
  assert calm["timings"]["batch_size"] == 2 and calm["timings"]["stages_s"]["fine"] > 0
  err = capsys.readouterr().err
  assert "ETA" in err and "fine" in err and (out / "config.gin").exists()


@pytest.mark.slow
def test_infer_killed_with_sigkill_finishes_on_rerun_without_duplicates(
  infer_flags, prompts_file, tmp_path, capsys
):
  out = tmp_path / "out"
  env = dict(
    os.environ,
    JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )
  argv = ["infer", *infer_flags, f"--prompts={prompts_file}", f"--out_dir={out}"]
  process = subprocess.Popen(
    [sys.executable, "-m", "musiclm_jax.main.cli", *argv, "--batch_size=1"],
    cwd=REPO_ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  try:
    deadline = time.monotonic() + 300
    while not (out / "manifest.jsonl").exists() or not (out / "manifest.jsonl").read_text():
      assert process.poll() is None and time.monotonic() < deadline, "no manifest line appeared"
      time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
  finally:
    process.kill()
    process.wait()
  assert 1 <= len((out / "manifest.jsonl").read_text().splitlines()) < len(VALID)
  code = cli.main([*argv, "--batch_size=2"])
  assert code == 1  # the bad line still
  report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert report["done_before"] >= 1 and report["done_before"] + report["generated"] == len(VALID)
  _check_every_prompt_once(out)


@pytest.mark.slow
def test_infer_on_two_processes_generates_every_prompt_exactly_once(
  infer_flags, prompts_file, tmp_path
):
  """`launch/local_multiprocess.sh 2`: two JAX processes (one CPU device each) share the prompts
  by a hash of their ids, each decoding on its own devices."""
  out, logs = tmp_path / "out", tmp_path / "logs"
  command = [sys.executable, "-m", "musiclm_jax.main.cli", "infer", *infer_flags]
  command += [f"--prompts={prompts_file}", f"--out_dir={out}", "--batch_size=2"]
  result = multiprocess.run_processes(
    2,
    1,
    logs,
    command,
    JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )
  # Process 0 reports the bad line (exit 1); process 1 has no bad line to report.
  assert result.returncode == 1, (logs / "process_0.log").read_text()[-3000:]
  with open(out / "errors.00000-of-00002.jsonl") as f:
    assert [json.loads(line)["source"] for line in f] == [f"{prompts_file}:3"]
  by_shard = {}
  for shard in (0, 1):
    path = out / f"manifest.{shard:05d}-of-00002.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    by_shard[shard] = sorted(json.loads(line)["id"] for line in lines)
  assert by_shard == {
    shard: sorted(i for i in VALID if prompts.shard_of(i, 2) == shard) for shard in (0, 1)
  }
  assert sorted(by_shard[0] + by_shard[1]) == sorted(VALID)
  for prompt_id, seconds in VALID.items():
    assert sf.info(str(out / f"{prompt_id}.wav")).frames == round(seconds * 24_000)


@pytest.mark.slow
def test_generate_writes_ten_seconds_and_a_spectrogram(infer_flags, tmp_path, capsys):
  wav, png = tmp_path / "out.wav", tmp_path / "out.png"
  code = cli.main(
    [
      "generate",
      "a calm violin melody over soft piano",
      "--seconds=10",
      f"--out={wav}",
      f"--spectrogram={png}",
      "--seed=1",
      *infer_flags,
    ]
  )
  assert code == 0
  info = sf.info(str(wav))
  assert (info.samplerate, info.frames) == (24_000, 240_000)
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  err = capsys.readouterr().err
  assert all(f"{stage}" in err for stage in STAGES) and "windows" in err


@pytest.mark.parametrize(
  "macro, stage_dir, message",
  [
    ("FINE_DIR", None, "No complete checkpoint in {tmp}/nowhere/checkpoints"),
    ("COARSE_DIR", "fine", "holds a fine stage LM, not a coarse one"),
  ],
)
def test_infer_with_a_missing_or_wrong_stage_lm_exits_2_naming_it(
  infer_flags, stage_dirs, prompts_file, tmp_path, capsys, macro, stage_dir, message
):
  flags = [f for f in infer_flags if not f.startswith(f"--gin.{macro}")]
  where = stage_dirs[stage_dir] if stage_dir else tmp_path / "nowhere"
  code = cli.main(
    [
      "infer",
      *flags,
      f"--gin.{macro}='{where}'",
      f"--prompts={prompts_file}",
      f"--out_dir={tmp_path / 'out'}",
    ]
  )
  assert code == 2 and message.format(tmp=tmp_path) in capsys.readouterr().err
  assert not (tmp_path / "out").exists()
