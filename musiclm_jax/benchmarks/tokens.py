"""Token-stream speed behind `musiclm-jax bench tokenize` and `bench input-pipeline`.

Two halves of the data path, each against what it has to keep up with:

* **Tokenization** (`bench_tokenize`): `TokenizerBundle.tokenize` (SoundStream encode, w2v-BERT
  semantic tokens, MuLan audio tokens) in audio-seconds per second on random-init tokenizers (the
  programs, hence the speed, do not depend on the weights' values). Each batch size is also
  timed per tokenizer, so the row says which one dominates, and against the naive design the
  tokens task rules out: the same clips one per call (batch 1), timed alternately with it.
* **Input pipeline** (`bench_input_pipeline`): examples/s of the cached path the trainer reads
  (`stage_tasks.get_stage_dataset` over a stage task over tf.Example token shards, parsed as
  `TokenStreamSource` parses the cache) against the examples/s of the stage LM's train step
  (`benchmarks.bench_train`). The shards hold random codes of the stage's `TokenSpec`; the
  cache's tokenizer-identity check is bypassed (there are no checkpoints), nothing else is.

Compilation and tf.data start-up (tracing, filling the shuffle buffer) are excluded from the
rates and reported on their own.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import seqio
import tensorflow as tf

from musiclm_jax.benchmarks import stage_lm as benchmarks
from musiclm_jax.benchmarks.semantic import random_tokenizer
from musiclm_jax.data import stage_tasks, token_tasks
from musiclm_jax.data.token_bundle import TokenizerBundle, TokenizerBundleConfig
from musiclm_jax.models.stage_lm import StageLM
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.stages import ACOUSTIC, MULAN, SEMANTIC, StageLayout, TokenSpec
from musiclm_jax.tokenizers.mulan.config import MuLanConfig
from musiclm_jax.tokenizers.mulan.model import MuLan
from musiclm_jax.tokenizers.mulan.text_tokenizer import TextTokenizer
from musiclm_jax.tokenizers.mulan.tokens import MuLanTokenizer
from musiclm_jax.tokenizers.rvq import ResidualVectorQuantizer, RVQConfig
from musiclm_jax.tokenizers.soundstream.codec import SoundStreamCodec
from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig
from musiclm_jax.tokenizers.w2v_bert.config import W2VBertConfig
from musiclm_jax.training.optimizers import OptimizerConfig

RANDOM_INIT = "<random init>"  # the bundle config's directories: there are no checkpoints
PARTS = ("codec", "semantic", "mulan")

# ----------------------------------------------------------------------------------------------
# Tokenization


def random_mulan_tokenizer(
  config: MuLanConfig, *, levels: int = 12, codebook_size: int = 1024, seed: int = 0
) -> MuLanTokenizer:
  """A MuLan tokenizer with random towers and a random `levels` × `codebook_size` RVQ."""
  window = np.zeros((1, config.audio.window_samples), np.float32)
  ids = np.zeros((1, config.text.max_length), np.int32)
  init = jax.jit(lambda key: MuLan(config).init(key, window, ids, ids + 1))
  params = nn.meta.unbox(init(jax.random.key(seed))["params"])
  rvq = RVQConfig(
    num_levels=levels, codebook_size=codebook_size, dim=config.embed_dim, quantizer_dropout=False
  )
  variables = ResidualVectorQuantizer(rvq).init(
    jax.random.key(seed + 1), jnp.zeros((1, rvq.dim)), train=False
  )
  # Captions are not tokenized here; any vocabulary with the special tokens will do.
  text = TextTokenizer.train_wordpiece(["a random caption"], vocab_size=64, min_frequency=1)
  return MuLanTokenizer(config, params, rvq, jax.device_get(variables), text)


def random_bundle(
  codec: SoundStreamConfig,
  w2v_bert: W2VBertConfig,
  mulan: MuLanConfig,
  *,
  num_clusters: int = 1024,
  mulan_levels: int = 12,
  mulan_codebook_size: int = 1024,
  batch_size: int = 8,
  seed: int = 0,
) -> TokenizerBundle:
  """The three tokenizers with random weights, k-means centroids and RVQ codebooks."""
  config = TokenizerBundleConfig(*(RANDOM_INIT,) * 5, batch_size=batch_size)
  return TokenizerBundle(
    config,
    codec=SoundStreamCodec.random_init(codec, seed),
    semantic=random_tokenizer(w2v_bert, num_clusters, seed),
    mulan=random_mulan_tokenizer(
      mulan, levels=mulan_levels, codebook_size=mulan_codebook_size, seed=seed
    ),
  )


def _with_batch_size(bundle: TokenizerBundle, batch_size: int) -> TokenizerBundle:
  config = dataclasses.replace(bundle.config, batch_size=batch_size)
  return TokenizerBundle(config, bundle.codec, bundle.semantic, bundle.mulan)


def _seconds(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def _measure(bundle: TokenizerBundle, audio: np.ndarray, repeats: int) -> dict[str, float]:
  """compile_s (first call), then medians of the bundle, of each tokenizer alone and of the
  same clips tokenized one per call.

  The timings alternate within each repeat, so load from other processes falls on all of them
  alike: the per-tokenizer split and the batched / one-at-a-time ratio stay comparable.
  """
  single = _with_batch_size(bundle, 1)  # `tokenize` then calls the tokenizers clip by clip
  calls = {
    "tokenize": lambda: bundle.tokenize(audio),
    "codec": lambda: np.asarray(bundle.codec.encode(audio)),  # as `tokenize` calls them
    "semantic": lambda: bundle.semantic.semantic_tokens(audio),
    "mulan": lambda: bundle.mulan.audio_tokens(audio),
  }
  if len(audio) > 1:
    calls["one_at_a_time"] = lambda: single.tokenize(audio)
  out = {"compile_s": _seconds(calls["tokenize"])}  # compiles every program of this shape
  if len(audio) > 1:
    single.tokenize(audio[:1])  # the batch-1 programs (compiled by the batch-1 row, if any)
  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, fn in calls.items():
      times[name].append(_seconds(fn))
  for name, values in times.items():
    out[f"{name}_s"] = float(np.median(values))
  out.setdefault("one_at_a_time_s", out["tokenize_s"])
  return out


def bench_tokenize(
  bundle: TokenizerBundle,
  *,
  seconds: Sequence[float],
  batch_sizes: Sequence[int],
  repeats: int = 3,
  seed: int = 0,
) -> list[dict[str, Any]]:
  """Tokenization speed of `bundle` on clips of each length, batched and one clip per call.

  Args:
    bundle: the tokenizers (e.g. `random_bundle`); its own batch size is replaced by each of
      `batch_sizes` in turn.
    seconds: clip lengths (rounded down to whole semantic frames).
    batch_sizes: clips per tokenizer call; one row per (clip length, batch size).
    repeats: timed calls per figure (median), after one warm-up call that compiles.
    seed: of the (uniform noise) audio.

  Returns:
    One dict per row: seconds, batch, compile_s (the warm-up call: compile + one run),
    tokenize_s (median wall seconds per `tokenize` call), audio_seconds_per_s, codec_s /
    semantic_s / mulan_s (each tokenizer alone on the same batch) and their *_share of the
    three's sum, one_at_a_time_s (the same clips tokenized one per call, the naive design),
    one_at_a_time_audio_seconds_per_s and batched_speedup (one_at_a_time_s / tokenize_s).
  """
  if not seconds or not batch_sizes or min(batch_sizes) < 1 or repeats < 1:
    raise ValueError(
      f"bench_tokenize needs clip lengths, batch sizes >= 1 and repeats >= 1; got "
      f"seconds={seconds}, batch_sizes={batch_sizes}, repeats={repeats}."
    )
  frame = bundle.samples_per_semantic_frame
  rng = np.random.default_rng(seed)
  rows = []
  for length in seconds:
    samples = int(length * bundle.sample_rate) // frame * frame
    if samples < frame:
      raise ValueError(f"A clip of {length} s is shorter than one semantic frame.")
    clip_seconds = samples / bundle.sample_rate
    audio = rng.uniform(-0.5, 0.5, (max(batch_sizes), samples)).astype(np.float32)
    for batch in batch_sizes:
      m = _measure(_with_batch_size(bundle, batch), audio[:batch], repeats)
      parts = sum(m[f"{part}_s"] for part in PARTS)
      rows.append(
        {
          "seconds": clip_seconds,
          "batch": batch,
          **m,
          "audio_seconds_per_s": batch * clip_seconds / m["tokenize_s"],
          **{f"{part}_share": m[f"{part}_s"] / parts for part in PARTS},
          "one_at_a_time_audio_seconds_per_s": batch * clip_seconds / m["one_at_a_time_s"],
          "batched_speedup": m["one_at_a_time_s"] / m["tokenize_s"],
        }
      )
  return rows


# ----------------------------------------------------------------------------------------------
# The input pipeline


def write_random_token_shards(
  directory: str,
  tokens: TokenSpec,
  *,
  num_clips: int,
  clip_seconds: float,
  num_shards: int = 4,
  split: str = "train",
  seed: int = 0,
) -> list[str]:
  """Token-cache shards of random codes: tf.Examples as `token_cache` writes them.

  Args:
    directory: where the shard files go (named as the cache names them).
    tokens: codebook sizes, levels and frame rates of the streams.
    num_clips: examples in all, spread round-robin over the shards.
    clip_seconds: length of every clip (whole semantic frames).
    num_shards: files.
    split: the split named in the file names.
    seed: of the codes.

  Returns:
    The shard files, in index order.
  """
  frames = int(clip_seconds * tokens.semantic_rate_hz)
  if frames < 1 or num_clips < num_shards or num_shards < 1:
    raise ValueError(
      f"need at least one semantic frame per clip and a clip per shard; got clip_seconds="
      f"{clip_seconds}, num_clips={num_clips}, num_shards={num_shards}."
    )
  rng = np.random.default_rng(seed)
  tf.io.gfile.makedirs(directory)
  files = [token_tasks.shard_file(directory, split, i, num_shards) for i in range(num_shards)]
  writers = [tf.io.TFRecordWriter(path) for path in files]
  acoustic_frames = frames * tokens.acoustic_frames_per_semantic
  for clip in range(num_clips):
    example = {
      "id": f"random-{clip:06d}",
      "caption": "random codes",
      MULAN: rng.integers(0, tokens.mulan_codebook_size, tokens.mulan_levels),
      SEMANTIC: rng.integers(0, tokens.semantic_codebook_size, frames),
      ACOUSTIC: rng.integers(
        0, tokens.acoustic_codebook_size, (acoustic_frames, tokens.acoustic_levels)
      ),
    }
    writers[clip % num_shards].write(seqio.dict_to_tfexample(example).SerializeToString())
  for writer in writers:
    writer.close()
  return files


class CachedTokenShards(seqio.DataSource):
  """Token shards read as `TokenStreamSource` reads its cache, without the identity check.

  Shards are permuted by the seed when shuffling and `interleave_shards` of them read at once;
  each record is parsed by the cache's own parser.

  Args:
    files: the shard files (`write_random_token_shards`), all of split 'train'.
    tokens: the streams' spec.
    interleave_shards: shards read at once when shuffling.
  """

  def __init__(self, files: Sequence[str], tokens: TokenSpec, interleave_shards: int = 4):
    self._files, self._tokens, self._interleave = list(files), tokens, interleave_shards
    super().__init__(splits=("train",), caching_permitted=False)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> list[str]:
    return list(self._files)

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
    del split, sequence_length, use_cached
    order = token_tasks.shard_order(len(self._files), shuffle, seed, shard_info)
    cycle = min(self._interleave, len(order)) if shuffle else 1
    # The cache's own reader, so that parsing costs what it costs on the real path.
    dataset = token_tasks.read_cached_shards([self._files[i] for i in order], self._tokens, cycle)
    return dataset.repeat(num_epochs)


def pipeline_throughput(
  task: seqio.Task,
  layout: StageLayout,
  *,
  batch_size: int,
  num_batches: int,
  warmup_batches: int = 2,
  seed: int = 0,
) -> dict[str, float]:
  """Batches/s of `get_stage_dataset(task)` as the trainer iterates it (numpy batches).

  The first `warmup_batches` (tf.data start-up and the shuffle buffer's first fill) are timed on
  their own, then `num_batches` steady-state batches.

  Returns:
    startup_s (the warm-up batches), examples_per_s, tokens_per_s (examples × sequence length).
  """
  dataset = stage_tasks.get_stage_dataset(
    task, layout, split="train", batch_size=batch_size, seed=seed, shuffle=True
  )
  batches = dataset.as_numpy_iterator()
  start = time.perf_counter()
  for _ in range(warmup_batches):
    next(batches)
  startup_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(num_batches):
    next(batches)
  elapsed = time.perf_counter() - start
  examples_per_s = num_batches * batch_size / elapsed
  length = layout.inputs_length + layout.targets_length
  return {
    "startup_s": startup_s,
    "examples_per_s": examples_per_s,
    "tokens_per_s": examples_per_s * length,
  }


def bench_input_pipeline(
  model: StageLM,
  partitioner: Partitioner,
  *,
  work_dir: str,
  num_clips: int = 64,
  clip_seconds: float = 30.0,
  batch_size: int = 16,
  num_batches: int = 50,
  train_batch_size: int = 4,
  train_steps: int = 1,
  optimizer: OptimizerConfig = OptimizerConfig(),
  seed: int = 0,
) -> dict[str, Any]:
  """The cached input pipeline's examples/s against the stage LM's train step's.

  Args:
    model: the stage LM (its layout names the stage, crop and token spec).
    partitioner: the trainer's mesh.
    work_dir: where the random token shards are written.
    num_clips, clip_seconds: the shards' clips (random codes of `model.layout.tokens`).
    batch_size: the pipeline's batch (per host).
    num_batches: steady-state batches timed.
    train_batch_size, train_steps: the train step's batch and timed steps (after one that
      compiles); on a CPU a small batch keeps this affordable.
    optimizer: the train step's optimizer.
    seed: of the codes, crops and shuffling.

  Returns:
    stage, sequence_length, batch_size, startup_s, pipeline_examples_per_s,
    pipeline_tokens_per_s, cpu_cores, pipeline_examples_per_s_per_core, train_batch_size,
    train_step_s, trainer_examples_per_s, pipeline_over_trainer (> 1: the pipeline keeps up).
  """
  layout = model.layout
  files = write_random_token_shards(
    os.path.join(work_dir, layout.stage),
    layout.tokens,
    num_clips=num_clips,
    clip_seconds=clip_seconds,
    seed=seed,
  )
  task = stage_tasks.make_stage_task(
    f"musiclm_bench_{layout.stage}",
    CachedTokenShards(files, layout.tokens),
    layout,
    register=False,
  )
  pipeline = pipeline_throughput(
    task, layout, batch_size=batch_size, num_batches=num_batches, seed=seed
  )
  train = benchmarks.bench_train(
    model, partitioner, batch_size=train_batch_size, num_steps=train_steps, optimizer=optimizer
  )
  trainer_examples_per_s = train_batch_size / train["step_time_s"]
  cores = os.cpu_count() or 1
  return {
    "stage": layout.stage,
    "sequence_length": model.sequence_length,
    "batch_size": batch_size,
    "startup_s": pipeline["startup_s"],
    "pipeline_examples_per_s": pipeline["examples_per_s"],
    "pipeline_tokens_per_s": pipeline["tokens_per_s"],
    "cpu_cores": cores,
    "pipeline_examples_per_s_per_core": pipeline["examples_per_s"] / cores,
    "train_batch_size": train_batch_size,
    "train_step_s": train["step_time_s"],
    "trainer_examples_per_s": trainer_examples_per_s,
    "pipeline_over_trainer": pipeline["examples_per_s"] / trainer_examples_per_s,
  }
