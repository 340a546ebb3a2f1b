"""musicnn, the packaged music audio tagger, ported to Flax (for FAD_musicnn, KLD and tag adherence).

This is musicnn (Pons & Serra, "musicnn: pre-trained convolutional neural networks for music audio
tagging", ISMIR-LBD 2019; ISC licence), with the weights that ship inside the `musicnn` pip
package (0.1.0). `MTT_musicnn` was trained on MagnaTagATune (50 tags); `MSD_musicnn` has the same
architecture trained on the Million Song Dataset (50 other tags). Only musicnn's code and TF1
checkpoint are read; TensorFlow is used once, to read the checkpoint.

`load_musicnn()` returns a `MusicnnTagger` whose `analyze(clips, sample_rate)` gives, per clip and
per non-overlapping 3 s window, the 50 tag probabilities, the 200-d `penultimate` embedding and
the 753-d `mean_pool`. FAD computed on these embeddings (FAD_musicnn) is a different metric from
FAD_VGGish: its figures are not comparable with published FAD_VGGish numbers.

The front end is musicnn's `extractor.batch_data`: a librosa-style power mel spectrogram (16 kHz,
n_fft 512, hop 256, 96 Slaney mels, centred frames padded with zeros as librosa >= 0.10 does),
cast to float16 and compressed with log10(10000 x + 1) in float16 arithmetic, as musicnn computes
it. One deviation: where 10000 x overflows float16 (mel power above ~6.55, which music
peak-normalised to -1 dBFS reaches in 1-4% of its bins) musicnn feeds +inf to the network, and its
TF graph then returns the same tags for every such clip whatever it holds (measured: a loud piano,
guitar and violin all get guitar 0.37, indian 0.28, electronic 0.27). Here such bins saturate at
float16's largest value, log10(65504 + 1) ~ 4.816, the largest input the network can have seen in
training (an inf there would have made its batch statistics NaN). With it the same three clips get
piano 0.49, guitar 0.74 and violin 0.55 as their top tags. Clips without overflow match musicnn
to ~1e-5; `overflow_fraction` says how much of a clip saturates.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.data import audio_io
from musiclm_jax.layers.spectral import hann_window, slaney_mel_filterbank

PyTree = Any

# musicnn/configuration.py: the front end every packaged model was trained with.
SAMPLE_RATE = 16_000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
WINDOW_SECONDS = 3.0
# musicnn's BN layers are tf.compat.v1.layers.batch_normalization with its default epsilon.
_BN_EPSILON = 1e-3
# musicnn computes log10(10000 x + 1) on a float16 array; 10000 x overflows above this.
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_LOG_CEILING = np.log10(np.float16(_FLOAT16_MAX) + np.float16(1))
MUSICNN_PIP_LINE = "pip install --no-deps musicnn==0.1.0"
# The packaged musicnn-architecture models (MTT_vgg / MSD_vgg are another network).
SUPPORTED_MODELS = ("MTT_musicnn", "MSD_musicnn")
DEFAULT_CHUNK_WINDOWS = 32


def window_frames(seconds: float = WINDOW_SECONDS) -> int:
  """Spectrogram frames per window, as musicnn's extractor derives them.

  `librosa.time_to_frames(seconds, sr=16000, n_fft=512, hop_length=256) + 1`: 187 for 3 s.
  """
  return int((round(seconds * SAMPLE_RATE) - N_FFT // 2) // HOP_LENGTH) + 1


# ---------------------------------------------------------------------------------------------
# Front end (NumPy; musicnn's `batch_data` without librosa)
# ---------------------------------------------------------------------------------------------


@functools.cache
def _mel_filters() -> np.ndarray:
  return slaney_mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS)


def mel_power(audio: np.ndarray) -> np.ndarray:
  """`librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=512, hop_length=256, n_mels=96).T`.

  Centred frames: n_fft // 2 zeros on each side (librosa >= 0.10's default pad_mode='constant'),
  periodic Hann window, |STFT|², Slaney mel filters; float32 throughout as librosa computes it.

  Args:
    audio: float [samples] at 16 kHz (samples >= 1).
  Returns:
    float32 [1 + samples // 256, 96].
  """
  audio = np.asarray(audio, np.float32)
  padded = np.pad(audio, N_FFT // 2)
  frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
  spectrum = np.fft.rfft(frames * hann_window(N_FFT), axis=-1)
  power = np.square(np.abs(spectrum))
  return (power @ _mel_filters()).astype(np.float32, copy=False)


def compress(mel: np.ndarray) -> np.ndarray:
  """musicnn's log compression: float16 cast, then log10(10000 x + 1) in float16 arithmetic.

  Bins where 10000 x overflows float16 saturate at log10(65504 + 1) instead of musicnn's +inf
  (see the module docstring).

  Args:
    mel: [..., 96] mel power.
  Returns:
    float32 [..., 96] holding float16 values.
  """
  mel16 = np.asarray(mel).astype(np.float16)
  with np.errstate(over="ignore"):
    scaled = np.float16(10_000) * mel16
  scaled = np.minimum(scaled, np.float16(_FLOAT16_MAX))
  return np.log10(scaled + np.float16(1)).astype(np.float32)


def overflow_fraction(audio: np.ndarray) -> float:
  """Fraction of a 16 kHz clip's log-mel bins where musicnn's float16 front end overflows."""
  mel16 = mel_power(audio).astype(np.float16)
  with np.errstate(over="ignore"):
    return float(np.mean(np.isinf(np.float16(10_000) * mel16)))


def log_mel(audio: np.ndarray) -> np.ndarray:
  """musicnn's input representation of a 16 kHz clip (`batch_data`'s `audio_rep`).

  Args:
    audio: float [samples] at 16 kHz.
  Returns:
    float32 [1 + samples // 256, 96].
  """
  return compress(mel_power(audio))


def cut_windows(log_mel_frames: np.ndarray, frames: int) -> np.ndarray:
  """Non-overlapping windows of `frames` frames, as `batch_data(..., overlap=n_frames)` cuts them.

  The tail shorter than a window is dropped; a clip shorter than one window is repeat-padded
  (tiled along time and cut) to one window, musicnn's 'repeat-pad' of training.

  Args:
    log_mel_frames: [num_frames, 96].
    frames: window length in frames.
  Returns:
    [max(1, num_frames // frames), frames, 96].
  """
  num_frames = log_mel_frames.shape[0]
  if num_frames < frames:
    repeats = -(-frames // num_frames)
    return np.tile(log_mel_frames, (repeats, 1))[None, :frames]
  count = num_frames // frames
  return log_mel_frames[: count * frames].reshape(count, frames, log_mel_frames.shape[1])


# ---------------------------------------------------------------------------------------------
# Network (musicnn/models.py `build_musicnn`, inference mode)
# ---------------------------------------------------------------------------------------------

_HIGHEST = jax.lax.Precision.HIGHEST


class MusicnnNet(nn.Module):
  """musicnn: musically motivated front end, dense mid end, global-pool dense back end.

  Submodule names are those of the TF1 checkpoint (`conv2d_5`, `batch_normalization_9`, ...),
  numbered in musicnn's graph-construction order, so the conversion is by name.

  Attributes:
    num_classes: tags (50 for both packaged models).
    frontend_filters: 1.6, musicnn's `num_filt` (204 timbral, 51 temporal filters).
    midend_filters: 64 for MTT_musicnn / MSD_musicnn.
    backend_units: 200 for MTT_musicnn / MSD_musicnn.
  """

  num_classes: int = 50
  frontend_filters: float = 1.6
  midend_filters: int = 64
  backend_units: int = 200

  def _bn(self, index: int) -> nn.BatchNorm:
    name = "batch_normalization" + (f"_{index}" if index else "")
    return nn.BatchNorm(use_running_average=True, epsilon=_BN_EPSILON, name=name)

  def _conv(self, index: int, features: int, kernel: tuple[int, ...], padding) -> nn.Conv:
    name = "conv2d" + (f"_{index}" if index else "")
    return nn.Conv(features, kernel, padding=padding, precision=_HIGHEST, name=name)

  def _frontend(self, x: jax.Array) -> jax.Array:
    """[b, t, mels] -> [b, t, 2·timbral + 3·temporal] (f74, f77, s1, s2, s3 concatenated)."""
    mels = x.shape[-1]
    x = self._bn(0)(x[..., None])
    timbral = int(self.frontend_filters * 128)
    temporal = int(self.frontend_filters * 32)
    features = []
    # Timbral blocks: 7-frame kernels spanning 40% / 70% of the mels, time padded 3 | 3.
    for index, fraction in ((0, 0.4), (1, 0.7)):
      conv = self._conv(index, timbral, (7, int(fraction * mels)), ((3, 3), (0, 0)))
      features.append(self._bn(index + 1)(nn.relu(conv(x))).max(axis=2))
    # Temporal blocks: [length, 1] kernels, TF 'same' padding ((k - 1) // 2 before).
    for offset, length in enumerate((128, 64, 32)):
      padding = (((length - 1) // 2, length // 2), (0, 0))
      conv = self._conv(2 + offset, temporal, (length, 1), padding)
      features.append(self._bn(3 + offset)(nn.relu(conv(x))).max(axis=2))
    return jnp.concatenate(features, axis=-1)

  def _midend(self, front: jax.Array) -> list[jax.Array]:
    """The mid end: three 7-frame convolutions over all channels, the last two residual.

    TF's [7, channels] 2-D kernels over a [t, channels, 1] map are 1-D convolutions here.
    Returns [front, m1, m2, m3], each [b, t, c].
    """
    outputs = [front]
    x = front
    for layer in range(3):
      conv = self._conv(5 + layer, self.midend_filters, (7,), ((3, 3),))
      y = self._bn(6 + layer)(nn.relu(conv(x)))
      x = y if layer == 0 else y + x
      outputs.append(x)
    return outputs

  @nn.compact
  def __call__(self, patches: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Tags a batch of log-mel windows.

    Args:
      patches: float32 [batch, frames, 96] log-mel windows (187 frames for 3 s).
    Returns:
      (logits [batch, num_classes], penultimate [batch, backend_units], mean_pool [batch, 753]).
    """
    features = jnp.concatenate(self._midend(self._frontend(patches)), axis=-1)
    max_pool, mean_pool = features.max(axis=1), features.mean(axis=1)
    # TF flattens concat([max, mean], axis=2) of [b, 753, 1] tensors: max/mean interleaved.
    pooled = jnp.stack([max_pool, mean_pool], axis=-1).reshape(features.shape[0], -1)
    pooled = self._bn(9)(pooled)
    hidden = nn.relu(nn.Dense(self.backend_units, precision=_HIGHEST, name="dense")(pooled))
    penultimate = self._bn(10)(hidden)
    logits = nn.Dense(self.num_classes, precision=_HIGHEST, name="dense_1")(penultimate)
    return logits, penultimate, mean_pool


@functools.partial(jax.jit, static_argnums=0)
def _tag(net: MusicnnNet, variables: PyTree, patches: jax.Array) -> tuple[jax.Array, ...]:
  logits, penultimate, mean_pool = net.apply(variables, patches)
  return jax.nn.sigmoid(logits), penultimate, mean_pool


# ---------------------------------------------------------------------------------------------
# Tagger
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaggerOutput:
  """musicnn's outputs for one clip, one row per 3 s window.

  Attributes:
    tags: float32 [n_windows, 50] tag probabilities (sigmoid).
    embeddings: float32 [n_windows, 200] `penultimate` features (after the back end's last BN).
    mean_pool: float32 [n_windows, 753] time-averaged mid-end features.
  """

  tags: np.ndarray
  embeddings: np.ndarray
  mean_pool: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class MusicnnTagger:
  """A packaged musicnn model ready to tag audio (see `load_musicnn`).

  Attributes:
    labels: the tag names, in output order.
    variables: Flax variables {'params', 'batch_stats'} of `net`.
    net: the Flax module.
    model: 'MTT_musicnn' or 'MSD_musicnn'.
    sample_rate: the model's input rate (16 kHz); clips are resampled to it.
    window_seconds: window length (3 s, what the models were trained on).
    chunk_windows: windows per compiled call (the last chunk is zero-padded to it).
  """

  labels: tuple[str, ...]
  variables: PyTree
  net: MusicnnNet = MusicnnNet()
  model: str = "MTT_musicnn"
  sample_rate: int = SAMPLE_RATE
  window_seconds: float = WINDOW_SECONDS
  chunk_windows: int = DEFAULT_CHUNK_WINDOWS

  def __post_init__(self):
    if self.sample_rate != SAMPLE_RATE:
      raise ValueError(f"musicnn's front end is fixed at {SAMPLE_RATE} Hz, got {self.sample_rate}.")
    if self.chunk_windows < 1:
      raise ValueError(f"chunk_windows must be >= 1, got {self.chunk_windows}.")

  def analyze_patches(self, patches: np.ndarray) -> TaggerOutput:
    """Runs the network on log-mel windows (e.g. `cut_windows(log_mel(audio), 187)`).

    Args:
      patches: [n_windows, frames, 96] log-mel windows.
    Returns:
      TaggerOutput with n_windows rows.
    """
    patches = np.asarray(patches, np.float32)
    if patches.ndim != 3 or patches.shape[-1] != N_MELS or not len(patches):
      raise ValueError(f"patches must be [n_windows >= 1, frames, {N_MELS}], got {patches.shape}.")
    chunk = self.chunk_windows
    total = -(-len(patches) // chunk) * chunk
    padded = np.concatenate(
      [patches, np.zeros((total - len(patches),) + patches.shape[1:], np.float32)]
    )
    parts = [_tag(self.net, self.variables, padded[i : i + chunk]) for i in range(0, total, chunk)]
    tags, embeddings, mean_pool = (
      np.concatenate([np.asarray(p[k]) for p in parts])[: len(patches)].astype(np.float32)
      for k in range(3)
    )
    return TaggerOutput(tags=tags, embeddings=embeddings, mean_pool=mean_pool)

  def analyze(self, clips: Sequence[np.ndarray], sample_rate: int) -> list[TaggerOutput]:
    """Tags clips window by window: non-overlapping 3 s windows, tail shorter than one dropped.

    Every window of every clip goes through one compiled function in chunks of
    `chunk_windows`, so a call compiles once however the clips are sized.

    Args:
      clips: mono float audio, each [samples] (any length >= 1 sample; a clip shorter than one
        window is repeat-padded to one).
      sample_rate: their sample rate in Hz; clips are resampled (soxr) to 16 kHz.
    Returns:
      One TaggerOutput per clip, with max(1, num_frames // 187) windows each.
    Raises:
      ValueError: a clip that is not 1-D float audio, is empty or holds NaN/inf (the message
        names its index), or a bad sample rate.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
      raise ValueError(f"sample_rate must be an int (Hz), got {sample_rate!r}.")
    if sample_rate <= 0:
      raise ValueError(f"sample_rate must be positive, got {sample_rate}.")
    frames = window_frames(self.window_seconds)
    windows = []
    for index, clip in enumerate(clips):
      audio = audio_io.resample(_checked_clip(clip, index), int(sample_rate), SAMPLE_RATE)
      if not len(audio):
        raise ValueError(f"clip {index} has no samples left after resampling to {SAMPLE_RATE} Hz.")
      windows.append(cut_windows(log_mel(audio), frames))
    if not windows:
      return []
    out = self.analyze_patches(np.concatenate(windows))
    bounds = np.cumsum([len(w) for w in windows])[:-1]
    fields = [np.split(x, bounds) for x in (out.tags, out.embeddings, out.mean_pool)]
    return [TaggerOutput(tags=t, embeddings=e, mean_pool=m) for t, e, m in zip(*fields)]


def _checked_clip(clip: np.ndarray, index: int) -> np.ndarray:
  """A clip as float32 [samples], or a ValueError naming it."""
  audio = np.asarray(clip)
  if audio.ndim != 1:
    raise ValueError(
      f"clip {index}: expected mono audio [samples], got shape {audio.shape} (downmix first)."
    )
  if not np.issubdtype(audio.dtype, np.floating):
    raise ValueError(
      f"clip {index}: expected float audio in [-1, 1], got dtype {audio.dtype} "
      "(scale integer PCM to float first)."
    )
  if not len(audio):
    raise ValueError(f"clip {index} is empty.")
  if not np.isfinite(audio).all():
    raise ValueError(f"clip {index} holds NaN or inf samples.")
  return audio.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# Loading the packaged checkpoint
# ---------------------------------------------------------------------------------------------


def _musicnn_package():
  try:
    import musicnn.configuration
  except ImportError as error:
    raise ModuleNotFoundError(
      "The musicnn package (which holds the tagger's weights) is not installed. The Makefile's "
      f"install step installs it without its dependencies: `.venv/bin/python -m {MUSICNN_PIP_LINE}`."
    ) from error
  return musicnn


def _labels(model: str) -> tuple[str, ...]:
  configuration = _musicnn_package().configuration
  return tuple(
    {"MTT_musicnn": configuration.MTT_LABELS, "MSD_musicnn": configuration.MSD_LABELS}[model]
  )


def checkpoint_prefix(model: str = "MTT_musicnn") -> str:
  """The TF1 checkpoint prefix of a packaged model (`.../musicnn/MTT_musicnn/`)."""
  if model not in SUPPORTED_MODELS:
    raise ValueError(
      f"Unsupported musicnn model {model!r}; supported: {', '.join(SUPPORTED_MODELS)} "
      "(the VGG baselines have another architecture)."
    )
  directory = os.path.join(os.path.dirname(_musicnn_package().__file__), model)
  if not os.path.isfile(os.path.join(directory, ".index")):
    raise FileNotFoundError(
      f"musicnn's {model} checkpoint is missing ({directory}/.index); reinstall it: "
      f"`.venv/bin/python -m {MUSICNN_PIP_LINE} --force-reinstall`."
    )
  return directory + os.sep


def convert_checkpoint(tensors: dict[str, np.ndarray]) -> PyTree:
  """TF1 musicnn variables (name -> array, Adam slots ignored) -> Flax variables of MusicnnNet.

  Raises:
    ValueError: a variable MusicnnNet needs is missing or has another shape.
  """
  target = jax.eval_shape(MusicnnNet().init, jax.random.key(0), jnp.zeros((1, 187, N_MELS)))
  tf_names = {
    "kernel": "kernel",
    "bias": "bias",
    "scale": "gamma",
    "mean": "moving_mean",
    "var": "moving_variance",
  }
  variables: dict[str, dict[str, dict[str, np.ndarray]]] = {}
  for collection, layers in target.items():
    for layer, leaves in layers.items():
      for leaf, spec in leaves.items():
        suffix = "beta" if (layer.startswith("batch") and leaf == "bias") else tf_names[leaf]
        key = f"{layer}/{suffix}"
        if key not in tensors:
          raise ValueError(f"musicnn checkpoint lacks {key}.")
        value = np.asarray(tensors[key], np.float32)
        if value.size != int(np.prod(spec.shape)):
          raise ValueError(f"musicnn {key}: shape {value.shape}, expected {spec.shape}.")
        # Mid-end 2-D kernels [7, channels, 1, out] are 1-D kernels [7, channels, out] here.
        value = value.reshape(spec.shape)
        variables.setdefault(collection, {}).setdefault(layer, {})[leaf] = value
  return variables


def _read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
  import tensorflow as tf  # a project dependency, needed only to read the TF1 checkpoint

  reader = tf.compat.v1.train.NewCheckpointReader(prefix)
  names = reader.get_variable_to_shape_map()
  return {name: reader.get_tensor(name) for name in names if "Adam" not in name}


@functools.cache
def _load(model: str) -> MusicnnTagger:
  variables = jax.tree.map(
    jnp.asarray, convert_checkpoint(_read_checkpoint(checkpoint_prefix(model)))
  )
  return MusicnnTagger(labels=_labels(model), variables=variables, model=model)


def load_musicnn(model: str = "MTT_musicnn") -> MusicnnTagger:
  """The packaged musicnn model as a Flax tagger (converted once per process, then cached).

  Args:
    model: 'MTT_musicnn' (MagnaTagATune tags, the default) or 'MSD_musicnn' (Million Song
      Dataset tags).
  Returns:
    MusicnnTagger.
  Raises:
    ValueError: another model name.
    ModuleNotFoundError: the musicnn package is not installed (the message says how).
  """
  checkpoint_prefix(model)  # validates the name and the install before caching anything
  return _load(model)


def param_count(tagger: MusicnnTagger) -> int:
  """Number of stored values (weights and BN moving statistics): 792,079 for MTT_musicnn.

  The TF checkpoint holds two more scalars, Adam's beta1_power and beta2_power (792,081 in all).
  """
  return int(sum(np.size(x) for x in jax.tree.leaves(tagger.variables)))
