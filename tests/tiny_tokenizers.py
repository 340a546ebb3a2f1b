"""Tiny trained tokenizers for tests that need the real ones: codec, semantic and MuLan.

Tests of tokenization, stage training and decoding want the five tokenizer pieces exactly as the
jobs write them (checkpoints, the k-means file, the quantizer checkpoint), with the vocabularies
their token spec names. A couple of steps of each job on a tiny rendered corpus is cheap enough for
a session-scoped fixture; a piece already complete in `root` is kept, so reruns only load.

Everything runs on one device: 8 fake CPU devices on 2 cores only add overhead, and each job's
sharded behaviour is tested in its own test module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

import jax

from musiclm_jax.checkpoints import CHECKPOINT_SUBDIR, CheckpointConfig, Checkpointer
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.jobs import codec as codec_train_job
from musiclm_jax.jobs import mulan as mulan_train_job
from musiclm_jax.jobs import mulan_quantizer as mulan_quantizer_job
from musiclm_jax.jobs import semantic_kmeans as semantic_kmeans_job
from musiclm_jax.jobs import w2v_bert as w2v_bert_train_job
from musiclm_jax.models.mulan import MuLanModel
from musiclm_jax.models.soundstream import SoundStreamGAN
from musiclm_jax.models.w2v_bert import W2VBertModel
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers import kmeans
from musiclm_jax.tokenizers.rvq import RVQConfig
from musiclm_jax.training.optimizers import OptimizerConfig
from tests.size_configs import size_config

BATCH = 4
# The MuLan RVQ is k-means-initialised on its first batch: with fewer vectors than codes, level 1
# fits every vector exactly and every later level only sees zero residuals (always code 0).
QUANTIZER_BATCH = 32
CODEC_CROP = 480 * 10  # 0.2 s, 10 codec frames: as in codec_train_job_test.py
W2V_BERT_CROP = 960 * 50  # 2 s, 50 semantic frames
# Constant and without warmup, so the few steps move the weights at all (the default warms up
# over 1000 steps).
ADAM = OptimizerConfig(learning_rate=2e-3, schedule="constant", warmup_steps=0, weight_decay=0.0)
# What `KMeansModel.save` writes; its presence means the fit finished.
KMEANS_FILE = "kmeans.npz"


@dataclasses.dataclass(frozen=True)
class TinyTokenizerDirs:
  """Where the tokenizer pieces are, in the layout their loaders read.

  Attributes:
    codec_dir: SoundStream model dir (`tokenizers.soundstream.codec.load_codec`).
    w2v_bert_dir: w2v-BERT model dir; with kmeans_dir, `load_semantic_tokenizer`.
    kmeans_dir: the semantic k-means (`semantic_kmeans_job.fit_semantic_kmeans` output).
    mulan_dir: MuLan model dir; with mulan_quantizer_dir, `load_mulan_tokenizer`.
    mulan_quantizer_dir: the MuLan RVQ (`mulan_quantizer_job.fit_mulan_quantizer` output).
  """

  codec_dir: str
  w2v_bert_dir: str
  kmeans_dir: str
  mulan_dir: str
  mulan_quantizer_dir: str


def train_tiny_tokenizers(
  root: str,
  source: AudioSource,
  *,
  acoustic_levels: int = 12,
  acoustic_codebook_size: int = 16,
  semantic_clusters: int = 32,
  mulan_levels: int = 12,
  mulan_codebook_size: int = 8,
  steps: int = 2,
) -> TinyTokenizerDirs:
  """Trains the five tokenizer pieces for `steps` steps each under `root`, keeping finished ones.

  A piece counts as finished when its checkpoint at `steps` (or later) or its k-means file exists;
  nothing checks that it was trained with the same sizes, so give each setting its own `root`.

  Args:
    root: parent of codec/, w2v_bert/, kmeans/, mulan/ and mulan_quantizer/.
    source: a TFDS audio dataset with captions at 24 kHz and a 'train' split (e.g. a small
      `rendered_music/24khz` build).
    acoustic_levels, acoustic_codebook_size: the codec's RVQ (acoustic tokens per frame × ids).
    semantic_clusters: the semantic vocabulary (k-means clusters of w2v-BERT embeddings).
    mulan_levels, mulan_codebook_size: the MuLan RVQ (conditioning tokens × ids).
    steps: optimizer steps of each trained model and of the MuLan quantizer.
  Returns:
    The five directories.
  """
  if steps < 1:
    raise ValueError(f"steps={steps}: every job must save at least one checkpoint.")
  names = ("codec", "w2v_bert", "kmeans", "mulan", "mulan_quantizer")
  dirs = TinyTokenizerDirs(*(os.path.join(root, name) for name in names))
  partitioner = Partitioner(MeshConfig(num_devices=1, ici_data=1))
  with _fast_compiles():
    _train_codec(
      dirs.codec_dir, source, acoustic_levels, acoustic_codebook_size, steps, partitioner
    )
    _train_semantic(dirs, source, semantic_clusters, steps, partitioner)
    _train_mulan(dirs, source, mulan_levels, mulan_codebook_size, steps, partitioner)
  return dirs


@contextlib.contextmanager
def _fast_compiles() -> Iterator[None]:
  """XLA's cheap compiles while the jobs run, then the caller's setting again.

  Each job compiles its steps to run them twice, so compile time is nearly all of its time; the
  codec's GAN step compiles in about half the time without LLVM's expensive passes (as
  tests/tokenizers/soundstream/fast_compile.py does per function; the jobs jit internally, so only
  the global flag reaches them).
  """
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)


def _checkpoint_config(steps: int) -> CheckpointConfig:
  # Synchronous: a background write buys nothing for one save and adds a thread to every job.
  return CheckpointConfig(
    save_interval_steps=steps, max_to_keep=1, async_save=False, save_on_sigterm=False
  )


def _finished(checkpoint_dir: str, steps: int) -> bool:
  """True if `checkpoint_dir` holds a complete checkpoint at `steps` or later.

  Every job force-saves its last step, so this is how a job says it is done (a step cut off
  mid-write is never listed).
  """
  if not os.path.isdir(checkpoint_dir):
    return False  # without this, opening a Checkpointer would create it
  with Checkpointer(checkpoint_dir, CheckpointConfig(save_on_sigterm=False)) as reader:
    latest = reader.latest_step()
  return latest is not None and latest >= steps


def _train_codec(
  model_dir: str,
  source: AudioSource,
  levels: int,
  codebook_size: int,
  steps: int,
  partitioner: Partitioner,
) -> None:
  """SoundStream (tiny) with a `levels` × `codebook_size` RVQ; no eval, no audio summaries."""
  if _finished(os.path.join(model_dir, CHECKPOINT_SUBDIR), steps):
    return
  config = size_config("soundstream", "tiny")
  rvq = dataclasses.replace(config.rvq, num_levels=levels, codebook_size=codebook_size)
  codec_train_job.train_codec(
    model=SoundStreamGAN(dataclasses.replace(config, rvq=rvq), crop_samples=CODEC_CROP),
    source=source,
    model_dir=model_dir,
    num_steps=steps,
    batch_size=BATCH,
    generator_optimizer=ADAM,
    discriminator_optimizer=ADAM,
    partitioner=partitioner,
    checkpoint=_checkpoint_config(steps),
    eval_split=None,
    log_every_steps=steps,
    num_audio_summaries=0,
  )


def _train_semantic(
  dirs: TinyTokenizerDirs,
  source: AudioSource,
  clusters: int,
  steps: int,
  partitioner: Partitioner,
) -> None:
  """w2v-BERT (tiny), then a `clusters`-means fit on just enough of its embeddings."""
  if not _finished(os.path.join(dirs.w2v_bert_dir, CHECKPOINT_SUBDIR), steps):
    w2v_bert_train_job.train_w2v_bert(
      model=W2VBertModel(size_config("w2v_bert", "tiny"), crop_samples=W2V_BERT_CROP),
      source=source,
      model_dir=dirs.w2v_bert_dir,
      num_steps=steps,
      batch_size=BATCH,
      optimizer=ADAM,
      partitioner=partitioner,
      checkpoint=_checkpoint_config(steps),
      eval_split=None,
      log_every_steps=steps,
    )
  if os.path.isfile(os.path.join(dirs.kmeans_dir, KMEANS_FILE)):
    return
  vectors_per_batch = BATCH * W2V_BERT_CROP // size_config("w2v_bert", "tiny").samples_per_frame
  max_batches = -(-clusters // vectors_per_batch)  # k-means++ needs at least `clusters` vectors
  semantic_kmeans_job.fit_semantic_kmeans(
    w2v_bert_dir=dirs.w2v_bert_dir,
    source=source,
    output_dir=dirs.kmeans_dir,
    config=kmeans.KMeansConfig(
      num_clusters=clusters, init_samples=max_batches * vectors_per_batch, num_epochs=1, seed=0
    ),
    crop_samples=W2V_BERT_CROP,
    batch_size=BATCH,
    max_batches=max_batches,
    partitioner=partitioner,
  )


def _train_mulan(
  dirs: TinyTokenizerDirs,
  source: AudioSource,
  levels: int,
  codebook_size: int,
  steps: int,
  partitioner: Partitioner,
) -> None:
  """MuLan (tiny, WordPiece vocabulary from the captions), then its `levels` × `codebook_size` RVQ."""
  config = size_config("mulan", "tiny")
  if not _finished(os.path.join(dirs.mulan_dir, CHECKPOINT_SUBDIR), steps):
    mulan_train_job.train_mulan(
      model=MuLanModel(config),
      source=source,
      model_dir=dirs.mulan_dir,
      num_steps=steps,
      batch_size=BATCH,
      optimizer=ADAM,
      partitioner=partitioner,
      checkpoint=_checkpoint_config(steps),
      eval_split=None,
      log_every_steps=steps,
    )
  if _finished(dirs.mulan_quantizer_dir, steps):
    return
  mulan_quantizer_job.fit_mulan_quantizer(
    mulan_dir=dirs.mulan_dir,
    source=source,
    output_dir=dirs.mulan_quantizer_dir,
    rvq=RVQConfig(
      num_levels=levels, codebook_size=codebook_size, dim=config.embed_dim, quantizer_dropout=False
    ),
    num_steps=steps,
    batch_size=QUANTIZER_BATCH,
    checkpoint=_checkpoint_config(steps),
    log_every_steps=steps,
  )
