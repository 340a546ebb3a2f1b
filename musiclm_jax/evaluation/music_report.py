"""`evaluate_folders`: every number about generated music that DESIGN §10 asks for, with its scale.

Given a folder of generated clips G and one of reference clips R (held-out music), it reports:

- `fad_musicnn`: Fréchet distance between Gaussians fitted to musicnn's 200-d penultimate
  embeddings of the 3 s windows of G and of R. musicnn (MagnaTagATune) stands in for VGGish,
  whose weights no package ships: the number is *not* comparable with published FAD_VGG figures.
- `kld_musicnn`: per pair of same-named clips, KL(reference tags || generated tags), averaged (the
  paper's pairing); without pairs, the KL between the two sets' mean tag distributions, which is
  always reported as `kld_musicnn_sets`.
- `chroma_cosine` (same-named pairs): frame-wise chroma cosine of each generated clip with its
  reference (MusicGen's measure), `chroma_correlation` the same on frame-centred chroma (noise ~0),
  and `chroma_cosine_melody` / `chroma_correlation_melody` with the same-named melody prompt in M.
- `note_precision` / `note_recall` / `note_f1`: basic-pitch's transcription of each generated clip
  against `<name>.mid` in M or R (the renderer writes one per clip), onset within 50 ms and the
  same pitch.
- `mcc` / `mcc_chance` (prompts + tokenizers): MuLan cosine between each prompt's text and its
  clip (a story: each segment with its own stretch of audio), and the mean over mismatched pairs.
- `instrument_auc` (prompts): for prompts naming an instrument that is one of the tagger's tags,
  the AUC of that tag's score on the clips made for it against the clips made for other prompts;
  an independent judge of text adherence (MuLan scores itself in MCC). With few prompts it is
  noisy: `instrument_auc_shuffled_p95` is its 95th percentile over shuffled text–clip pairings.
- `statistics`: reference-free numbers of G and of R (chroma change per second, onset rate, tonal
  fraction).

`scale` holds the same metrics where they have a meaning for: the reference split in two halves
(the floor a generator of R's own distribution would reach at half the set size), as many
reference clips as G has against the rest (the same floor at G's set size: FAD grows as sets
shrink, so a few generated clips are read against this), white noise of
the generated clips' lengths and loudness in place of G, a shuffled pairing of G with R (the
chance level of the paired metrics), and R's clips with their own captions as prompts (when R is
a captioned corpus: the ceiling of `instrument_auc` and `mcc` with this tagger and MuLan).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from musiclm_jax.data import audio_io
from musiclm_jax.evaluation import distances, music_stats, notes
from musiclm_jax.evaluation.clip_folders import ClipFolder, corpus_captions, read_clip_folder
from musiclm_jax.evaluation.musicnn import MusicnnTagger, TaggerOutput, load_musicnn

# MagnaTagATune tags that name an instrument (or family) a prompt can ask for, and the words of a
# prompt that ask for it (whole words; a trailing 's' is optional).
INSTRUMENT_TAGS = {
  "guitar": ("guitar",),
  "strings": ("string", "string quartet", "string orchestra"),
  "drums": ("drum", "percussion"),
  "piano": ("piano",),
  "violin": ("violin", "fiddle"),
  "synth": ("synth", "synthesizer"),
  "harpsichord": ("harpsichord",),
  "flute": ("flute",),
  "sitar": ("sitar",),
  "harp": ("harp",),
  "cello": ("cello",),
  "choir": ("choir", "choral"),
}
STATISTICS = ("chroma_change_per_s", "onset_rate_per_s", "tonal_fraction")


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
  """How `evaluate_folders` reads and scores clips.

  Attributes:
    sample_rate: the rate every clip is loaded at (each model resamples from it).
    max_seconds: clips are cut here.
    onset_tolerance_s: a transcribed note counts when its onset is this close (mir_eval: 50 ms).
    noise_transcriptions: the white-noise scale of note F1 transcribes at most this many clips
      (basic-pitch is the slowest model here; the noise scale needs no more to be clear).
    seed: of the white noise and of the shuffled pairing.
  """

  sample_rate: int = audio_io.DEFAULT_SAMPLE_RATE
  max_seconds: float = 30.0
  onset_tolerance_s: float = 0.05
  noise_transcriptions: int = 16
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class PromptUnit:
  """A text and the audio made for it: a prompt's whole clip, or one story segment's stretch."""

  name: str
  text: str
  audio: np.ndarray


# -- musicnn: FAD and KLD ----------------------------------------------------------------------------


def _embeddings(outputs: Sequence[TaggerOutput]) -> np.ndarray:
  return np.concatenate([o.embeddings for o in outputs], axis=0)


def _set_kld(reference: Sequence[TaggerOutput], generated: Sequence[TaggerOutput]) -> float:
  mean_tags = lambda outs: np.concatenate([o.tags for o in outs]).mean(axis=0)  # noqa: E731
  return distances.kl_divergence(mean_tags(reference), mean_tags(generated))


def _paired_kld(
  reference: Sequence[TaggerOutput], generated: Sequence[TaggerOutput], pairs: Sequence[tuple]
) -> float:
  return float(
    np.mean([distances.kl_divergence(reference[r].tags, generated[g].tags) for g, r in pairs])
  )


def tagger_metrics(
  generated: Sequence[TaggerOutput], reference: Sequence[TaggerOutput], pairs: Sequence[tuple]
) -> dict[str, float]:
  """fad_musicnn, kld_musicnn_sets and (with pairs (g, r)) kld_musicnn_paired."""
  metrics = {
    "fad_musicnn": distances.frechet_distance(_embeddings(generated), _embeddings(reference)),
    "kld_musicnn_sets": _set_kld(reference, generated),
  }
  if pairs:
    metrics["kld_musicnn_paired"] = _paired_kld(reference, generated, pairs)
  return metrics


def same_count_reference(
  reference: Sequence[TaggerOutput], count: int, seed: int, draws: int = 5
) -> dict[str, float]:
  """FAD and set KLD of `count` reference clips against the other reference clips, averaged
  over `draws` seeded random splits (with FAD's spread): what real music of R's distribution
  scores as a set of as many clips as G has. FAD falls with the number of clips (a set of 3
  real clips scores far worse than one of 28), so G's FAD is read against this, not only
  against the halves. {} when R has no more than `count` clips."""
  if len(reference) <= count:
    return {}
  rng = np.random.default_rng(seed)
  fads, klds = [], []
  for _ in range(draws):
    order = rng.permutation(len(reference))
    subset = [reference[i] for i in order[:count]]
    rest = [reference[i] for i in order[count:]]
    metrics = tagger_metrics(subset, rest, [])
    fads.append(metrics["fad_musicnn"])
    klds.append(metrics["kld_musicnn_sets"])
  return {
    "num_clips": count,
    "fad_musicnn": float(np.mean(fads)),
    "fad_musicnn_std": float(np.std(fads)),
    "kld_musicnn_sets": float(np.mean(klds)),
  }


# -- chroma, notes and statistics --------------------------------------------------------------------


def paired_chroma(
  generated: Sequence[music_stats.ChromaFrames],
  other: Sequence[music_stats.ChromaFrames],
  pairs: Sequence[tuple],
) -> dict[str, float]:
  """Mean chroma cosine and correlation of generated[g] with other[o] over (g, o) pairs."""
  return {
    name: float(
      np.mean([music_stats.frame_cosine(generated[g], other[o], centred) for g, o in pairs])
    )
    for name, centred in (("chroma_cosine", False), ("chroma_correlation", True))
  }


def note_metrics(
  transcriptions: Sequence[np.ndarray], references: Sequence[np.ndarray], tolerance: float
) -> dict[str, float]:
  """Mean note precision / recall / F1 of transcriptions against reference notes, pair by pair."""
  scores = [
    notes.note_scores(t, r, onset_tolerance=tolerance) for t, r in zip(transcriptions, references)
  ]
  return {
    f"note_{k}": float(np.mean([s[k] for s in scores])) for k in ("precision", "recall", "f1")
  }


def mean_statistics(clips: Sequence[np.ndarray], rate: int) -> dict[str, float]:
  """The reference-free statistics averaged over clips."""
  per_clip = [music_stats.music_statistics(c, rate) for c in clips]
  return {k: float(np.mean([s[k] for s in per_clip])) for k in STATISTICS}


# -- prompts: MCC and instrument adherence ----------------------------------------------------------


def prompt_units(
  prompts_path: str, generated: ClipFolder
) -> tuple[list[PromptUnit], list[str], list[dict]]:
  """(a unit per prompt, or per story segment, whose clip `<id>` is in G; ids with no clip; the
  file's bad lines as {source, id, reason})."""
  from musiclm_jax.decoding.prompts import parse_prompts

  prompts, errors = parse_prompts(prompts_path)
  index, rate = generated.index(), generated.sample_rate
  units, missing = [], []
  for prompt in prompts:
    if prompt.id not in index:
      missing.append(prompt.id)
      continue
    audio = generated.audio[index[prompt.id]]
    start = 0
    for i, segment in enumerate(prompt.segments):
      stop = len(audio) if i == len(prompt.segments) - 1 else start + round(segment.seconds * rate)
      name = prompt.id if len(prompt.segments) == 1 else f"{prompt.id}/{i}"
      if stop > start:
        units.append(PromptUnit(name, segment.text, audio[start:stop]))
      start = stop
  return units, missing, [e.record() for e in errors]


def named_instruments(text: str, labels: Sequence[str]) -> set[str]:
  """The instrument tags a prompt names, e.g. {'violin'} for 'a folk fiddle tune'."""
  text = text.lower()
  return {
    tag
    for tag, words in INSTRUMENT_TAGS.items()
    if tag in labels and any(re.search(rf"\b{re.escape(w)}s?\b", text) for w in words)
  }


NUM_SHUFFLES = 1000  # pairings drawn for the instrument AUC's chance spread


def instrument_adherence(
  units: Sequence[PromptUnit], unit_tags: Sequence[np.ndarray], labels: Sequence[str]
) -> dict[str, Any]:
  """Macro AUC over named instrument tags (each needs a clip naming it and one that does not),
  and its spread under shuffled pairings of texts and clips.

  With a few prompt units the AUC of unrelated music is far from its mean of 0.5: each tag has one
  or two positive clips. `instrument_auc_shuffled_p95` is the 95th percentile of the macro AUC over
  `NUM_SHUFFLES` random pairings (seeded), the bar a generator must clear to be told from chance.
  """
  named = [named_instruments(u.text, labels) for u in units]
  tags = sorted(set().union(*named)) if named else []
  tags = [t for t in tags if not all(t in n for n in named)]
  if not tags:
    return {}
  scores = np.array([[clip[:, labels.index(t)].mean() for t in tags] for clip in unit_tags])
  positive = np.array([[t in n for t in tags] for n in named])
  per_tag = _per_tag_auc(scores, positive, tags)
  rng = np.random.default_rng(0)
  shuffled = [
    np.mean(list(_per_tag_auc(scores[rng.permutation(len(units))], positive, tags).values()))
    for _ in range(NUM_SHUFFLES)
  ]
  return {
    "instrument_auc": float(np.mean(list(per_tag.values()))),
    "instrument_auc_per_tag": per_tag,
    "instrument_auc_shuffled_p95": float(np.percentile(shuffled, 95)),
  }


def _per_tag_auc(scores: np.ndarray, positive: np.ndarray, tags: Sequence[str]) -> dict:
  """{tag: AUC of the clips naming it against the others} from [units, tags] scores and flags."""
  return {
    tag: distances.auc(scores[positive[:, j], j], scores[~positive[:, j], j])
    for j, tag in enumerate(tags)
  }


def mulan_consistency(
  units: Sequence[PromptUnit], tokenizers_dir: str, rate: int
) -> dict[str, float]:
  """MCC and its shuffled-pairing chance level with the MuLan of a tokenizer bundle."""
  from musiclm_jax.tokenizers.mulan.tokens import load_mulan_tokenizer

  mulan = load_mulan_tokenizer(
    os.path.join(tokenizers_dir, "mulan"), os.path.join(tokenizers_dir, "mulan_quantizer")
  )
  mulan_rate = mulan.config.audio.sample_rate
  audio = [audio_io.resample(u.audio, rate, mulan_rate) for u in units]
  audio_embeddings = np.zeros((len(units), mulan.config.embed_dim), np.float32)
  for length in sorted({len(a) for a in audio}):  # one compile per distinct length
    rows = [i for i, a in enumerate(audio) if len(a) == length]
    audio_embeddings[rows] = mulan.audio_embedding(np.stack([audio[i] for i in rows]))
  text_embeddings = mulan.text_embedding([u.text for u in units])
  mcc, chance = distances.paired_and_chance_cosine(text_embeddings, audio_embeddings)
  return {"mcc": mcc, "mcc_chance": chance}


# -- the report ---------------------------------------------------------------------------------------


def _pairs(generated: ClipFolder, other: ClipFolder | None) -> list[tuple[int, int]]:
  if other is None:
    return []
  index = other.index()
  return [(g, index[name]) for g, name in enumerate(generated.names) if name in index]


def shuffled(pairs: Sequence[tuple[int, int]], seed: int) -> list[tuple[int, int]]:
  """The same generated clips, each paired with another pair's partner (a seeded derangement)."""
  if len(pairs) < 2:
    return []
  rng = np.random.default_rng(seed)
  shift = int(rng.integers(1, len(pairs)))
  order = rng.permutation(len(pairs))
  return [
    (pairs[order[i]][0], pairs[order[(i + shift) % len(pairs)]][1]) for i in range(len(pairs))
  ]


def white_noise_like(clips: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
  """Gaussian noise with each clip's length and RMS (seeded)."""
  rng = np.random.default_rng(seed)
  out = []
  for clip in clips:
    rms = max(float(np.sqrt(np.mean(np.square(clip, dtype=np.float64)))), 1e-3)
    out.append((rng.standard_normal(len(clip)) * rms).astype(np.float32))
  return out


def _midi_for(name: str, folders: Sequence[ClipFolder | None]) -> str | None:
  for folder in folders:
    if folder is not None:
      path = os.path.join(folder.directory, f"{name}.mid")
      if os.path.exists(path):
        return path
  return None


@dataclasses.dataclass
class _Context:
  """What the report's sections share: the clips, the tagger's outputs, the settings."""

  generated: ClipFolder
  reference: ClipFolder
  melody: ClipFolder | None
  tagger: MusicnnTagger
  generated_tags: list[TaggerOutput]
  reference_tags: list[TaggerOutput]
  noise: list[np.ndarray]
  noise_tags: list[TaggerOutput]
  settings: EvaluationSettings
  log: Callable[[str], None]

  @property
  def rate(self) -> int:
    return self.generated.sample_rate


def _tagger_section(c: _Context) -> tuple[dict, dict]:
  pairs = _pairs(c.generated, c.reference)
  report = tagger_metrics(c.generated_tags, c.reference_tags, pairs)
  report["kld_musicnn"] = report.get("kld_musicnn_paired", report["kld_musicnn_sets"])
  half_a, half_b = c.reference_tags[0::2], c.reference_tags[1::2]
  scale: dict[str, dict] = {"reference_halves": {}, "white_noise": {}, "shuffled_pairing": {}}
  if half_b:
    scale["reference_halves"] = tagger_metrics(half_a, half_b, [])
  count = len(c.generated_tags)
  scale["reference_same_count"] = same_count_reference(c.reference_tags, count, c.settings.seed)
  noise = tagger_metrics(c.noise_tags, c.reference_tags, pairs)
  noise["kld_musicnn"] = noise.get("kld_musicnn_paired", noise["kld_musicnn_sets"])
  scale["white_noise"] = noise
  if pairs:
    chance = _paired_kld(c.reference_tags, c.generated_tags, shuffled(pairs, c.settings.seed))
    scale["shuffled_pairing"]["kld_musicnn"] = chance
  return report, scale


def _suffixed(metrics: dict[str, float], suffix: str) -> dict[str, float]:
  return {k + suffix: v for k, v in metrics.items()}


def _chroma_section(c: _Context) -> tuple[dict, dict]:
  report: dict[str, float] = {}
  scale: dict[str, dict] = {"white_noise": {}, "shuffled_pairing": {}}
  frames = lambda clips: [music_stats.chroma_frames(a, c.rate) for a in clips]  # noqa: E731
  generated, noise = frames(c.generated.audio), None
  for suffix, other in (("", c.reference), ("_melody", c.melody)):
    pairs = _pairs(c.generated, other)
    if not pairs:
      continue
    noise = noise or frames(c.noise)
    other_frames = frames(other.audio)
    rename = functools.partial(_suffixed, suffix=suffix)
    report.update(rename(paired_chroma(generated, other_frames, pairs)))
    scale["white_noise"].update(rename(paired_chroma(noise, other_frames, pairs)))
    chance = shuffled(pairs, c.settings.seed)
    if chance:
      scale["shuffled_pairing"].update(rename(paired_chroma(generated, other_frames, chance)))
  return report, scale


def _reference_notes(
  c: _Context, names_and_paths: Sequence[tuple[int, str]]
) -> tuple[list[tuple[int, np.ndarray]], list[dict[str, str]]]:
  """((generated index, notes) per readable MIDI, [{path, reason}] of the unreadable ones)."""
  found, unreadable = [], []
  for g, path in names_and_paths:
    try:
      found.append((g, notes.midi_notes(path)))
    except (notes.MidiError, OSError) as e:
      unreadable.append({"path": path, "reason": "unreadable_midi", "detail": str(e)})
  return found, unreadable


def _notes_section(c: _Context) -> tuple[dict, dict]:
  folders = (c.melody, c.reference)
  with_midi = [(g, _midi_for(n, folders)) for g, n in enumerate(c.generated.names)]
  found, unreadable = _reference_notes(c, [(g, p) for g, p in with_midi if p is not None])
  report: dict[str, Any] = {"note_skipped": unreadable} if unreadable else {}
  if not found:
    return report, {}
  c.log(f"transcribing {len(found)} generated clips with a MIDI reference (basic-pitch)")
  transcriber = notes.load_note_transcriber()
  references = [ref for _, ref in found]
  generated = [transcriber.transcribe(c.generated.audio[g], c.rate) for g, _ in found]
  tolerance = c.settings.onset_tolerance_s
  report.update(note_metrics(generated, references, tolerance), note_clips=len(found))
  scale: dict[str, dict] = {}
  few = found[: c.settings.noise_transcriptions]
  noise = [transcriber.transcribe(c.noise[g], c.rate) for g, _ in few]
  scale["white_noise"] = note_metrics(noise, references[: len(few)], tolerance)
  if len(references) > 1:
    rolled = references[1:] + references[:1]  # each clip against another clip's notes
    scale["shuffled_pairing"] = note_metrics(generated, rolled, tolerance)
  return report, scale


def _prompt_section(c: _Context, prompts_path: str, tokenizers_dir: str | None) -> dict:
  units, missing, bad_lines = prompt_units(prompts_path, c.generated)
  report: dict[str, Any] = {
    "prompt_units": len(units),
    "prompts_without_clip": missing,
    "prompt_errors": bad_lines,
  }
  if not units:
    return report
  index = c.generated.index()
  whole = {u.name: index[u.name] for u in units if u.name in index}
  to_tag = [u.audio for u in units if u.name not in whole]
  extra = iter(c.tagger.analyze(to_tag, c.rate)) if to_tag else iter(())
  unit_tags = [
    c.generated_tags[whole[u.name]].tags if u.name in whole else next(extra).tags for u in units
  ]
  report.update(instrument_adherence(units, unit_tags, list(c.tagger.labels)))
  if tokenizers_dir is not None:
    c.log(f"MuLan cycle consistency over {len(units)} prompt units")
    report.update(mulan_consistency(units, tokenizers_dir, c.rate))
  return report


def _reference_caption_scale(c: _Context, reference_dir: str, tokenizers_dir: str | None) -> dict:
  """The prompt metrics of R's clips under their own captions: what a generator that follows its
  prompts as well as the corpus does would score."""
  captions = corpus_captions(reference_dir)
  units = [
    PromptUnit(name, captions[name], audio)
    for name, audio in zip(c.reference.names, c.reference.audio)
    if captions.get(name)
  ]
  if not units:
    return {}
  index = c.reference.index()
  tags = [c.reference_tags[index[u.name]].tags for u in units]
  metrics = instrument_adherence(units, tags, list(c.tagger.labels))
  metrics.pop("instrument_auc_per_tag", None)
  if tokenizers_dir is not None:
    c.log(f"MuLan cycle consistency over {len(units)} captioned reference clips")
    metrics.update(mulan_consistency(units, tokenizers_dir, c.rate))
  return {"reference_captions": metrics}


def _merge_scale(*scales: dict) -> dict:
  merged: dict[str, dict] = {}
  for scale in scales:
    for name, metrics in scale.items():
      merged.setdefault(name, {}).update(metrics)
  return {name: metrics for name, metrics in merged.items() if metrics}


def evaluate_folders(
  generated_dir: str,
  reference_dir: str,
  *,
  prompts_path: str | None = None,
  tokenizers_dir: str | None = None,
  melody_dir: str | None = None,
  reference_split: str | None = None,
  settings: EvaluationSettings = EvaluationSettings(),
  log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
  """The evaluation report of G against R (see the module docstring); JSON-serialisable.

  Args:
    reference_split: R is a rendered corpus (musiccaps.csv + audio/); read this split of it.

  Raises:
    EmptyFolderError: G or R (or M) has no usable clip.
  """

  def read(directory: str, split: str | None = None) -> ClipFolder:
    return read_clip_folder(
      directory, settings.sample_rate, max_seconds=settings.max_seconds, split=split
    )

  generated, reference = read(generated_dir), read(reference_dir, reference_split)
  melody = read(melody_dir) if melody_dir else None
  log(f"{len(generated.names)} generated and {len(reference.names)} reference clips")
  tagger = load_musicnn()
  noise = white_noise_like(generated.audio, settings.seed)
  tagged = tagger.analyze([*generated.audio, *reference.audio, *noise], settings.sample_rate)
  n, m = len(generated.names), len(reference.names)
  c = _Context(
    generated, reference, melody, tagger, tagged[:n], tagged[n : n + m], noise, tagged[n + m :],
    settings, log,
  )  # fmt: skip
  report: dict[str, Any] = {
    "generated_dir": generated_dir,
    "reference_dir": reference_dir,
    "reference_split": reference_split,
    "num_generated": n,
    "num_reference": m,
    "num_paired": len(_pairs(generated, reference)),
  }
  tag_report, tag_scale = _tagger_section(c)
  chroma_report, chroma_scale = _chroma_section(c)
  note_report, note_scale = _notes_section(c)
  report.update(tag_report | chroma_report | note_report)
  prompt_scale = {}
  if prompts_path is not None:
    report.update(_prompt_section(c, prompts_path, tokenizers_dir))
    prompt_scale = _reference_caption_scale(c, reference_dir, tokenizers_dir)
  log("music statistics")
  noise_stats = mean_statistics(noise, c.rate)
  report["statistics"] = {
    "generated": mean_statistics(generated.audio, c.rate),
    "reference": mean_statistics(reference.audio, c.rate),
  }
  report["scale"] = _merge_scale(
    tag_scale, chroma_scale, note_scale, prompt_scale, {"white_noise": noise_stats}
  )
  skipped = [*generated.skipped, *reference.skipped, *(melody.skipped if melody else ())]
  report["skipped"] = [s.record() for s in skipped]
  return report
