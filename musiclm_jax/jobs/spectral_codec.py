"""The spectral codec job: fit PCA and residual k-means codebooks of STFT frames, resumably.

`fit_spectral_codec()` is what `musiclm-jax train` runs for gin/runs/spectral_codec_rendered.gin.
It reads the training split once in whole-clip crops, turns every frame into power-law compressed
STFT magnitudes (jitted, rows sharded over the data axis), and then fits, in order:

  step 0       the PCA: weighted mean and covariance of the frames (global sums under the
               sharding), eigenvectors on the host in float64;
  step l + 1   level l's codebook: k-means++ seeding on a sample of the level's residuals, then
               Lloyd iterations over all of them (weighted, sharded), then the residuals move on.

Each step is a checkpoint. A job killed at any point and started again recomputes the frames
(deterministic in `data_seed`), replays the fitted levels' quantization to get the residuals
back, and continues with the next step: the result equals an uninterrupted fit bitwise. Padding
frames (crops past the end of a clip) have weight 0 and move nothing.

The fitted codec is read back by `tokenizers.codec_api.load_codec(model_dir)`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from musiclm_jax import checkpoints
from musiclm_jax.checkpoints import CheckpointConfig, Checkpointer
from musiclm_jax.data import audio_batches
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.partitioning import Partitioner
from musiclm_jax.tokenizers import rvq
from musiclm_jax.tokenizers.kmeans.algorithm import kmeans_plus_plus
from musiclm_jax.tokenizers.spectral import model
from musiclm_jax.tokenizers.spectral.codec import FITTED_LEVELS, MODEL_NAME, SpectralCodec
from musiclm_jax.tokenizers.spectral.config import SpectralCodecConfig
from musiclm_jax.training import loop as train_loop

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """How the codec is fitted (recorded in the checkpoint: a resumed fit must match it).

  Attributes:
    crop_samples: audio per example (default 10 s: whole clips of the rendered corpus).
    batch_size: global audio batch of the frame pass.
    max_batches: audio batches read (None: the whole training split, once).
    kmeans_iters: Lloyd iterations per level.
    kmeans_init_samples: residuals the k-means++ seeding of each level draws from.
    seed: k-means seeding; data_seed: crops and shuffling.
  """

  crop_samples: int = 240_000
  batch_size: int = 8
  max_batches: int | None = None
  kmeans_iters: int = 20
  kmeans_init_samples: int = 8192
  seed: int = 0
  data_seed: int = 0


def codec_metadata(config: SpectralCodecConfig, fit: FitConfig, dataset: str) -> dict:
  """What a checkpoint must match to be resumed (and what rebuilds the codec)."""
  return {
    "model": MODEL_NAME,
    "architecture": dataclasses.asdict(config),
    "fit": {**dataclasses.asdict(fit), "dataset": dataset},
  }


# -- the frame pass -------------------------------------------------------------------------


def collect_frames(
  config: SpectralCodecConfig,
  source: AudioSource,
  split: str,
  fit: FitConfig,
  partitioner: Partitioner,
) -> tuple[jax.Array, jax.Array]:
  """(frames [rows, bins], weights [rows]) of one pass over `split`, rows sharded over 'data'.

  A frame's weight is 1 where its centre sample is real audio, 0 where it is crop padding.
  """
  featurize = jax.jit(lambda audio: model.features(config, audio))
  frames, weights = [], []
  batches = audio_batches.host_audio_batches(
    source,
    split,
    fit.crop_samples,
    fit.batch_size,
    fit.data_seed,
    0,
    features=("audio", "audio_mask"),
    num_epochs=1,
  )
  for index, batch in enumerate(batches):
    if fit.max_batches is not None and index >= fit.max_batches:
      break
    frames.append(np.asarray(featurize(batch["audio"])).reshape(-1, config.num_bins))
    weights.append(np.asarray(batch["audio_mask"][:, :: config.hop_length], np.float32).ravel())
  if not frames:
    raise ValueError(
      f"Split {split!r} of {source.name} gave no batch of {fit.batch_size} crops of "
      f"{fit.crop_samples} samples: nothing to fit the codec on."
    )
  rows = np.concatenate(frames), np.concatenate(weights)
  return partitioner.shard_batch(_pad_rows(*rows, partitioner.data_parallel_size))


def _pad_rows(x: np.ndarray, weight: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
  """Rows zero-padded (weight 0) to a multiple of the data-parallel size."""
  missing = -len(x) % multiple
  return np.pad(x, ((0, missing), (0, 0))), np.pad(weight, (0, missing))


# -- PCA --------------------------------------------------------------------------------------


@jax.jit
def _moments(x: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Weighted mean [bins] and covariance [bins, bins] of the rows (global sums)."""
  total = jnp.sum(weight)
  mean = jnp.dot(weight, x, precision=_HIGHEST) / total
  centred = (x - mean) * jnp.sqrt(weight)[:, None]
  return mean, jnp.dot(centred.T, centred, precision=_HIGHEST) / total


def fit_pca(x: jax.Array, weight: jax.Array, dim: int) -> tuple[dict, np.ndarray]:
  """({"mean", "components" [bins, dim]}, eigenvalues [bins] in decreasing order).

  Each component's sign is fixed (its largest entry positive), so the fit is deterministic.
  """
  mean, covariance = jax.device_get(_moments(x, weight))
  values, vectors = np.linalg.eigh(covariance.astype(np.float64))
  order = np.argsort(values)[::-1]
  values, vectors = values[order], vectors[:, order[:dim]]
  signs = np.sign(vectors[np.abs(vectors).argmax(0), np.arange(dim)])
  components = (vectors * signs).astype(np.float32)
  return {"mean": mean.astype(np.float32), "components": components}, values


# -- residual k-means -------------------------------------------------------------------------


def lloyd_step(centroids: jax.Array, x: jax.Array, weight: jax.Array) -> jax.Array:
  """One weighted Lloyd update; a centroid with no weight keeps its place."""
  codes = rvq.nearest_codes(x, centroids)
  onehot = jax.nn.one_hot(codes, centroids.shape[0], dtype=jnp.float32) * weight[:, None]
  counts = onehot.sum(0)
  sums = jnp.dot(onehot.T, x, precision=_HIGHEST)
  return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)


@jax.jit
def _subtract_nearest(x: jax.Array, centroids: jax.Array) -> jax.Array:
  return x - jnp.take(centroids, rvq.nearest_codes(x, centroids), axis=0)


def _weighted_error(x: jax.Array, weight: jax.Array) -> float:
  return float(jnp.dot(weight, jnp.sum(jnp.square(x), -1)) / jnp.sum(weight))


def fit_level(
  residual: jax.Array, weight: jax.Array, codebook_size: int, fit: FitConfig, level: int
) -> jax.Array:
  """[codes, dim] k-means codebook of one level's residuals: k-means++ seeds, then Lloyd."""
  host_weight = np.asarray(jax.device_get(weight))
  real = np.flatnonzero(host_weight > 0)
  rng = np.random.default_rng([fit.seed, level])
  sample = np.sort(rng.choice(real, min(len(real), fit.kmeans_init_samples), replace=False))
  seeds = jax.device_get(residual)[sample]
  key = jax.random.fold_in(jax.random.key(fit.seed), level)
  centroids = kmeans_plus_plus(key, jnp.asarray(seeds), codebook_size)
  step = jax.jit(lloyd_step)
  for _ in range(fit.kmeans_iters):
    centroids = step(centroids, residual, weight)
  return centroids


# -- evaluation -------------------------------------------------------------------------------


def evaluate_codec(
  codec: SpectralCodec, source: AudioSource, split: str, fit: FitConfig, num_batches: int
) -> dict[str, float]:
  """Mel distance of the reconstruction at every level, and chroma cosine at 1 and all levels.

  eval/mel_distance_L{l} for l = 1..levels; eval/mel_distance_{1_level,all_levels,silence} as the
  SoundStream job names them; eval/chroma_cosine_{1_level,all_levels} (1 = same pitch content).
  """
  from musiclm_jax.evaluation import music_stats
  from musiclm_jax.tokenizers.soundstream import losses

  mel = jax.jit(lambda a, b: losses.mel_distance(a, b, codec.sample_rate))
  batches = audio_batches.host_audio_batches(
    source, split, fit.crop_samples, fit.batch_size, fit.data_seed, 0, shuffle=False
  )
  sums: dict[str, list[float]] = {}
  for _, batch in zip(range(num_batches), batches, strict=False):
    audio = batch["audio"]
    codes = codec.encode(audio)
    scores = {"silence": mel(np.zeros_like(audio), audio)}
    for levels in range(1, codec.num_levels + 1):
      decoded = codec.decode(codes[..., :levels])[:, : audio.shape[1]]
      scores[f"L{levels}"] = mel(decoded, audio)
      if levels in (1, codec.num_levels):
        name = "1_level" if levels == 1 else "all_levels"
        decoded = np.asarray(decoded)
        chroma = [
          music_stats.chroma_cosine(a, d, codec.sample_rate) for a, d in zip(audio, decoded)
        ]
        sums.setdefault(f"eval/chroma_cosine_{name}", []).extend(chroma)
    for name, values in scores.items():
      sums.setdefault(f"eval/mel_distance_{name}", []).extend(np.asarray(values).tolist())
  if not sums:
    raise ValueError(f"Split {split!r} of {source.name} produced no batch of {fit.batch_size}.")
  metrics = {name: float(np.mean(values)) for name, values in sums.items()}
  metrics["eval/mel_distance_1_level"] = metrics["eval/mel_distance_L1"]
  metrics["eval/mel_distance_all_levels"] = metrics[f"eval/mel_distance_L{codec.num_levels}"]
  return metrics


# -- the job ----------------------------------------------------------------------------------


def _abstract_state(config: SpectralCodecConfig, partitioner: Partitioner) -> dict:
  from musiclm_jax.tokenizers.spectral.codec import variable_shapes

  shapes = {**variable_shapes(config), FITTED_LEVELS: jax.ShapeDtypeStruct((), jnp.int32)}
  sharding = partitioner.replicated
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def _state(params: dict, codebooks: np.ndarray, fitted: int) -> dict:
  return {
    "params": jax.tree.map(jnp.asarray, params),
    rvq.QUANTIZER: {"codebooks": jnp.asarray(codebooks)},
    FITTED_LEVELS: jnp.asarray(fitted, jnp.int32),
  }


def fit_spectral_codec(
  *,
  config: SpectralCodecConfig,
  source: AudioSource,
  model_dir: str,
  fit: FitConfig = FitConfig(),
  train_split: str = "train",
  eval_split: str | None = "eval",
  eval_batches: int = 2,
  partitioner: Partitioner | None = None,
  checkpoint: CheckpointConfig = CheckpointConfig(save_interval_steps=1, max_to_keep=2),
  on_start: Callable[[], None] | None = None,
) -> dict[str, float]:
  """Fits the spectral codec on `source` and saves it in `model_dir`, resuming if possible.

  Args:
    config: the codec (frame grid, compression, PCA size = rvq.dim, levels, codes).
    source: a TFDS audio dataset at the codec's sample rate.
    model_dir: checkpoints (`model_dir/checkpoints`, one per fitted step) and final_metrics.json.
    fit: crops, batches, k-means iterations and seeds.
    train_split, eval_split: dataset splits (eval_split None: no evaluation).
    eval_batches: batches of the evaluation.
    partitioner: mesh of the frame rows (default: every device on 'data').
    checkpoint: retention (every step is saved).
    on_start: called on the chief once the checkpoint (if any) is accepted, before anything is
      written (the train verb writes config.gin here).
  Returns:
    The eval metrics, the PCA's explained variance and the residual error after every level.
  """
  if source.sample_rate != config.sample_rate:
    raise ValueError(
      f"Dataset {source.name} holds {source.sample_rate} Hz audio; the codec expects "
      f"{config.sample_rate} Hz. Build the dataset at the codec's rate."
    )
  partitioner = partitioner or Partitioner()
  started = time.perf_counter()
  directory = os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)
  metadata = codec_metadata(config, fit, source.name)
  checkpoint = dataclasses.replace(checkpoint, save_interval_steps=1)
  with Checkpointer(directory, checkpoint, metadata=metadata) as checkpointer:
    restored = None
    if checkpointer.latest_step() is not None:
      restored, _ = checkpointer.restore(_abstract_state(config, partitioner))
      restored = jax.device_get(restored)
    if on_start is not None and jax.process_index() == 0:
      on_start()
    x, weight = collect_frames(config, source, train_split, fit, partitioner)
    if restored is None:
      params, eigenvalues = fit_pca(x, weight, config.latent_dim)
      codebooks = np.zeros(_abstract_state(config, partitioner)[rvq.QUANTIZER]["codebooks"].shape)
      checkpointer.save(0, _state(params, codebooks, 0), {}, force=True)
      fitted = 0
    else:
      params, codebooks = restored["params"], np.array(restored[rvq.QUANTIZER]["codebooks"])
      fitted, eigenvalues = int(restored[FITTED_LEVELS]), None
    scalars = _fit_levels(config, fit, params, codebooks, fitted, x, weight, checkpointer)
    checkpointer.wait_until_finished()
  if eigenvalues is not None:
    kept = float(eigenvalues[: config.latent_dim].sum() / eigenvalues.sum())
    scalars["pca_explained_variance"] = kept
  scalars["fit_seconds"] = time.perf_counter() - started
  codec = SpectralCodec(config, {"params": params, rvq.QUANTIZER: {"codebooks": codebooks}})
  if eval_split is not None:
    scalars.update(evaluate_codec(codec, source, eval_split, fit, eval_batches))
  if jax.process_index() == 0:
    scalars = {**train_loop.write_final_metrics(model_dir, config.num_levels, scalars)}
  print(f"spectral codec: {_summary(scalars, config.num_levels)} → {model_dir}", flush=True)
  return scalars


def _fit_levels(config, fit, params, codebooks, fitted, x, weight, checkpointer) -> dict:
  """Fits levels `fitted`..num_levels-1 in place of `codebooks`, saving after each."""
  residual = jax.jit(lambda f: model.project(params, f))(x)
  total = _weighted_error(residual, weight)
  scalars = {}
  for level in range(config.num_levels):
    if level >= fitted:
      began = time.perf_counter()
      centroids = fit_level(residual, weight, config.rvq.codebook_size, fit, level)
      codebooks[level] = np.asarray(jax.device_get(centroids))
      checkpointer.save(level + 1, _state(params, codebooks, level + 1), {}, force=True)
      logging.info(
        "spectral codec level %d fitted in %.1f s", level + 1, time.perf_counter() - began
      )
    residual = _subtract_nearest(residual, jnp.asarray(codebooks[level]))
    scalars[f"residual_fraction_L{level + 1}"] = _weighted_error(residual, weight) / total
  return scalars


def _summary(scalars: dict, levels: int) -> str:
  keys = (
    "eval/chroma_cosine_all_levels",
    "eval/mel_distance_1_level",
    "eval/mel_distance_all_levels",
  )
  shown = {k.removeprefix("eval/"): round(scalars[k], 3) for k in keys if k in scalars}
  shown["residual_fraction"] = round(scalars[f"residual_fraction_L{levels}"], 3)
  return str(shown)
