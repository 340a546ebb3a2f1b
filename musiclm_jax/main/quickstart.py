"""`musiclm-jax quickstart --out_dir runs/quickstart`: all of MusicLM on one laptop, from audio.

An orchestrator of the verbs a user runs at scale, each step printed as its shell command and run
in this process with the same gin files:

  1. render            a small real-music corpus (music21 scores through FluidSynth)
  2. build-data        its TFDS dataset
  3. train  x5         the tokenizers: the spectral codec, w2v-BERT + k-means, MuLan + its RVQ
  4. tokenize          the token cache of the stage tasks
  5. train  x3         the semantic, coarse and fine stage LMs
  6. infer             a few prompts (one a two-segment story) to WAVs
  7. spectrogram       a PNG of each WAV
  8. evaluate          the music against the held-out clips (FAD_musicnn, KLD, MCC, statistics)

then a summary table (each model's final loss, MuLan retrieval on held-out clips, codec
reconstruction distance, time per step, and one line on how far the music is from the held-out
clips) in OUT/summary.md and OUT/summary.json. A step whose
output already exists is skipped, so a rerun resumes (and a finished run only prints the summary).
`--size=ci` is the same pipeline, smaller, for the end-to-end test.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from musiclm_jax.main import cli, paths
from musiclm_jax.runtime.atomic import atomic_write_json

STAGES = ("semantic", "coarse", "fine")
NUM_COARSE_LEVELS = 4  # of the tiny spectral codec's 8 RVQ levels (paper: 4 of 12)
CODEC_LEVELS = 8  # gin/models/spectral_codec/tiny.gin: one fitting step per level
TOKENS_TASK = "musiclm_tokens_rendered_music"


@dataclasses.dataclass(frozen=True)
class Size:
  """How much data, how many steps and how much music the quickstart makes.

  The defaults are the `make quickstart` size: about 11 minutes on 2 idle CPU cores, plus the
  install (README, "Timing").
  """

  num_clips: int = 120
  clip_seconds: int = 10
  render_workers: int = 2
  # The spectral codec is fitted, not trained: one pass over the clips, PCA, k-means per level.
  codec_kmeans_iters: int = 20
  w2v_bert_steps: int = 1000
  semantic_clusters: int = 32
  mulan_steps: int = 1000
  mulan_batch: int = 16
  quantizer_steps: int = 200
  semantic_steps: int = 600
  coarse_steps: int = 300
  fine_steps: int = 600
  stage_batch: int = 16
  # The coarse and fine LMs' rate. The run file's (3e-3, which the semantic LM keeps: 0.56
  # held-out accuracy there, 0.47 at 3e-2) suits long runs; in 600 steps it leaves the coarse LM
  # at chance on held-out clips. Coarse, 300 steps, held-out accuracy (repeat-previous-frame
  # baseline 0.57): 0.09 at 3e-3, 0.46 at 1e-2, 0.53 at 3e-2; 600 steps at 3e-2 overfit the 96
  # training clips (0.48). The fine LM needs its 600: 0.07 (unigram oracle 0.06), 0.01 after 300
  # (README, "Design notes").
  acoustic_learning_rate: float = 3e-2
  prompt_seconds: int = 8  # each plain prompt; the story's two segments share as much
  # XLA's cheap compiles: for tiny step counts, where compiling is nearly all the time.
  fast_compiles: bool = False


SIZES = {
  "default": Size(),
  # The end-to-end test: every step runs, two optimizer steps each.
  "ci": Size(
    num_clips=12,
    clip_seconds=4,
    render_workers=1,
    codec_kmeans_iters=2,
    w2v_bert_steps=2,
    semantic_clusters=8,
    mulan_steps=2,
    mulan_batch=8,
    quantizer_steps=2,
    semantic_steps=2,
    coarse_steps=2,
    fine_steps=2,
    stage_batch=4,
    prompt_seconds=2,
    fast_compiles=True,
  ),
}

PROMPTS = (
  ("chorale", "A slow Bach chorale played by a string quartet, calm, in a major key."),
  ("fiddle", "A lively folk fiddle tune in a fast tempo, major key."),
  # Three more instruments the independent tagger knows, so that instrument adherence is an AUC
  # over seven prompt units rather than four.
  ("piano", "A gentle solo piano piece, slow and soft, in a minor key."),
  ("guitar", "A folk song played on an acoustic guitar at a medium tempo."),
  ("harpsichord", "A bright baroque dance played on a harpsichord."),
)
STORY = ("A gentle hymn on a church organ.", "A fast dance tune on the flute and piano.")


@dataclasses.dataclass(frozen=True)
class Step:
  """One verb invocation, and how to tell that its output already exists."""

  name: str
  argv: tuple[str, ...]  # verb, flags
  done: Callable[[], bool]

  def command(self) -> str:
    return "musiclm-jax " + " ".join(_shell_word(a) for a in self.argv)


def _shell_word(arg: str) -> str:
  """Shell-quoted; a gin string binding as the README writes it: `--gin.KEY="'value'"`."""
  key, _, value = arg.partition("=")
  if key.startswith("--gin.") and value.startswith("'") and not set(value) & set('"$`\\'):
    return f'{key}="{value}"'
  return shlex.quote(arg)


# -- when is a step done ----------------------------------------------------------------------


def _metrics(model_dir: str) -> dict:
  path = os.path.join(model_dir, "final_metrics.json")
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _trained(model_dir: str, steps: int) -> Callable[[], bool]:
  """Every training job writes final_metrics.json with its step after its last checkpoint."""
  return lambda: _metrics(model_dir).get("step", -1) >= steps


def _exists(*paths: str) -> Callable[[], bool]:
  return lambda: all(os.path.exists(p) for p in paths)


def _generated(music_dir: str, ids: Sequence[str]) -> Callable[[], bool]:
  def done() -> bool:
    from musiclm_jax.decoding import batch_inference

    return os.path.isdir(music_dir) and set(ids) <= set(batch_inference.read_manifests(music_dir))

  return done


# -- the plan ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where each step writes, under --out_dir."""

  out: str

  @property
  def rendered(self) -> str:
    return os.path.join(self.out, "data", "rendered")

  @property
  def tfds(self) -> str:
    return os.path.join(self.out, "data", "tfds")

  @property
  def tokenizers(self) -> str:
    return os.path.join(self.out, "tokenizers")

  @property
  def cache(self) -> str:
    return os.path.join(self.out, "token_cache")

  @property
  def music(self) -> str:
    return os.path.join(self.out, "music")

  @property
  def prompts(self) -> str:
    return os.path.join(self.out, "prompts.jsonl")

  @property
  def evaluation(self) -> str:
    return os.path.join(self.out, "evaluation.json")

  def tokenizer(self, piece: str) -> str:
    """piece: codec, w2v_bert, kmeans, mulan or mulan_quantizer (gin/tokenizers/bundle.gin)."""
    return os.path.join(self.tokenizers, piece)

  def stage(self, stage: str) -> str:
    return os.path.join(self.out, "stages", stage)


def _gin_str(name: str, value: str) -> str:
  return f"--gin.{name}='{value}'"


def _data_steps(at: Layout, size: Size) -> list[Step]:
  render = (
    f"--out_dir={at.rendered}",
    f"--num_clips={size.num_clips}",
    f"--clip_seconds={size.clip_seconds}",
    "--seed=0",
    f"--num_workers={size.render_workers}",
    "--eval_fraction=0.2",  # enough held-out clips for MuLan retrieval
  )
  build = ("--dataset=rendered_music", f"--manual_dir={at.rendered}", f"--data_dir={at.tfds}")
  built = os.path.join(at.tfds, "rendered_music", "24khz", "1.0.0", "dataset_info.json")
  return [
    Step("render", ("render", *render), _exists(os.path.join(at.rendered, "musiccaps.csv"))),
    Step("build-data", ("build-data", *build), _exists(built)),
  ]


def _train(model_gin: str | None, run_gin: str, model_dir: str, *flags: str) -> tuple[str, ...]:
  files = [f"--gin_file={model_gin}"] if model_gin else []
  files += [f"--gin_file={run_gin}", "--gin_file=gin/mesh/single_device.gin"]
  return ("train", *files, _gin_str("MODEL_DIR", model_dir), *flags)


def _codec_steps(at: Layout, size: Size) -> list[Step]:
  codec = at.tokenizer("codec")
  argv = _train(
    "gin/models/spectral_codec/tiny.gin",
    "gin/runs/spectral_codec_rendered.gin",
    codec,
    _gin_str("DATA_DIR", at.tfds),
    f"--gin.CROP_SAMPLES={size.clip_seconds * 24_000}",  # whole clips
    f"--gin.spectral_codec_job.FitConfig.kmeans_iters={size.codec_kmeans_iters}",
  )
  return [Step("codec", argv, _trained(codec, CODEC_LEVELS))]


def _semantic_steps(at: Layout, size: Size) -> list[Step]:
  w2v, kmeans = at.tokenizer("w2v_bert"), at.tokenizer("kmeans")
  data = _gin_str("DATA_DIR", at.tfds)
  w2v_argv = _train(
    "gin/models/w2v_bert/tiny.gin",
    "gin/runs/w2v_bert_rendered.gin",
    w2v,
    data,
    f"--gin.NUM_STEPS={size.w2v_bert_steps}",
    f"--gin.optimizers.OptimizerConfig.warmup_steps={max(1, size.w2v_bert_steps // 10)}",
  )
  kmeans_argv = _train(
    None,
    "gin/runs/semantic_kmeans_rendered.gin",
    kmeans,
    _gin_str("W2V_BERT_DIR", w2v),
    data,
    f"--gin.NUM_CLUSTERS={size.semantic_clusters}",
    f"--gin.CROP_SAMPLES={size.clip_seconds * 24_000}",  # whole clips
    # About one pass over the training clips (batches of 8): the audio batches repeat forever.
    f"--gin.MAX_BATCHES={max(1, round(size.num_clips * 0.8 / 8))}",
    "--gin.kmeans.KMeansConfig.init_samples=8192",
  )
  return [
    Step("w2v_bert", w2v_argv, _trained(w2v, size.w2v_bert_steps)),
    Step("kmeans", kmeans_argv, _exists(os.path.join(kmeans, "kmeans.npz"))),
  ]


def _mulan_steps(at: Layout, size: Size) -> list[Step]:
  mulan, quantizer = at.tokenizer("mulan"), at.tokenizer("mulan_quantizer")
  data = _gin_str("DATA_DIR", at.tfds)
  mulan_argv = _train(
    "gin/models/mulan/tiny.gin",
    "gin/runs/mulan_rendered.gin",
    mulan,
    data,
    f"--gin.NUM_STEPS={size.mulan_steps}",
    f"--gin.BATCH_SIZE={size.mulan_batch}",
    f"--gin.optimizers.OptimizerConfig.warmup_steps={max(1, size.mulan_steps // 10)}",
    f"--gin.mulan_train_job.train_mulan.eval_clip_seconds={float(size.clip_seconds)}",
  )
  quantizer_argv = _train(
    None,
    "gin/runs/mulan_quantizer_rendered.gin",
    quantizer,
    _gin_str("MULAN_DIR", mulan),
    data,
    f"--gin.NUM_STEPS={size.quantizer_steps}",
    "--gin.BATCH_SIZE=32",
    "--gin.CODEBOOK_SIZE=16",  # 12 levels (the paper's 12 tokens) of 16 codes
  )
  return [
    Step("mulan", mulan_argv, _trained(mulan, size.mulan_steps)),
    Step("mulan_quantizer", quantizer_argv, _trained(quantizer, size.quantizer_steps)),
  ]


def _token_flags(at: Layout) -> tuple[str, ...]:
  return (
    _gin_str("TOKENIZERS_DIR", at.tokenizers),
    f"--gin.NUM_COARSE_LEVELS={NUM_COARSE_LEVELS}",
  )


def _lm_steps(at: Layout, size: Size) -> list[Step]:
  flags = (*_token_flags(at), _gin_str("DATA_DIR", at.tfds), _gin_str("CACHE_DIR", at.cache))
  tokenize = (
    "tokenize",
    "--gin_file=gin/runs/tokenize_rendered.gin",
    *flags[:3],
    f"--tasks={TOKENS_TASK}",
    f"--output_cache_dir={at.cache}",
  )
  steps = [Step("tokenize", tokenize, _exists(os.path.join(at.cache, TOKENS_TASK, "COMPLETED")))]
  for stage in STAGES:
    num_steps, schedule = _stage_schedule(stage, size)
    argv = _train(
      f"gin/models/{stage}/tiny.gin",
      "gin/runs/stage_rendered.gin",
      at.stage(stage),
      *flags,
      f"--gin.NUM_STEPS={num_steps}",
      f"--gin.BATCH_SIZE={size.stage_batch}",
      *schedule,
    )
    steps.append(Step(stage, argv, _trained(at.stage(stage), num_steps)))
  return steps


def _stage_schedule(stage: str, size: Size) -> tuple[int, tuple[str, ...]]:
  """A stage LM's steps and learning-rate flags (the semantic LM keeps the run file's rate)."""
  if stage == "semantic":
    return size.semantic_steps, ()
  rate = f"--gin.optimizers.OptimizerConfig.learning_rate={size.acoustic_learning_rate}"
  return (size.coarse_steps if stage == "coarse" else size.fine_steps), (rate,)


def _prompts(size: Size) -> list[dict]:
  half = size.prompt_seconds / 2
  prompts = [{"id": i, "text": t, "seconds": size.prompt_seconds} for i, t in PROMPTS]
  segments = [{"text": text, "seconds": half} for text in STORY]
  return prompts + [{"id": "story", "segments": segments}]


def _music_steps(at: Layout, size: Size) -> list[Step]:
  ids = [p["id"] for p in _prompts(size)]
  infer = (
    "infer",
    "--gin_file=gin/runs/infer.gin",
    *_token_flags(at),
    *[_gin_str(f"{stage.upper()}_DIR", at.stage(stage)) for stage in STAGES],
    f"--prompts={at.prompts}",
    f"--out_dir={at.music}",
  )
  wavs = [os.path.join(at.music, f"{i}.wav") for i in ids]
  pngs = [os.path.join(at.music, f"{i}.png") for i in ids]
  evaluate = (
    "evaluate",
    f"--generated_dir={at.music}",
    f"--reference_dir={at.rendered}",
    "--reference_split=eval",
    f"--prompts={at.prompts}",
    f"--tokenizers_dir={at.tokenizers}",
    f"--out={at.evaluation}",
  )
  return [
    Step("infer", infer, _generated(at.music, ids)),
    Step("spectrogram", ("spectrogram", *wavs, f"--out_dir={at.music}"), _exists(*pngs)),
    Step("evaluate", evaluate, _exists(at.evaluation)),
  ]


def plan(out_dir: str, size: Size) -> list[Step]:
  """Every step of the quickstart, in order."""
  at = Layout(out_dir)
  return [
    *_data_steps(at, size),
    *_codec_steps(at, size),
    *_semantic_steps(at, size),
    *_mulan_steps(at, size),
    *_lm_steps(at, size),
    *_music_steps(at, size),
  ]


# -- running ----------------------------------------------------------------------------------


def _claim(out_dir: str, name: str, size: Size) -> None:
  """Records the size in OUT/size.json; refuses an out_dir made at another size."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "size.json")
  wanted = {"size": name, **dataclasses.asdict(size)}
  if os.path.exists(path) and _read_json(path) != wanted:
    raise SystemExit(
      f"musiclm-jax quickstart: {out_dir} holds a quickstart of another size ({path}); "
      "use a new --out_dir."
    )
  _write_json(path, wanted)


def _read_json(path: str, default=None):
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, value) -> None:
  atomic_write_json(path, value)


def run_step(index: int, total: int, step: Step) -> dict | None:
  """Runs one step unless its output exists; returns its wall and CPU seconds (None: skipped).

  CPU seconds (all threads) say what the step costs on an idle machine when the wall clock is
  shared with other work.
  """
  print(f"\n[{index}/{total}] {step.name}\n$ {step.command()}", flush=True)
  if step.done():
    print(f"[{index}/{total}] {step.name}: skipped, its output exists", flush=True)
    return None
  wall, cpu = time.perf_counter(), time.process_time()
  code = cli.main(list(step.argv))
  seconds = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
  if code != 0 or not step.done():
    raise SystemExit(
      f"musiclm-jax quickstart: step {step.name} failed (exit {code}); fix the cause and "
      "rerun the same command to resume."
    )
  print(f"[{index}/{total}] {step.name}: done in {seconds['wall']:.0f} s", flush=True)
  return seconds


@contextlib.contextmanager
def _compiles(out_dir: str, size: Size) -> Iterator[None]:
  """A compilation cache in OUT (unless the caller chose one), so that a rerun after a kill
  compiles nothing twice; XLA's cheap compiles for the ci size. Restores both settings."""
  import jax

  settings = {
    "jax_compilation_cache_dir": jax.config.values["jax_compilation_cache_dir"]
    or os.path.join(out_dir, "xla_cache"),
    "jax_disable_most_optimizations": size.fast_compiles
    or jax.config.values["jax_disable_most_optimizations"],
  }
  previous = {name: jax.config.values[name] for name in settings}
  for name, value in settings.items():
    jax.config.update(name, value)
  try:
    yield
  finally:
    for name, value in previous.items():
      jax.config.update(name, value)


# -- the summary ------------------------------------------------------------------------------


def _fmt(value, digits: int = 3) -> str:
  return "—" if value is None else f"{value:.{digits}f}"


def _model_rows(at: Layout, size: Size) -> list[list[str]]:
  """model, steps, final loss, held-out result, time per step."""
  codec = _metrics(at.tokenizer("codec"))
  mulan = _metrics(at.tokenizer("mulan"))
  rvq = _metrics(at.tokenizer("mulan_quantizer"))
  w2v = _metrics(at.tokenizer("w2v_bert"))
  rows = [
    [
      "spectral codec",
      codec.get("step"),
      f"residual {_fmt(codec.get(f'residual_fraction_L{CODEC_LEVELS}'))}",
      f"chroma {_fmt(codec.get('eval/chroma_cosine_all_levels'))}, mel distance "
      f"{_fmt(codec.get('eval/mel_distance_all_levels'))} (1 level "
      f"{_fmt(codec.get('eval/mel_distance_1_level'))}, silence "
      f"{_fmt(codec.get('eval/mel_distance_silence'))})",
      codec["fit_seconds"] / CODEC_LEVELS if "fit_seconds" in codec else None,
    ],
    [
      "w2v-BERT",
      w2v.get("step"),
      _fmt(w2v.get("loss")),
      f"loss {_fmt(w2v.get('eval/loss'))}",
      w2v.get("step_time_s"),
    ],
    ["semantic k-means", None, "—", f"{size.semantic_clusters} clusters", None],
    [
      "MuLan",
      mulan.get("step"),
      _fmt(mulan.get("loss")),
      f"text→audio R@1 {_fmt(mulan.get('eval/recall@1'), 2)} (chance "
      f"{_fmt(mulan.get('eval/chance@1'), 2)}), R@5 {_fmt(mulan.get('eval/recall@5'), 2)} "
      f"(chance {_fmt(mulan.get('eval/chance@5'), 2)}), MCC {_fmt(mulan.get('eval/mcc'), 2)}",
      mulan.get("step_time_s"),
    ],
    ["MuLan RVQ", rvq.get("step"), f"rel. error {_fmt(rvq.get('relative_error'))}", "—", None],
  ]
  for stage in STAGES:
    lm = _metrics(at.stage(stage))
    held_out = (
      f"loss {_fmt(lm.get('eval/loss'))}, accuracy {_fmt(lm.get('eval/accuracy'))} "
      f"(unigram {_fmt(lm.get('eval/unigram_accuracy'))}, "
      f"repeat previous frame {_fmt(lm.get('eval/repeat_accuracy'))})"
    )
    if "eval/swapped_conditioning_loss" in lm:  # equal to the loss: the MuLan tokens go unused
      held_out += f"; loss with swapped MuLan tokens {_fmt(lm['eval/swapped_conditioning_loss'])}"
    rows.append(
      [f"{stage} LM", lm.get("step"), _fmt(lm.get("loss")), held_out, lm.get("step_time_s")]
    )
  for row in rows:
    row[1] = "—" if row[1] is None else str(row[1])
    row[4] = "—" if row[4] is None else f"{row[4]:.3f} s"
  return rows


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def _music_rows(at: Layout, size: Size) -> list[list[str]]:
  rows = []
  for prompt in _prompts(size):
    text = prompt.get("text") or " → ".join(s["text"] for s in prompt["segments"])
    seconds = prompt.get("seconds") or sum(s["seconds"] for s in prompt["segments"])
    wav = os.path.join(at.music, f"{prompt['id']}.wav")
    rows.append([prompt["id"], text, f"{seconds:g}", wav, wav[: -len(".wav")] + ".png"])
  return rows


def _music_verdict(at: Layout) -> str:
  """One line: the generated music's scores beside the held-out clips' own and white noise's."""
  report = _read_json(at.evaluation)
  if report is None:
    return "Not evaluated yet."
  scale = report.get("scale", {})
  halves, noise = scale.get("reference_halves", {}), scale.get("white_noise", {})
  stats = report.get("statistics", {})
  generated, reference = stats.get("generated", {}), stats.get("reference", {})
  same = scale.get("reference_same_count", {})  # as many held-out clips as were generated
  parts = [
    f"FAD_musicnn {_fmt(report.get('fad_musicnn'))} ({same.get('num_clips', '?')} held-out clips "
    f"{_fmt(same.get('fad_musicnn'))}, held-out halves {_fmt(halves.get('fad_musicnn'))}, "
    f"white noise {_fmt(noise.get('fad_musicnn'))})",
    f"KLD {_fmt(report.get('kld_musicnn'))} (noise {_fmt(noise.get('kld_musicnn'))})",
  ]
  captions = scale.get("reference_captions", {})  # held-out clips under their own captions
  if "mcc" in report:
    parts.append(
      f"MCC {_fmt(report['mcc'])} (chance {_fmt(report.get('mcc_chance'))}, "
      f"held-out clips {_fmt(captions.get('mcc'))})"
    )
  if "instrument_auc" in report:
    parts.append(
      f"instrument AUC {_fmt(report['instrument_auc'])} (chance 0.5, 95% of shuffled pairings "
      f"below {_fmt(report.get('instrument_auc_shuffled_p95'))}, held-out clips "
      f"{_fmt(captions.get('instrument_auc'))})"
    )
  for key, label in (("chroma_change_per_s", "chroma change/s"), ("tonal_fraction", "tonal")):
    parts.append(f"{label} {_fmt(generated.get(key))} (held-out {_fmt(reference.get(key))})")
  return "Music vs held-out clips: " + "; ".join(parts) + f". Details: {at.evaluation}"


def _step_rows(steps: Sequence[Step], ran: dict, seconds: dict) -> list[list[str]]:
  rows = []
  for step in steps:
    took = seconds.get(step.name, {})
    status = "ran" if ran[step.name] is not None else "skipped"
    rows.append([step.name, status, _fmt(took.get("wall"), 0), _fmt(took.get("cpu"), 0)])
  return rows


def summarize(out_dir: str, size: Size, steps: Sequence[Step], ran: dict, total: float) -> str:
  """Writes OUT/summary.md and OUT/summary.json; returns the markdown.

  Args:
    ran: step name → its seconds in this run, or None when it was skipped.
    total: wall seconds of this run.
  """
  at = Layout(out_dir)
  seconds = _read_json(os.path.join(out_dir, "step_seconds.json"), {})
  models, music = _model_rows(at, size), _music_rows(at, size)
  step_rows = _step_rows(steps, ran, seconds)
  markdown = "\n\n".join(
    [
      f"# musiclm-jax quickstart: {out_dir}",
      _table(["model", "steps", "final train loss", "held out", "time per step"], models),
      _table(["id", "prompt", "seconds", "wav", "spectrogram"], music),
      _music_verdict(at),
      _table(["step", "this run", "wall s (when it ran)", "CPU s"], step_rows)
      + f"\n\nThis run: {total:.0f} s.",
      "Equivalent commands:\n\n```bash\n" + "\n".join(s.command() for s in steps) + "\n```",
    ]
  )
  with open(os.path.join(out_dir, "summary.md"), "w") as f:
    f.write(markdown + "\n")
  summary = {
    "models": [dict(zip(["model", "steps", "loss", "held_out", "step_time"], r)) for r in models],
    "music": [dict(zip(["id", "text", "seconds", "wav", "png"], r)) for r in music],
    "evaluation": _read_json(at.evaluation),
    "steps": {r[0]: {"status": r[1], **seconds.get(r[0], {})} for r in step_rows},
    "commands": [s.command() for s in steps],
    "seconds": total,
  }
  _write_json(os.path.join(out_dir, "summary.json"), summary)
  return markdown


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(
    prog="musiclm-jax quickstart",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="example:\n  musiclm-jax quickstart --out_dir=runs/quickstart",
  )
  parser.add_argument("--out_dir", default="runs/quickstart")
  parser.add_argument("--size", choices=sorted(SIZES), default="default")
  args = parser.parse_args(argv)
  paths.check_output_dir(args.out_dir, "--out_dir")
  size = SIZES[args.size]
  # Absolute: orbax refuses relative checkpoint paths, and the printed commands then work from
  # any directory (gin files are found relative to the repository).
  out_dir = os.path.abspath(args.out_dir)
  _claim(out_dir, args.size, size)
  with open(Layout(out_dir).prompts, "w") as f:
    f.writelines(json.dumps(p) + "\n" for p in _prompts(size))
  steps = plan(out_dir, size)
  seconds_path = os.path.join(out_dir, "step_seconds.json")
  start, ran = time.perf_counter(), {}
  with _compiles(out_dir, size):
    for index, step in enumerate(steps, 1):
      ran[step.name] = run_step(index, len(steps), step)
      if ran[step.name] is not None:
        _write_json(seconds_path, {**_read_json(seconds_path, {}), step.name: ran[step.name]})
  print("\n" + summarize(out_dir, size, steps, ran, time.perf_counter() - start))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
