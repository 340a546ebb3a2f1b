"""SeqIO tasks from audio to the three token streams, and the stage tasks that read them.

    TFDS audio ─► musiclm_tokens_<dataset> ─► [cache placeholder] ══► offline cache (token_cache)
                  (batched JAX tokenization)                                   │
                                                 TokenStreamSource ◄───────────┘ (or on the fly)
                                                        │
                     musiclm_{semantic,coarse,fine}_<dataset> (stage_tasks: crop, encode)

Design choices:

* **Tokenization is batched JAX, not a per-example tf.data map.** The tokens task's preprocessor
  reads clips in order, groups clips of equal length and calls the jitted tokenizers on whole
  batches on the default JAX device (an accelerator when present). A per-example
  `tf.numpy_function` would run batch 1 on the host.
* **Clips are trimmed to whole `length_quantum_seconds`** (default 1 s; a clip shorter than one
  quantum is trimmed to whole semantic frames instead), so a corpus of ≤ 30 s clips has at most
  ~30 distinct lengths: ~30 compiled programs, and batches without padding. Each clip's tokens
  therefore depend on the clip alone, never on its batch-mates.
* **One canonical order.** Source shard i (a TFDS file) becomes cache file i, examples in the
  order the tokenizer emits them. `TokenStreamSource` reads shards one after another in that
  order, from the cache or tokenizing on the fly, so cached and uncached stage datasets give the
  same examples in the same order for a seed (crops are seeded by position, seqio's convention).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterator

import numpy as np
import seqio
import tensorflow as tf
from absl import logging

from musiclm_jax.data import token_bundle
from musiclm_jax.data.token_bundle import CacheMismatchError, TokenizerBundleConfig
from musiclm_jax.stages import ACOUSTIC, MULAN, SEMANTIC, TokenSpec

IDENTITY_FILE = "tokenizers.json"
SPEC_KEY = "token_spec"
PASSTHROUGH_FEATURES = ("id", "caption")


@dataclasses.dataclass(frozen=True)
class TokensTaskSpec:
  """A tokens task: which audio, which tokenizers. Picklable, so Beam workers can rebuild it.

  Attributes:
    name: task name, e.g. 'musiclm_tokens_rendered_music'.
    tfds_name: the TFDS audio dataset with its config, e.g. 'rendered_music/24khz'.
    data_dir: its TFDS data dir (None: TFDS' default).
    bundle: the tokenizer checkpoints.
    length_quantum_seconds: clips are trimmed to a whole number of these (see module doc).
  """

  name: str
  tfds_name: str
  data_dir: str | None
  bundle: TokenizerBundleConfig
  length_quantum_seconds: float = 1.0

  def task(self) -> seqio.Task:
    """The registered task (registering it on first use in this process)."""
    if self.name not in seqio.TaskRegistry.names():
      register_tokens_task(self)
    return seqio.TaskRegistry.get(self.name)


def bundle_levels(bundle: TokenizerBundleConfig) -> TokenSpec:
  """The shapes and codebook sizes of the streams `bundle` produces (from metadata)."""
  # num_coarse_levels does not matter for the stream shapes; 1 is always valid.
  return token_bundle.bundle_token_spec(bundle, num_coarse_levels=1)


def tokens_output_features(tokens: TokenSpec) -> dict[str, seqio.Feature]:
  """The streams as seqio features: raw codes (no stage offsets), vocabulary = codebook size."""

  def feature(size, rank):
    vocab = seqio.PassThroughVocabulary(size=size)
    return seqio.Feature(vocab, add_eos=False, dtype=tf.int32, rank=rank)

  return {
    MULAN: feature(tokens.mulan_codebook_size, 1),
    SEMANTIC: feature(tokens.semantic_codebook_size, 1),
    ACOUSTIC: feature(tokens.acoustic_codebook_size, 2),
  }


def trimmed_length(num_samples: int, quantum: int, frame: int) -> int:
  """Samples of a clip that are tokenized: whole quanta, else whole frames (0: unusable)."""
  if num_samples >= quantum:
    return num_samples // quantum * quantum
  return num_samples // frame * frame


def _batched_clips(
  clips: Iterator[dict], batch_size: int, quantum: int, frame: int, max_pending: int
) -> Iterator[list[dict]]:
  """Groups trimmed clips of equal length into batches, in a deterministic order.

  A group is emitted when full; when more than `max_pending` clips wait (bounding memory), the
  fullest group goes early; the rest go at the end in order of first arrival.
  """
  groups: dict[int, list[dict]] = {}
  dropped = 0
  for clip in clips:
    length = trimmed_length(len(clip["audio"]), quantum, frame)
    if length == 0:
      dropped += 1
      continue
    groups.setdefault(length, []).append({**clip, "audio": clip["audio"][:length]})
    if len(groups[length]) == batch_size:
      yield groups.pop(length)
    elif sum(len(g) for g in groups.values()) > max_pending:
      fullest = max(groups, key=lambda k: (len(groups[k]), k))
      yield groups.pop(fullest)
  yield from groups.values()
  if dropped:
    logging.warning("tokens: %d clip(s) shorter than one semantic frame were dropped", dropped)


def tokenize_clip_stream(
  clips: Iterator[dict], spec: TokensTaskSpec, max_pending: int | None = None
) -> Iterator[dict]:
  """{'id', 'caption', 'audio' [samples]} clips → {'id', 'caption', 'mulan', 'semantic', 'acoustic'}.

  Loads the bundle (once per process) on first use.
  """
  bundle = token_bundle.load_bundle(spec.bundle)
  frame = bundle.samples_per_semantic_frame
  quantum = round(spec.length_quantum_seconds * bundle.sample_rate)
  if quantum < frame or quantum % frame:
    raise ValueError(
      f"length_quantum_seconds={spec.length_quantum_seconds} must be a whole number of "
      f"semantic frames ({frame} samples)"
    )
  batch_size = spec.bundle.batch_size
  pending = max_pending or 4 * batch_size
  for batch in _batched_clips(clips, batch_size, quantum, frame, pending):
    tokens = bundle.tokenize(np.stack([clip["audio"] for clip in batch]))
    for i, clip in enumerate(batch):
      out = {k: clip[k] for k in PASSTHROUGH_FEATURES}
      yield {**out, **{family: codes[i] for family, codes in tokens.items()}}


def _stream_signature(tokens: TokenSpec) -> dict[str, tf.TensorSpec]:
  return {
    "id": tf.TensorSpec([], tf.string),
    "caption": tf.TensorSpec([], tf.string),
    MULAN: tf.TensorSpec([tokens.mulan_levels], tf.int32),
    SEMANTIC: tf.TensorSpec([None], tf.int32),
    ACOUSTIC: tf.TensorSpec([None, tokens.acoustic_levels], tf.int32),
  }


def _tokenize_preprocessor(dataset: tf.data.Dataset, spec: TokensTaskSpec) -> tf.data.Dataset:
  """The tokens task's preprocessor: batched JAX tokenization of the clips, in order."""
  dataset = dataset.map(lambda ex: {k: ex[k] for k in ("audio", *PASSTHROUGH_FEATURES)})

  def generate():
    clips = ({**ex, "audio": ex["audio"].astype(np.float32)} for ex in dataset.as_numpy_iterator())
    yield from tokenize_clip_stream(clips, spec)

  return tf.data.Dataset.from_generator(
    generate, output_signature=_stream_signature(bundle_levels(spec.bundle))
  )


def register_tokens_task(spec: TokensTaskSpec) -> seqio.Task:
  """Registers (replacing any earlier one) the tokens task: audio → streams → required cache."""
  import musiclm_jax.data.builders  # noqa: F401 - registers the audio builders with TFDS

  task = seqio.Task(
    spec.name,
    source=seqio.TfdsDataSource(spec.tfds_name, tfds_data_dir=spec.data_dir),
    output_features=tokens_output_features(bundle_levels(spec.bundle)),
    preprocessors=[
      functools.partial(_tokenize_preprocessor, spec=spec),
      seqio.CacheDatasetPlaceholder(required=True),
    ],
  )
  seqio.TaskRegistry.remove(spec.name)
  seqio.TaskRegistry.add_provider(spec.name, task)
  return task


def source_shard(spec: TokensTaskSpec, split: str, index: int, num_shards: int) -> tf.data.Dataset:
  """The tokens of source shard `index` (one TFDS file), tokenized now, in canonical order."""
  task = spec.task()
  dataset = task.source.get_dataset(
    split=split, shuffle=False, shard_info=seqio.ShardInfo(index, num_shards)
  )
  return task.preprocess_precache(dataset)


# ----------------------------------------------------------------------------------------------
# The cache's files (seqio's layout, so `seqio.get_dataset(..., use_cached=True)` reads it too).


def task_cache_dir(cache_dir: str, task_name: str) -> str:
  return os.path.join(cache_dir, seqio.get_task_dir_from_name(task_name))


def shard_file(task_dir: str, split: str, index: int, num_shards: int) -> str:
  prefix = seqio.utils.get_cached_tfrecord_prefix(task_dir, split)
  return f"{prefix}-{index:05d}-of-{num_shards:05d}"


def read_cache_identity(task_dir: str) -> dict | None:
  path = os.path.join(task_dir, IDENTITY_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def check_cache_identity(task_dir: str, bundle: TokenizerBundleConfig, tokens: TokenSpec) -> None:
  """Raises CacheMismatchError unless the cache was made by `bundle` with streams of `tokens`.

  `tokens.num_coarse_levels` is a stage choice and is not compared.
  """
  recorded = read_cache_identity(task_dir)
  if recorded is None:
    raise CacheMismatchError(
      f"{task_dir} has no {IDENTITY_FILE}: it was not made by `musiclm-jax tokenize`."
    )
  lines = token_bundle.identity_differences(
    recorded["tokenizers"], token_bundle.tokenizer_identity(bundle)
  )
  cached_spec = dict(recorded[SPEC_KEY], num_coarse_levels=tokens.num_coarse_levels)
  if cached_spec != dataclasses.asdict(tokens):
    lines.append(f"token spec: cache holds {recorded[SPEC_KEY]}, the run expects {tokens}")
  if lines:
    raise CacheMismatchError(
      f"The token cache {task_dir} was made by other tokenizers than this run names; re-run "
      "`musiclm-jax tokenize` with them (or point the run at the tokenizers of the cache):\n  "
      + "\n  ".join(lines)
    )


def _parse_fn(tokens: TokenSpec):
  description = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "caption": tf.io.FixedLenFeature([], tf.string),
    MULAN: tf.io.FixedLenFeature([tokens.mulan_levels], tf.int64),
    SEMANTIC: tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True),
    ACOUSTIC: tf.io.FixedLenSequenceFeature([tokens.acoustic_levels], tf.int64, allow_missing=True),
  }

  def parse(record):
    example = tf.io.parse_single_example(record, description)
    return {k: v if v.dtype == tf.string else tf.cast(v, tf.int32) for k, v in example.items()}

  return parse


def shard_order(
  num_shards: int, shuffle: bool, seed: int | None, shard_info: seqio.ShardInfo | None
) -> np.ndarray:
  """This host's shard indices, in reading order (permuted by the seed when shuffling)."""
  order = np.arange(num_shards)
  if shard_info is not None:
    order = order[shard_info.index :: shard_info.num_shards]
  return np.random.default_rng(seed).permutation(order) if shuffle else order


def read_cached_shards(files: list[str], tokens: TokenSpec, cycle: int) -> tf.data.Dataset:
  """Parsed token streams of cache files, `cycle` files interleaved record by record."""
  shards = tf.data.Dataset.from_tensor_slices(files)
  dataset = shards.interleave(tf.data.TFRecordDataset, cycle_length=cycle, block_length=1)
  return dataset.map(_parse_fn(tokens), num_parallel_calls=tf.data.AUTOTUNE)


class TokenStreamSource(seqio.DataSource):
  """Per-clip token streams of a tokens task: from its offline cache, or tokenized on the fly.

  Shards (TFDS files of the audio = files of the cache) are read one after another in index
  order when not shuffling, so both paths yield the same examples in the same order. With
  `shuffle`, the shard order is permuted by the seed and a few shards are interleaved.

  Args:
    spec: the tokens task.
    use_cached: read the cache in `cache_dir` (checked against `spec.bundle` and refused if it
      was made by other tokenizers); False: tokenize the audio now.
    cache_dir: the `--output_cache_dir` of `musiclm-jax tokenize` (None: seqio's global cache
      dirs, found by task name).
    interleave_shards: shards read at once when shuffling.
  """

  def __init__(
    self,
    spec: TokensTaskSpec,
    use_cached: bool = True,
    cache_dir: str | None = None,
    interleave_shards: int = 4,
  ):
    self._spec, self._use_cached, self._cache_dir = spec, use_cached, cache_dir
    self._interleave = interleave_shards
    self._checked = False
    super().__init__(splits=(), caching_permitted=False)

  @property
  def splits(self):
    return tuple(self._audio_source.splits)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  @functools.cached_property
  def _audio_source(self) -> seqio.TfdsDataSource:
    return self._spec.task().source

  def _task_dir(self) -> str:
    if self._cache_dir is not None:
      return task_cache_dir(self._cache_dir, self._spec.name)
    found = self._spec.task().cache_dir
    if not found:
      raise FileNotFoundError(
        f"No cache of {self._spec.name} in seqio's cache dirs {seqio.get_global_cache_dirs()}; "
        "run `musiclm-jax tokenize` or set use_cached=False."
      )
    return found

  def list_shards(self, split: str) -> list[str]:
    return self._audio_source.list_shards(split)

  def _cached_split(self, split: str) -> tuple[str, dict]:
    task_dir = self._task_dir()
    info_path = seqio.utils.get_cached_info_path(task_dir, split)
    if not tf.io.gfile.exists(os.path.join(task_dir, "COMPLETED")) or not tf.io.gfile.exists(
      info_path
    ):
      raise FileNotFoundError(
        f"The token cache {task_dir} is incomplete (no COMPLETED or {os.path.basename(info_path)});"
        " re-run `musiclm-jax tokenize` to finish it."
      )
    if not self._checked:
      check_cache_identity(task_dir, self._spec.bundle, bundle_levels(self._spec.bundle))
      self._checked = True
    with tf.io.gfile.GFile(info_path) as f:
      return task_dir, json.load(f)

  def get_dataset(
    self,
    split: str = "train",
    shuffle: bool = True,
    seed: int | None = None,
    shard_info: seqio.ShardInfo | None = None,
    *,
    sequence_length=None,
    use_cached: bool = False,
    num_epochs: int | None = 1,
  ) -> tf.data.Dataset:
    del sequence_length, use_cached  # the source's own `use_cached` decides
    if self._use_cached:
      task_dir, info = self._cached_split(split)
      num_shards = info["num_shards"]
    else:
      num_shards = len(self.list_shards(split))
    order = shard_order(num_shards, shuffle, seed, shard_info)
    if not len(order):
      raise ValueError(f"{self._spec.name} {split}: no shard for {shard_info} of {num_shards}")
    cycle = min(self._interleave, len(order)) if shuffle else 1
    tokens = bundle_levels(self._spec.bundle)
    if self._use_cached:
      files = [shard_file(task_dir, split, int(i), num_shards) for i in order]
      return read_cached_shards(files, tokens, cycle).repeat(num_epochs)

    def generate(index):
      yield from source_shard(self._spec, split, int(index), num_shards).as_numpy_iterator()

    def read_shard(index):
      return tf.data.Dataset.from_generator(
        generate, args=(index,), output_signature=_stream_signature(tokens)
      )

    # The same interleave of the same shard order as the cached path: the same example order.
    shards = tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
    dataset = shards.interleave(read_shard, cycle_length=cycle, block_length=1)
    return dataset.repeat(num_epochs)
