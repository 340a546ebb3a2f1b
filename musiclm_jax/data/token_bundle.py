"""The three trained tokenizers as one unit: audio → acoustic, semantic and MuLan token streams.

A `TokenizerBundleConfig` names the checkpoints (SoundStream; w2v-BERT + its k-means; MuLan +
its RVQ). `load_bundle` loads them once per process; `TokenizerBundle.tokenize` turns a batch of
equal-length clips into

  acoustic  int32 [batch, samples // hop, acoustic_levels]   (SoundStream; paper hop 480: 50 Hz)
  semantic  int32 [batch, samples // frame]                  (w2v-BERT layer + k-means; paper
                                                              frame 960: 25 Hz)
  mulan     int32 [batch, mulan_levels]                      (MuLan clip embedding over 10 s
                                                              windows with 1 s hop, then RVQ)

with jitted programs on the default JAX device (an accelerator when present).

`tokenizer_identity` says which checkpoints a bundle is, from their metadata alone (no weights
are read): the token cache records it, and training refuses a cache whose identity differs from
the tokenizers the run names. Directories are recorded for people but not compared, so a cache
and its checkpoints may be copied elsewhere together.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any

import numpy as np

from musiclm_jax import checkpoints
from musiclm_jax.checkpoints import CHECKPOINT_SUBDIR
from musiclm_jax.stages import ACOUSTIC, MULAN, SEMANTIC, TokenSpec

KMEANS_FILE = "kmeans.npz"


@dataclasses.dataclass(frozen=True)
class TokenizerBundleConfig:
  """Where the trained tokenizers are, and how to batch them.

  Attributes:
    codec_dir: codec model dir (SoundStream or spectral: `codec_api.load_codec`).
    w2v_bert_dir: w2v-BERT model dir (`w2v_bert_train_job.train_w2v_bert`).
    kmeans_dir: the k-means fitted on its embeddings (`semantic_kmeans_job`).
    mulan_dir: MuLan model dir (`mulan_train_job.train_mulan`).
    mulan_quantizer_dir: the RVQ fitted on MuLan audio embeddings (`mulan_quantizer_job`).
    batch_size: clips per tokenizer call; a partial batch is padded with silent rows so that
      every call of one clip length reuses one compiled program.
  """

  codec_dir: str
  w2v_bert_dir: str
  kmeans_dir: str
  mulan_dir: str
  mulan_quantizer_dir: str
  batch_size: int = 8

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f"TokenizerBundleConfig.batch_size must be >= 1, got {self.batch_size}")


def bundle_under(root: str, batch_size: int = 8) -> TokenizerBundleConfig:
  """The bundle laid out as the quickstart and the tokenizer run files write it: root/{codec,
  w2v_bert, kmeans, mulan, mulan_quantizer}."""
  return TokenizerBundleConfig(
    codec_dir=os.path.join(root, "codec"),
    w2v_bert_dir=os.path.join(root, "w2v_bert"),
    kmeans_dir=os.path.join(root, "kmeans"),
    mulan_dir=os.path.join(root, "mulan"),
    mulan_quantizer_dir=os.path.join(root, "mulan_quantizer"),
    batch_size=batch_size,
  )


def bundle_codec_dir(config: TokenizerBundleConfig) -> str:
  """The bundle's codec model dir (gin: what initialises the stage LMs' acoustic embeddings)."""
  return config.codec_dir


class CacheMismatchError(ValueError):
  """A token cache was made by other tokenizers (or another token spec) than a run names."""


def checkpoint_identity(checkpoint_dir: str) -> dict[str, Any]:
  """{'dir', 'step', 'model', 'committed_ns'} of the latest complete step in a directory.

  `committed_ns` (orbax's commit time of that step) tells two trainings apart even when they
  stopped at the same step with the same architecture.

  Raises:
    FileNotFoundError: no complete checkpoint in `checkpoint_dir`.
  """
  saved = checkpoints.read_saved_step(checkpoint_dir)
  return {
    "dir": saved.directory,
    "step": saved.step,
    "model": saved.metadata.get("model"),
    "committed_ns": saved.committed_ns,
  }


def _file_identity(path: str) -> dict[str, Any]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist (is the k-means fitted?).")
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  return {"file": os.path.abspath(path), "sha256": digest}


def tokenizer_identity(config: TokenizerBundleConfig) -> dict[str, Any]:
  """What the bundle's checkpoints are, from their metadata (cheap: no weights are loaded).

  Raises:
    FileNotFoundError: a checkpoint is missing.
  """
  return {
    "soundstream": checkpoint_identity(os.path.join(config.codec_dir, CHECKPOINT_SUBDIR)),
    "w2v_bert": checkpoint_identity(os.path.join(config.w2v_bert_dir, CHECKPOINT_SUBDIR)),
    "kmeans": _file_identity(os.path.join(config.kmeans_dir, KMEANS_FILE)),
    "mulan": checkpoint_identity(os.path.join(config.mulan_dir, CHECKPOINT_SUBDIR)),
    "mulan_quantizer": checkpoint_identity(config.mulan_quantizer_dir),
  }


def bundle_token_spec(config: TokenizerBundleConfig, num_coarse_levels: int) -> TokenSpec:
  """The `TokenSpec` the bundle's tokenizers produce, from their metadata (no weights loaded).

  Equals `load_bundle(config).token_spec(num_coarse_levels)`.
  """
  from musiclm_jax import architecture
  from musiclm_jax.tokenizers import kmeans
  from musiclm_jax.tokenizers.codec_api import codec_config_from_metadata
  from musiclm_jax.tokenizers.w2v_bert.config import W2VBertConfig

  codec_dir = os.path.join(config.codec_dir, CHECKPOINT_SUBDIR)
  codec_meta = checkpoints.read_saved_step(codec_dir).metadata
  if "architecture" not in codec_meta:
    raise CacheMismatchError(f"{config.codec_dir} holds no codec checkpoint metadata.")
  codec = codec_config_from_metadata(codec_meta)
  fitted = kmeans.KMeansModel.load(config.kmeans_dir)
  if "semantic_rate_hz" in fitted.metadata:  # an imported HuBERT / MERT's
    semantic_rate_hz = int(fitted.metadata["semantic_rate_hz"])
  else:
    w2v_bert = architecture.from_json(W2VBertConfig, fitted.metadata["w2v_bert_architecture"])
    semantic_rate_hz = round(w2v_bert.sample_rate / w2v_bert.samples_per_frame)
  quantizer = checkpoints.read_saved_step(config.mulan_quantizer_dir).metadata.get("rvq")
  if quantizer is None:
    raise CacheMismatchError(f"{config.mulan_quantizer_dir} holds no MuLan quantizer metadata.")
  return TokenSpec(
    mulan_levels=quantizer["num_levels"],
    mulan_codebook_size=quantizer["codebook_size"],
    semantic_codebook_size=fitted.num_clusters,
    acoustic_levels=codec.rvq.num_levels,
    acoustic_codebook_size=codec.rvq.codebook_size,
    num_coarse_levels=num_coarse_levels,
    semantic_rate_hz=semantic_rate_hz,
    acoustic_rate_hz=codec.frame_rate,
  )


_LOCATION_KEYS = ("dir", "file")


def _comparable(identity: dict[str, Any]) -> dict[str, Any]:
  """The identity without locations (which may legitimately change when files are copied)."""
  return {
    name: {k: v for k, v in part.items() if k not in _LOCATION_KEYS}
    for name, part in identity.items()
  }


def identity_differences(cached: dict[str, Any], expected: dict[str, Any]) -> list[str]:
  """Lines naming each tokenizer whose recorded identity differs (locations ignored)."""
  cached, expected = _comparable(cached), _comparable(expected)
  lines = []
  for name in sorted(set(cached) | set(expected)):
    if cached.get(name) != expected.get(name):
      lines.append(
        f"{name}: cache made with {cached.get(name)}, the run names {expected.get(name)}"
      )
  return lines


class TokenizerBundle:
  """The loaded tokenizers. Build with `load_bundle` (one per process and config).

  Attributes:
    config: where they came from.
    codec: a `codec_api.AudioCodec` (SoundStream or spectral).
    semantic: `SemanticTokenizer` (w2v-BERT) or `HubertSemanticTokenizer` (imported).
    mulan: `MuLanTokenizer`.
  """

  def __init__(self, config: TokenizerBundleConfig, codec: Any, semantic: Any, mulan: Any):
    self.config, self.codec, self.semantic, self.mulan = config, codec, semantic, mulan
    self._check_rates()

  def _check_rates(self) -> None:
    codec_rate, semantic_rate = self.codec.sample_rate, self.semantic.config.sample_rate
    mulan_rate = self.mulan.config.audio.sample_rate
    if not codec_rate == semantic_rate == mulan_rate:
      raise ValueError(
        f"The tokenizers read audio at different rates: SoundStream {codec_rate} Hz, "
        f"w2v-BERT {semantic_rate} Hz, MuLan {mulan_rate} Hz."
      )
    if self.samples_per_semantic_frame % self.codec.hop_length:
      raise ValueError(
        f"A semantic frame ({self.samples_per_semantic_frame} samples) must hold a whole number "
        f"of SoundStream frames (hop {self.codec.hop_length}) for the streams to align."
      )

  @property
  def sample_rate(self) -> int:
    return self.codec.sample_rate

  @property
  def samples_per_semantic_frame(self) -> int:
    return self.semantic.config.samples_per_frame

  def token_spec(self, num_coarse_levels: int) -> TokenSpec:
    """The `TokenSpec` of these tokenizers' streams (coarse/fine split given by the caller)."""
    return TokenSpec(
      mulan_levels=self.mulan.num_levels,
      mulan_codebook_size=self.mulan.codebook_size,
      semantic_codebook_size=self.semantic.vocab_size,
      acoustic_levels=self.codec.num_levels,
      acoustic_codebook_size=self.codec.codebook_size,
      num_coarse_levels=num_coarse_levels,
      semantic_rate_hz=round(self.sample_rate / self.samples_per_semantic_frame),
      acoustic_rate_hz=self.codec.frame_rate,
    )

  def tokenize(self, audio: np.ndarray) -> dict[str, np.ndarray]:
    """Token streams of a batch of equal-length clips (no padding: each row is a whole clip).

    Args:
      audio: float32 [batch, samples], samples a positive multiple of
        `samples_per_semantic_frame`, finite.

    Returns:
      {'acoustic': int32 [batch, R·F, acoustic_levels], 'semantic': int32 [batch, F],
       'mulan': int32 [batch, mulan_levels]} with F = samples // samples_per_semantic_frame
      and R = SoundStream frames per semantic frame (`token_spec(...).acoustic_frames_per_semantic`,
      2 at the paper's rates).
    """
    audio = np.asarray(audio, np.float32)
    frame = self.samples_per_semantic_frame
    if audio.ndim != 2 or audio.shape[1] < frame or audio.shape[1] % frame:
      raise ValueError(
        f"tokenize takes [batch, samples] with samples a positive multiple of {frame}; got "
        f"shape {audio.shape}"
      )
    rows = audio.shape[0]
    padded = _pad_rows(audio, -(-rows // self.config.batch_size) * self.config.batch_size)
    out = {ACOUSTIC: [], SEMANTIC: [], MULAN: []}
    for start in range(0, padded.shape[0], self.config.batch_size):
      chunk = padded[start : start + self.config.batch_size]
      out[ACOUSTIC].append(np.asarray(self.codec.encode(chunk)))
      out[SEMANTIC].append(self.semantic.semantic_tokens(chunk))
      out[MULAN].append(self.mulan.audio_tokens(chunk))
    return {k: np.concatenate(v)[:rows].astype(np.int32) for k, v in out.items()}


def _pad_rows(audio: np.ndarray, rows: int) -> np.ndarray:
  return np.pad(audio, ((0, rows - audio.shape[0]), (0, 0))) if rows > audio.shape[0] else audio


@functools.lru_cache(maxsize=4)
def load_bundle(config: TokenizerBundleConfig) -> TokenizerBundle:
  """Loads the tokenizers of `config` (once per process; later calls return the same bundle)."""
  # Imported here: registering tasks must not pull in every model (or load weights).
  from musiclm_jax.tokenizers.codec_api import load_codec
  from musiclm_jax.tokenizers.mulan.tokens import load_mulan_tokenizer
  from musiclm_jax.tokenizers.w2v_bert.semantic import load_semantic_tokenizer

  return TokenizerBundle(
    config,
    codec=load_codec(config.codec_dir),
    semantic=load_semantic_tokenizer(config.w2v_bert_dir, config.kmeans_dir),
    mulan=load_mulan_tokenizer(config.mulan_dir, config.mulan_quantizer_dir),
  )
