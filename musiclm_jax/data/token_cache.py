"""The offline token cache: seqio's cache job for the tokens tasks, resumable shard by shard.

`cache_tokens_task` runs an Apache Beam pipeline (DirectRunner locally; any runner through
`pipeline_options`, e.g. `--runner=DataflowRunner --project=... --region=...`) with one unit of
work per source shard: a worker tokenizes shard i (`token_tasks.source_shard`, batched JAX on its
accelerator) and writes cache file i atomically (temporary name, then rename), then that shard's
stats. A shard whose stats file exists is finished and is skipped by a re-run, so a job killed at
any point (`kill -9` included) loses at most the shards in flight and never duplicates one.

When every shard of every split is finished, the driver writes seqio's `info.<split>.json` and
`stats.<split>.json` and `COMPLETED`, so `seqio.get_dataset(task, use_cached=True)` and
`TokenStreamSource` read it. `tokenizers.json` records which checkpoints made the cache (written
first: a cache is never extended by other tokenizers than the ones that started it).

Files of one task: <output_cache_dir>/<task>/
  tokenizers.json                       identity of the tokenizers and the token spec
  <split>.tfrecord-0000i-of-0000N       tf.Examples: id, caption, mulan, semantic, acoustic
  <split>.shard-0000i.stats.json        per-shard stats (the shard's "done" marker)
  info.<split>.json, stats.<split>.json, COMPLETED
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import seqio
import tensorflow as tf
from absl import logging
from apache_beam.options.pipeline_options import PipelineOptions

from musiclm_jax.data import token_bundle, token_tasks
from musiclm_jax.data.token_bundle import CacheMismatchError
from musiclm_jax.stages import ACOUSTIC, MULAN, SEMANTIC, TokenSpec

COMPLETED = "COMPLETED"


TMP_PREFIX = ".tmp-"


def _write_atomic(path: str, write_fn) -> None:
  """Writes through a temporary sibling and renames it: readers see all of it or nothing.

  The temporary name starts with `TMP_PREFIX`, so no reader's file pattern (seqio's
  `<split>.tfrecord-*-of-*N`) can match a half-written file left by a killed worker.
  """
  directory, name = os.path.split(path)
  tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}-{name}")
  write_fn(tmp)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def _remove_leftovers(task_dir: str) -> None:
  """Deletes temporary files of workers killed mid-write (their shards are redone)."""
  for path in tf.io.gfile.glob(os.path.join(task_dir, TMP_PREFIX + "*")):
    tf.io.gfile.remove(path)


def _write_json(path: str, value: Any) -> None:
  def write(tmp):
    with tf.io.gfile.GFile(tmp, "w") as f:
      json.dump(value, f, indent=2, sort_keys=True)

  _write_atomic(path, write)


def shard_stats_file(task_dir: str, split: str, index: int) -> str:
  return os.path.join(task_dir, f"{split}.shard-{index:05d}.stats.json")


def _code_usage(codes: np.ndarray, size: int) -> list[int]:
  """Counts of each code, [size] (codes of one level)."""
  return np.bincount(codes.reshape(-1), minlength=size)[:size].tolist()


class _ShardStats:
  """Per-shard counts: examples, tokens, seconds and per-level code histograms."""

  def __init__(self, tokens: TokenSpec, samples_per_semantic_frame: int, sample_rate: int):
    self.tokens = tokens
    self.seconds_per_frame = samples_per_semantic_frame / sample_rate
    self.examples = 0
    self.frames = 0
    self.max_frames = 0
    self.histograms = {
      MULAN: np.zeros((tokens.mulan_levels, tokens.mulan_codebook_size), np.int64),
      SEMANTIC: np.zeros((1, tokens.semantic_codebook_size), np.int64),
      ACOUSTIC: np.zeros((tokens.acoustic_levels, tokens.acoustic_codebook_size), np.int64),
    }

  def add(self, example: dict[str, np.ndarray]) -> None:
    self.examples += 1
    frames = len(example[SEMANTIC])
    self.frames += frames
    self.max_frames = max(self.max_frames, frames)
    np.add.at(self.histograms[MULAN], (np.arange(self.tokens.mulan_levels), example[MULAN]), 1)
    np.add.at(self.histograms[SEMANTIC], (0, example[SEMANTIC]), 1)
    acoustic = example[ACOUSTIC]
    np.add.at(self.histograms[ACOUSTIC], (np.arange(acoustic.shape[1])[None, :], acoustic), 1)

  def to_json(self) -> dict[str, Any]:
    ratio = self.tokens.acoustic_frames_per_semantic
    return {
      "examples": self.examples,
      "audio_seconds": self.frames * self.seconds_per_frame,
      "semantic_tokens": self.frames,
      "acoustic_tokens": self.frames * ratio * self.tokens.acoustic_levels,
      "mulan_tokens": self.examples * self.tokens.mulan_levels,
      "semantic_max_tokens": self.max_frames,
      "histograms": {k: v.tolist() for k, v in self.histograms.items()},
    }


def merge_stats(shards: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Sums per-shard stats and summarises code usage per family and level.

  Returns seqio's stats keys (`examples`, `<feature>_tokens`, `<feature>_max_tokens`) plus
  `audio_seconds` and `code_usage`: per family, per level, the used codes and the perplexity
  (exp of the entropy of the code distribution).
  """
  merged: dict[str, Any] = {
    key: sum(s[key] for s in shards)
    for key in ("examples", "audio_seconds", "semantic_tokens", "acoustic_tokens", "mulan_tokens")
  }
  merged["semantic_max_tokens"] = max((s["semantic_max_tokens"] for s in shards), default=0)
  usage = {}
  for family in (MULAN, SEMANTIC, ACOUSTIC) if shards else ():
    counts = np.sum([np.asarray(s["histograms"][family], np.float64) for s in shards], axis=0)
    p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=1)
    usage[family] = {
      "used_codes": (counts > 0).sum(axis=1).tolist(),
      "perplexity": np.round(np.exp(entropy), 3).tolist(),
    }
  merged["code_usage"] = usage
  return merged


class _TokenizeShard(beam.DoFn):
  """Tokenizes one source shard into its cache file; yields the shard's stats."""

  def __init__(self, spec: token_tasks.TokensTaskSpec, split: str, task_dir: str, num_shards: int):
    self._spec, self._split, self._task_dir, self._num_shards = spec, split, task_dir, num_shards

  def setup(self):
    self._bundle = token_bundle.load_bundle(self._spec.bundle)  # once per worker process

  def process(self, index: int):
    started = time.perf_counter()
    stats = _ShardStats(
      token_tasks.bundle_levels(self._spec.bundle),
      self._bundle.samples_per_semantic_frame,
      self._bundle.sample_rate,
    )
    dataset = token_tasks.source_shard(self._spec, self._split, index, self._num_shards)
    path = token_tasks.shard_file(self._task_dir, self._split, index, self._num_shards)

    def write(tmp):
      with tf.io.TFRecordWriter(tmp) as writer:
        for example in dataset.as_numpy_iterator():
          stats.add(example)
          writer.write(seqio.dict_to_tfexample(example).SerializeToString())

    _write_atomic(path, write)
    shard = dict(stats.to_json(), shard=index, seconds=time.perf_counter() - started)
    _write_json(shard_stats_file(self._task_dir, self._split, index), shard)
    beam.metrics.Metrics.counter("musiclm_tokens", "shards").inc()
    beam.metrics.Metrics.counter("musiclm_tokens", "examples").inc(stats.examples)
    logging.info(
      "%s %s shard %d/%d: %d clips, %.1f audio-s in %.1f s",
      self._spec.name,
      self._split,
      index + 1,
      self._num_shards,
      stats.examples,
      shard["audio_seconds"],
      shard["seconds"],
    )
    yield shard


def _finished_shards(task_dir: str, split: str, num_shards: int) -> list[int]:
  return [
    i
    for i in range(num_shards)
    if tf.io.gfile.exists(shard_stats_file(task_dir, split, i))
    and tf.io.gfile.exists(token_tasks.shard_file(task_dir, split, i, num_shards))
  ]


def _claim_directory(task_dir: str, identity: dict[str, Any], overwrite: bool) -> None:
  """Records the identity, or refuses a directory started by other tokenizers."""
  recorded = token_tasks.read_cache_identity(task_dir)
  if recorded is not None:
    lines = token_bundle.identity_differences(recorded["tokenizers"], identity["tokenizers"])
    if recorded[token_tasks.SPEC_KEY] != identity[token_tasks.SPEC_KEY]:
      lines.append("token spec differs")
    if lines and not overwrite:
      raise CacheMismatchError(
        f"{task_dir} holds tokens of other tokenizers; pass --overwrite to replace them, or use "
        "another --output_cache_dir:\n  " + "\n  ".join(lines)
      )
    if lines:
      logging.warning("Overwriting the token cache %s (other tokenizers).", task_dir)
      tf.io.gfile.rmtree(task_dir)
  tf.io.gfile.makedirs(task_dir)
  _remove_leftovers(task_dir)
  _write_json(os.path.join(task_dir, token_tasks.IDENTITY_FILE), identity)


def _info(tokens: TokenSpec, num_shards: int) -> dict[str, Any]:
  """seqio's info.<split>.json: how to parse the tf.Examples."""
  return {
    "num_shards": num_shards,
    "seqio_version": seqio.__version__,
    "features": {
      "id": {"shape": [], "dtype": "string"},
      "caption": {"shape": [], "dtype": "string"},
      MULAN: {"shape": [tokens.mulan_levels], "dtype": "int32"},
      SEMANTIC: {"shape": [None], "dtype": "int32"},
      ACOUSTIC: {"shape": [None, tokens.acoustic_levels], "dtype": "int32"},
    },
  }


def cache_tokens_task(
  spec: token_tasks.TokensTaskSpec,
  output_cache_dir: str,
  *,
  splits: Sequence[str] | None = None,
  pipeline_options: Sequence[str] = ("--runner=DirectRunner",),
  overwrite: bool = False,
  max_shards: int | None = None,
) -> dict[str, dict[str, Any]]:
  """Tokenizes a tokens task's splits into `output_cache_dir`, resuming a partial cache.

  Args:
    spec: the tokens task.
    output_cache_dir: the cache root (the task's files go to `<root>/<task name>/`).
    splits: splits to cache (default: all of the source's).
    pipeline_options: Beam pipeline flags, e.g. ['--runner=DataflowRunner', ...].
    overwrite: replace a cache made by other tokenizers instead of refusing.
    max_shards: tokenize at most this many pending shards in this run (then stop, resumable);
      None: all of them.

  Returns:
    Per split, the merged stats (`merge_stats`) of the finished shards, plus 'finished_shards'
    and 'num_shards'.
  """
  task = spec.task()
  task_dir = token_tasks.task_cache_dir(output_cache_dir, spec.name)
  tokens = token_tasks.bundle_levels(spec.bundle)
  identity = {
    "task": spec.name,
    "tfds_name": spec.tfds_name,
    "length_quantum_seconds": spec.length_quantum_seconds,
    "tokenizers": token_bundle.tokenizer_identity(spec.bundle),
    token_tasks.SPEC_KEY: dataclasses.asdict(tokens),
  }
  _claim_directory(task_dir, identity, overwrite)
  splits = tuple(splits or task.source.splits)
  shard_counts = {split: len(task.source.list_shards(split)) for split in splits}
  budget = max_shards
  with beam.Pipeline(options=PipelineOptions(list(pipeline_options))) as pipeline:
    for split, num_shards in shard_counts.items():
      done = set(_finished_shards(task_dir, split, num_shards))
      pending = [i for i in range(num_shards) if i not in done]
      if budget is not None:
        pending, budget = pending[:budget], budget - len(pending[:budget])
      logging.info("%s %s: %d of %d shards to tokenize", spec.name, split, len(pending), num_shards)
      if pending:
        _ = (
          pipeline
          | f"{split}_shards" >> beam.Create(pending)
          | f"{split}_spread" >> beam.Reshuffle()
          | f"{split}_tokenize" >> beam.ParDo(_TokenizeShard(spec, split, task_dir, num_shards))
        )
  return _finish(task_dir, tokens, shard_counts)


def _finish(task_dir: str, tokens: TokenSpec, shard_counts: dict[str, int]) -> dict[str, dict]:
  """Writes info/stats per finished split and COMPLETED once every split is finished."""
  report = {}
  for split, num_shards in shard_counts.items():
    finished = _finished_shards(task_dir, split, num_shards)
    shards = []
    for i in finished:
      with tf.io.gfile.GFile(shard_stats_file(task_dir, split, i)) as f:
        shards.append(json.load(f))
    stats = merge_stats(shards)
    if len(finished) == num_shards:
      _write_json(seqio.utils.get_cached_stats_path(task_dir, split), stats)
      _write_json(seqio.utils.get_cached_info_path(task_dir, split), _info(tokens, num_shards))
    report[split] = dict(stats, finished_shards=len(finished), num_shards=num_shards)
  if all(r["finished_shards"] == r["num_shards"] for r in report.values()):
    with tf.io.gfile.GFile(os.path.join(task_dir, COMPLETED), "w") as f:
      f.write("")
  return report
