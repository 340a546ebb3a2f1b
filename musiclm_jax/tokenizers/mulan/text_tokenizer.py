"""Caption tokenizer of MuLan's text tower: Hugging Face `tokenizers` (Rust), no torch.

Two ways to get one:
- `TextTokenizer.from_file(".../tokenizer.json")`: a pretrained BERT-family tokenizer (its
  normaliser, e.g. lower-casing, and CLS/SEP template come from the file);
- `TextTokenizer.train_wordpiece(captions, vocab_size)`: a BERT-style WordPiece vocabulary
  learned from the captions (the from-scratch text tower), deterministic for a given corpus.

`encode_batch` truncates (keeping [CLS] ... [SEP]) and right-pads with the PAD id to a fixed
length, returning int32 ids and an int32 attention mask.
"""

from __future__ import annotations

import collections
import heapq
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
PREFIX = "##"  # marks a word-internal WordPiece token


def _checked(texts: Iterable[str]) -> Iterator[str]:
  """Yields the texts, raising on a non-string or empty / whitespace-only one (by index)."""
  for index, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(
        f"Caption {index} is a {type(text).__name__}, not a str; decode bytes (UTF-8) first."
      )
    if not text.strip():
      raise ValueError(f"Caption {index} is empty or whitespace-only: {text!r}.")
    yield text


def _symbols(word: str) -> list[str]:
  """A word as WordPiece's initial symbols: its first character, then "##"-prefixed ones."""
  return [word[0]] + [PREFIX + c for c in word[1:]]


def _merged(a: str, b: str) -> str:
  return a + b.removeprefix(PREFIX)


def learn_wordpiece_vocab(
  word_counts: Mapping[str, int], max_tokens: int, min_frequency: int = 2
) -> list[str]:
  """Learns WordPiece tokens by greedy pair merging (BPE-style), deterministically.

  Starts from every character seen (word-initial, and "##"-prefixed word-internal), then
  repeatedly merges the most frequent adjacent pair (ties: the lexicographically smallest pair)
  until `max_tokens` tokens are learned or no pair occurs `min_frequency` times.

  Args:
    word_counts: pre-tokenized (normalised) words and how often each occurs.
    max_tokens: the most tokens to return (the alphabet is kept whole even beyond it).
    min_frequency: smallest pair count worth a merge.
  Returns:
    The tokens: the sorted alphabet, then merged tokens in the order learned.
  """
  words = sorted(w for w in word_counts if w)
  counts = [word_counts[w] for w in words]
  pieces = [_symbols(w) for w in words]
  tokens = sorted({s for p in pieces for s in p})
  known = set(tokens)
  pair_counts: collections.Counter[tuple[str, str]] = collections.Counter()
  where: collections.defaultdict[tuple[str, str], set[int]] = collections.defaultdict(set)
  for i, p in enumerate(pieces):
    for pair in zip(p, p[1:]):
      pair_counts[pair] += counts[i]
      where[pair].add(i)
  heap = [(-n, pair) for pair, n in pair_counts.items()]
  heapq.heapify(heap)
  while len(tokens) < max_tokens and heap:
    negative, pair = heapq.heappop(heap)
    if pair_counts.get(pair, 0) != -negative:
      continue  # stale entry; the current count was pushed again when it changed
    if -negative < max(min_frequency, 1):
      break
    token = _merged(*pair)
    if token not in known:
      known.add(token)
      tokens.append(token)
    changed = _apply_merge(pair, token, pieces, counts, pair_counts, where)
    for p in changed:
      if pair_counts.get(p, 0) > 0:
        heapq.heappush(heap, (-pair_counts[p], p))
  return tokens


def _apply_merge(
  pair: tuple[str, str],
  token: str,
  pieces: list[list[str]],
  counts: list[int],
  pair_counts: collections.Counter[tuple[str, str]],
  where: collections.defaultdict[tuple[str, str], set[int]],
) -> set[tuple[str, str]]:
  """Merges `pair` into `token` in every word holding it; updates the pair statistics.

  Returns the pairs whose counts changed (except the merged pair, which is gone).
  """
  changed: set[tuple[str, str]] = set()
  for i in sorted(where.pop(pair, ())):
    old = pieces[i]
    new, j = [], 0
    while j < len(old):
      if j + 1 < len(old) and (old[j], old[j + 1]) == pair:
        new.append(token)
        j += 2
      else:
        new.append(old[j])
        j += 1
    for p in zip(old, old[1:]):
      pair_counts[p] -= counts[i]
      changed.add(p)
    for p in zip(new, new[1:]):
      pair_counts[p] += counts[i]
      where[p].add(i)
      changed.add(p)
    pieces[i] = new
  pair_counts.pop(pair, None)
  changed.discard(pair)
  return changed


class TextTokenizer:
  """A `tokenizers.Tokenizer` that encodes caption batches into fixed-length id arrays."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, *, pad_token: str = PAD):
    """Args:
    tokenizer: a tokenizer with a post-processor adding its special tokens (e.g. [CLS]/[SEP]).
    pad_token: the token whose id fills padding positions; must be in the vocabulary.
    """
    pad_id = tokenizer.token_to_id(pad_token)
    if pad_id is None:
      raise ValueError(f"The tokenizer's vocabulary has no padding token {pad_token!r}.")
    # Padding and truncation are applied per call by `encode_batch`, never stored.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    self._tokenizer = tokenizer
    self._pad_token = pad_token
    self._pad_id = int(pad_id)

  @classmethod
  def from_file(cls, path: str | os.PathLike[str], *, pad_token: str = PAD) -> TextTokenizer:
    """Loads a Hugging Face `tokenizer.json`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"No tokenizer file at {path} (expected a HF tokenizer.json).")
    try:
      tokenizer = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # the Rust side raises bare Exceptions on bad JSON
      raise ValueError(f"{path} is not a valid Hugging Face tokenizer.json: {e}") from e
    return cls(tokenizer, pad_token=pad_token)

  @classmethod
  def train_wordpiece(
    cls, captions: Iterable[str], vocab_size: int, *, min_frequency: int = 2
  ) -> TextTokenizer:
    """Learns a BERT-style (uncased) WordPiece vocabulary from captions.

    The vocabulary is learned by `learn_wordpiece_vocab` (deterministic), not by the
    `tokenizers` WordPiece trainer, whose ids and tie-breaking change from run to run.

    Args:
      captions: the training captions (non-empty strings).
      vocab_size: the largest vocabulary to learn, special tokens included (every character
        seen is kept even if that exceeds it, so that no seen character maps to [UNK]).
      min_frequency: a merge must occur this often to enter the vocabulary.
    Returns:
      A tokenizer with [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4 and a "[CLS] $A [SEP]"
      template; the same corpus always gives the same ids.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
      raise ValueError(f"vocab_size={vocab_size} leaves no room beside {SPECIAL_TOKENS}.")
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    word_counts: collections.Counter[str] = collections.Counter()
    for text in _checked(captions):
      words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
      word_counts.update(word for word, _ in words)
    if not word_counts:
      raise ValueError("train_wordpiece got no captions (or none with a word).")
    vocab = list(SPECIAL_TOKENS)
    vocab += learn_wordpiece_vocab(word_counts, vocab_size - len(vocab), min_frequency)
    tokenizer = tokenizers.Tokenizer(
      models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token=UNK)
    )
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
      single=f"{CLS} $A {SEP}",
      pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
      special_tokens=[(CLS, vocab.index(CLS)), (SEP, vocab.index(SEP))],
    )
    return cls(tokenizer)

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes the tokenizer as a Hugging Face tokenizer.json (readable by `from_file`)."""
    self._tokenizer.save(os.fspath(path))

  @property
  def vocab_size(self) -> int:
    """Number of ids, added special tokens included (ids lie in [0, vocab_size))."""
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  @property
  def pad_id(self) -> int:
    return self._pad_id

  @property
  def tokenizer(self) -> tokenizers.Tokenizer:
    """The wrapped `tokenizers.Tokenizer` (padding and truncation switched off)."""
    return self._tokenizer

  def encode_batch(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokenizes captions to fixed length.

    Args:
      texts: captions (non-empty strings).
      max_length: tokens per caption, special tokens included; longer captions are truncated
        (the closing [SEP] is kept), shorter ones right-padded with `pad_id`.
    Returns:
      (ids int32 [batch, max_length], mask int32 [batch, max_length]: 1 at real tokens).
    """
    texts = list(_checked(texts))
    specials = self._tokenizer.num_special_tokens_to_add(is_pair=False)
    if max_length <= specials:
      raise ValueError(f"max_length={max_length} leaves no room beside {specials} special tokens.")
    if not texts:
      empty = np.zeros((0, max_length), np.int32)
      return empty, empty.copy()
    self._tokenizer.enable_truncation(max_length)
    self._tokenizer.enable_padding(
      length=max_length, pad_id=self._pad_id, pad_token=self._pad_token
    )
    try:
      encodings = self._tokenizer.encode_batch(texts)
    finally:
      self._tokenizer.no_padding()
      self._tokenizer.no_truncation()
    ids = np.asarray([e.ids for e in encodings], np.int32)
    mask = np.asarray([e.attention_mask for e in encodings], np.int32)
    return ids, mask
