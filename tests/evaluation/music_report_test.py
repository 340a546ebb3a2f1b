"""`evaluate_folders` on rendered music: identical folders score perfectly, white noise scores
worse than other music, and every number comes with its scale. Real packaged models throughout."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from musiclm_jax.data import audio_io
from musiclm_jax.data.render.corpus import render_corpus
from musiclm_jax.evaluation import music_report

RATE = 24_000


def _render(directory, seed: int):
  render_corpus(str(directory), num_clips=6, clip_seconds=4.0, seed=seed, progress=False)
  return sorted((directory / "audio").glob("*.wav"))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
  """Reports of the same clips, of other music and of white noise against one reference."""
  root = tmp_path_factory.mktemp("music_report")
  reference = _render(root / "reference", seed=5)  # WAVs with their MIDI beside them
  other = _render(root / "other", seed=6)
  folders = {name: root / name for name in ("same", "other_music", "noise")}
  for folder in folders.values():
    folder.mkdir()
  rng = np.random.default_rng(0)
  for ref, oth in zip(reference, other):
    shutil.copy(ref, folders["same"] / ref.name)
    shutil.copy(oth, folders["other_music"] / ref.name)  # other music under the reference's name
    noise = (0.1 * rng.standard_normal(4 * RATE)).astype(np.float32)
    audio_io.write_wav(folders["noise"] / ref.name, noise, RATE)
  reference_dir = str(root / "reference" / "audio")
  return {
    name: music_report.evaluate_folders(str(folder), reference_dir)
    for name, folder in folders.items()
  }


def test_identical_folders_score_perfectly(reports):
  same = reports["same"]
  assert same["num_paired"] == same["num_generated"] == 6
  assert same["fad_musicnn"] == pytest.approx(0.0, abs=1e-4)
  assert same["kld_musicnn"] == pytest.approx(0.0, abs=1e-6)
  assert same["chroma_cosine"] == pytest.approx(1.0, abs=1e-6)
  assert same["note_clips"] == 6 and same["note_f1"] > 0.3  # the transcriber's ceiling here


def test_white_noise_scores_worse_than_other_music(reports):
  music, noise = reports["other_music"], reports["noise"]
  assert noise["fad_musicnn"] > music["fad_musicnn"] > 0
  assert noise["kld_musicnn"] > music["kld_musicnn"] > 0
  assert noise["kld_musicnn_sets"] > music["kld_musicnn_sets"]
  assert noise["chroma_correlation"] < music["chroma_correlation"]
  assert noise["note_f1"] <= music["note_f1"] < reports["same"]["note_f1"]
  stats = noise["statistics"]
  assert stats["generated"]["tonal_fraction"] < stats["reference"]["tonal_fraction"]


def test_every_number_has_its_scale(reports):
  scale = reports["other_music"]["scale"]
  assert set(scale) == {"reference_halves", "white_noise", "shuffled_pairing"}
  halves, noise = scale["reference_halves"], scale["white_noise"]
  assert 0 <= halves["fad_musicnn"] < noise["fad_musicnn"]
  # The white-noise scale is the noise report's own number: one noise, seeded.
  assert noise["fad_musicnn"] == pytest.approx(reports["noise"]["fad_musicnn"], rel=0.5)
  for key in ("chroma_cosine", "kld_musicnn", "note_f1"):
    assert math.isfinite(scale["shuffled_pairing"][key]), key
  same_scale = reports["same"]["scale"]["shuffled_pairing"]
  assert same_scale["chroma_cosine"] < reports["same"]["chroma_cosine"]  # chance is below a match


def test_shuffled_pairs_are_a_derangement():
  pairs = [(i, i) for i in range(7)]
  shuffled = music_report.shuffled(pairs, seed=3)
  assert sorted(g for g, _ in shuffled) == list(range(7))
  assert sorted(r for _, r in shuffled) == list(range(7))
  assert all(g != r for g, r in shuffled)


def test_prompts_name_instruments_by_their_tags():
  labels = ["guitar", "strings", "violin", "piano", "flute", "harp", "harpsichord"]
  named = music_report.named_instruments
  assert named("A slow Bach chorale played by a string quartet", labels) == {"strings"}
  assert named("A lively folk fiddle tune", labels) == {"violin"}
  assert named("A dance tune on the flute and piano.", labels) == {"flute", "piano"}
  assert named("harpsichord", labels) == {"harpsichord"}  # not 'harp'


def test_instrument_auc_comes_with_its_shuffled_pairing_spread():
  """Seven units, one or two per tag: a perfect generator scores 1.0; shuffled pairings of the same
  clips spread far above 0.5, and the report says how far (its 95th percentile)."""
  labels = ["guitar", "strings", "violin", "piano", "flute", "harpsichord"]
  texts = ["string quartet", "fiddle", "piano", "guitar", "harpsichord", "organ", "flute and piano"]
  units = [music_report.PromptUnit(f"u{i}", t, np.zeros(10)) for i, t in enumerate(texts)]
  rng = np.random.default_rng(1)

  def tags_of(text):  # the tagger hears exactly what the text names, plus noise
    named = music_report.named_instruments(text, labels)
    scores = [0.9 if label in named else 0.1 for label in labels]
    return (np.array(scores) + rng.uniform(0, 0.05, len(labels)))[None, :]

  perfect = music_report.instrument_adherence(units, [tags_of(t) for t in texts], labels)
  assert perfect["instrument_auc"] == 1.0
  assert 0.6 < perfect["instrument_auc_shuffled_p95"] < 1.0, perfect
  unrelated = [rng.uniform(0, 1, (1, len(labels))) for _ in texts]
  report = music_report.instrument_adherence(units, unrelated, labels)
  assert report["instrument_auc"] < report["instrument_auc_shuffled_p95"]


def test_a_captioned_reference_scores_its_own_captions(tmp_path):
  """With R a captioned corpus, `scale.reference_captions` is R under its own captions: a folder
  of R's clips prompted with those captions scores exactly that."""
  import csv
  import json

  render_corpus(str(tmp_path / "corpus"), num_clips=8, clip_seconds=4.0, seed=7, progress=False)
  with open(tmp_path / "corpus" / "musiccaps.csv", newline="") as f:
    rows = [row for row in csv.DictReader(f) if row["split"] == "train"]
  generated = tmp_path / "generated"
  generated.mkdir()
  with open(tmp_path / "prompts.jsonl", "w") as f:
    for row in rows:
      shutil.copy(tmp_path / "corpus" / "audio" / f"{row['ytid']}.wav", generated)
      f.write(json.dumps({"id": row["ytid"], "text": row["caption"], "seconds": 4}) + "\n")
  report = music_report.evaluate_folders(
    str(generated),
    str(tmp_path / "corpus"),
    prompts_path=str(tmp_path / "prompts.jsonl"),
    reference_split="train",
  )
  ceiling = report["scale"]["reference_captions"]
  assert "instrument_auc" in report, report  # the seed's captions name tagger instruments
  assert ceiling["instrument_auc"] == pytest.approx(report["instrument_auc"])


def test_same_count_reference_shows_fad_growing_as_sets_shrink():
  """Clips drawn from one distribution: a set of 2 scores a far larger FAD than a set of 12
  against the rest, which is why G's FAD is read against as many reference clips as G has."""
  from musiclm_jax.evaluation.musicnn import TaggerOutput

  rng = np.random.default_rng(0)

  def clip():
    tags = rng.uniform(0.1, 0.9, (3, 50)).astype(np.float32)
    embeddings = rng.standard_normal((3, 8)).astype(np.float32)
    return TaggerOutput(tags, embeddings, np.zeros((3, 1), np.float32))

  reference = [clip() for _ in range(24)]
  two = music_report.same_count_reference(reference, 2, seed=0)
  twelve = music_report.same_count_reference(reference, 12, seed=0)
  assert two["num_clips"] == 2 and twelve["num_clips"] == 12
  assert two["fad_musicnn"] > 3 * twelve["fad_musicnn"] > 0
  assert two["fad_musicnn_std"] > 0
  assert music_report.same_count_reference(reference, 24, seed=0) == {}  # nothing left over
