"""Fixed-length audio crop batches for training the audio tokenizers (SoundStream, w2v-BERT, MuLan).

  source = AudioSource("rendered_music/24khz", data_dir="data")
  ds = audio_crop_dataset(source, split="train", crop_samples=24_000, batch_size=32, seed=0)
  for batch in ds.as_numpy_iterator():  # audio, audio_mask: float32 [32, 24000]; id: [32]
    ...

The pipeline of one host:

1. read its disjoint part of the split (`tfds.even_splits`, so a host reads only its records),
   files in a seeded order that changes each epoch when shuffling; repeat `num_epochs` times;
2. number the clips of the stream (position p = epoch · clips + clip index, p-th clip of this
   host) and cut `crops_per_clip` windows of `crop_samples` from each clip. Training offsets are
   uniform over the valid starts, drawn with `tf.random.stateless_uniform` seeded by
   (seed, p, shard), so a crop is a pure function of the arguments, never of thread timing.
   Eval (`shuffle=False`) windows are consecutive from sample 0: [0, C), [C, 2C), ...;
3. padding policy: a clip shorter than the crop starts at 0 and is zero-padded at the end;
   `audio_mask` is 1 on real samples and 0 on padding. Windows without a real sample (eval
   windows past a clip's end) are dropped, and so are windows whose RMS over their real samples
   is below `min_rms_db` dBFS (silent passages);
4. shuffle crops in a seeded buffer, batch with `drop_remainder=True`, skip `skip_batches`.

The same arguments give the same batches, so a run resumed with `skip_batches=N` sees exactly
what an uninterrupted run sees from batch N on (the skipped batches are still computed). The
per-epoch file order comes from TF's seeded reshuffling: iterate a returned dataset once (build
a new one to start over), and leave `tf.random.set_seed` alone or set it the same on every run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import musiclm_jax.data.builders  # noqa: F401 - registers the builders' names with TFDS
from musiclm_jax.runtime import distributed

_SILENCE_FLOOR = 1e-20  # mean square added before log10: an all-zero window is -200 dBFS


@dataclasses.dataclass(frozen=True)
class AudioSource:
  """A TFDS audio dataset.

  Attributes:
    name: the TFDS name with its config, e.g. 'rendered_music/24khz'.
    data_dir: the TFDS data dir (None: TFDS' default).
    sample_rate: the rate in Hz the dataset must hold (checked against its metadata).
  """

  name: str
  data_dir: str | None = None
  sample_rate: int = 24_000


def _check_args(
  minimum_one: dict[str, int], skip_batches: int, shard_id: int, num_shards: int
) -> None:
  """Raises ValueError on arguments no pipeline can honour.

  Args:
    minimum_one: arguments that must be >= 1, by name.
    skip_batches: must be >= 0.
    shard_id: must be in [0, num_shards).
    num_shards: the number of shards.
  """
  if not 0 <= shard_id < num_shards:
    raise ValueError(f"shard_id={shard_id} must be in [0, num_shards={num_shards})")
  bad = {k: v for k, v in minimum_one.items() if v < 1}
  if bad:
    raise ValueError(f"{', '.join(f'{k}={v}' for k, v in bad.items())}: must be >= 1")
  if skip_batches < 0:
    raise ValueError(f"skip_batches={skip_batches} must be >= 0")


def _host_seed(seed: int, shard_id: int) -> int:
  """A shuffle seed of one host, a pure function of (seed, shard_id); fits in int64."""
  return int(np.random.SeedSequence([seed % 2**63, shard_id]).generate_state(1, np.uint64)[0] >> 1)


def _read_clips(
  source: AudioSource,
  split: str,
  seed: int,
  shuffle: bool,
  shard_id: int,
  num_shards: int,
  with_captions: bool,
) -> tf.data.Dataset:
  """This host's clips of `split` as {'id', 'audio' [samples] (, 'caption')}, once.

  Raises:
    ValueError: the dataset's sample rate is not `source.sample_rate`.
  """
  builder = tfds.builder(source.name, data_dir=source.data_dir)
  rate = builder.info.features["audio"].sample_rate
  if rate != source.sample_rate:
    raise ValueError(
      f"{source.name} holds audio at {rate} Hz but the AudioSource says {source.sample_rate} Hz; "
      "build a config at that rate or fix AudioSource.sample_rate"
    )
  options = tf.data.Options()
  options.deterministic = True
  read_config = tfds.ReadConfig(
    options=options,
    shuffle_seed=_host_seed(seed, shard_id) if shuffle else None,
    shuffle_reshuffle_each_iteration=True if shuffle else None,
  )
  host_split = tfds.even_splits(split, n=num_shards)[shard_id] if num_shards > 1 else split
  dataset = builder.as_dataset(split=host_split, shuffle_files=shuffle, read_config=read_config)
  keys = ("id", "audio", "caption") if with_captions else ("id", "audio")
  return dataset.map(lambda ex: {k: ex[k] for k in keys})


def _crop_windows(
  audio: tf.Tensor, starts: tf.Tensor, crop_samples: int
) -> tuple[tf.Tensor, tf.Tensor]:
  """Windows audio[s : s + crop_samples], zero-padded past the clip's end.

  Args:
    audio: float32 [samples] (may be empty).
    starts: int64 [crops], window starts >= 0.
    crop_samples: window length.

  Returns:
    (windows float32 [crops, crop_samples], mask float32 [crops, crop_samples]: 1 on real
    samples, 0 on padding).
  """
  length = tf.shape(audio, out_type=tf.int64)[0]
  index = starts[:, tf.newaxis] + tf.range(crop_samples, dtype=tf.int64)[tf.newaxis, :]
  real = index < length
  padded = tf.pad(audio, [[0, 1]])  # index `length` reads the appended zero
  windows = tf.gather(padded, tf.minimum(index, length))
  return tf.where(real, windows, 0.0), tf.cast(real, tf.float32)


def _crop_starts(
  length: tf.Tensor, seed: tf.Tensor, crops_per_clip: int, crop_samples: int, shuffle: bool
) -> tf.Tensor:
  """int64 [crops_per_clip]: uniform in [0, max(length - crop, 0)], or k · crop for eval."""
  if not shuffle:
    return tf.range(crops_per_clip, dtype=tf.int64) * crop_samples
  max_start = tf.maximum(length - crop_samples, 0)
  return tf.random.stateless_uniform(
    [crops_per_clip], seed, minval=0, maxval=max_start + 1, dtype=tf.int64
  )


def _keep_crop(crop: dict[str, tf.Tensor], min_rms_db: float | None) -> tf.Tensor:
  """Whether a crop has a real sample and, with `min_rms_db`, is loud enough. bool scalar."""
  real = tf.reduce_sum(crop["audio_mask"])
  keep = real > 0
  if min_rms_db is not None:
    mean_square = tf.reduce_sum(tf.square(crop["audio"]) * crop["audio_mask"]) / tf.maximum(real, 1)
    rms_db = 10.0 * tf.math.log(mean_square + _SILENCE_FLOOR) / tf.math.log(10.0)
    keep = tf.logical_and(keep, rms_db >= min_rms_db)
  return keep


def _crops_of_stream(
  clips: tf.data.Dataset,
  seed: int,
  crop_samples: int,
  crops_per_clip: int,
  shuffle: bool,
  shard_id: int,
  num_shards: int,
) -> tf.data.Dataset:
  """Clip stream → `crops_per_clip` crops per clip, unbatched, in stream order.

  Args:
    clips: {'id', 'audio' [samples], optionally 'caption'} per clip.
    seed: the crop seed.
    crop_samples: samples per crop.
    crops_per_clip: crops per clip.
    shuffle: random offsets (else consecutive windows from 0).
    shard_id: this host's shard.
    num_shards: the number of hosts.

  Returns:
    {'audio', 'audio_mask' float32 [crop_samples], 'id' (, 'caption')} per crop.
  """

  def crop(position, clip):
    # Unique per (host, stream position) so hosts sharing `seed` draw different offsets.
    counter = position * num_shards + shard_id
    key = tf.stack([tf.constant(seed, tf.int64), counter])
    audio = tf.cast(clip["audio"], tf.float32)
    length = tf.shape(audio, out_type=tf.int64)[0]
    starts = _crop_starts(length, key, crops_per_clip, crop_samples, shuffle)
    windows, mask = _crop_windows(audio, starts, crop_samples)
    out = {"audio": windows, "audio_mask": mask, "id": tf.fill([crops_per_clip], clip["id"])}
    if "caption" in clip:
      out["caption"] = tf.fill([crops_per_clip], clip["caption"])
    return out

  crops = clips.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE)
  return crops.unbatch()


def audio_crop_dataset(
  source: AudioSource,
  *,
  split: str,
  crop_samples: int,
  batch_size: int,
  seed: int,
  shuffle: bool = True,
  num_epochs: int | None = None,
  shard_id: int = 0,
  num_shards: int = 1,
  skip_batches: int = 0,
  crops_per_clip: int = 1,
  with_captions: bool = False,
  min_rms_db: float | None = -50.0,
  shuffle_buffer: int = 1024,
) -> tf.data.Dataset:
  """Batched fixed-length audio crops of one host's shard, deterministic for a seed.

  Args:
    source: the TFDS dataset and the sample rate it must hold.
    split: a TFDS split ('train', 'eval', 'train[:90%]', ...).
    crop_samples: samples per crop.
    batch_size: crops per batch on this host; the remainder is dropped.
    seed: seeds the file order, the crop offsets and the shuffle buffer.
    shuffle: training mode (shuffled files and crops, random offsets); False: eval mode (file
      order, windows from sample 0).
    num_epochs: passes over the clips; None repeats forever.
    shard_id: this host's shard in [0, num_shards).
    num_shards: number of hosts; each reads a disjoint part of the split (together: all of it).
    skip_batches: batches to skip at the start (exact resume).
    crops_per_clip: windows cut from each clip per epoch.
    with_captions: add the clips' captions.
    min_rms_db: drop crops whose RMS (dBFS, over real samples) is below this; None keeps all.
    shuffle_buffer: crops in the shuffle buffer.

  Returns:
    A dataset of dicts: `audio` float32 [batch_size, crop_samples] (zero-padded past a clip's
    end), `audio_mask` float32 [batch_size, crop_samples] (1: real sample, 0: padding), `id`
    string [batch_size], and with `with_captions` `caption` string [batch_size].

  Raises:
    ValueError: bad arguments, or the dataset's sample rate is not `source.sample_rate`.
  """
  sizes = {"crop_samples": crop_samples, "batch_size": batch_size, "crops_per_clip": crops_per_clip}
  sizes |= {"shuffle_buffer": shuffle_buffer, "num_epochs": 1 if num_epochs is None else num_epochs}
  _check_args(sizes, skip_batches, shard_id, num_shards)
  clips = _read_clips(source, split, seed, shuffle, shard_id, num_shards, with_captions)
  crops = _crops_of_stream(
    clips.repeat(num_epochs), seed, crop_samples, crops_per_clip, shuffle, shard_id, num_shards
  ).filter(lambda crop: _keep_crop(crop, min_rms_db))
  if shuffle:
    crops = crops.shuffle(
      shuffle_buffer, seed=_host_seed(seed + 1, shard_id), reshuffle_each_iteration=False
    )
  batches = crops.batch(batch_size, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True  # parallel maps must not reorder, whatever the global default
  return batches.with_options(options).skip(skip_batches).prefetch(tf.data.AUTOTUNE)


def host_audio_batches(
  source: AudioSource,
  split: str,
  crop_samples: int,
  batch_size: int,
  seed: int,
  skip_batches: int,
  *,
  shuffle: bool = True,
  features: tuple[str, ...] = ("audio",),
  num_epochs: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """This host's share of each global batch of audio crops, as numpy {feature: [b, samples]}.

  The audio-model jobs (codec, w2v-BERT, k-means, MuLan) all read their data through this;
  asking for the "caption" feature adds the clips' captions (bytes). `num_epochs` None repeats
  the split forever.
  """
  dataset = audio_crop_dataset(
    source,
    split=split,
    crop_samples=crop_samples,
    batch_size=distributed.per_host_batch_size(batch_size),
    seed=seed,
    shuffle=shuffle,
    shard_id=jax.process_index(),
    num_shards=jax.process_count(),
    skip_batches=skip_batches,
    with_captions="caption" in features,
    num_epochs=num_epochs,
  )
  for batch in dataset.as_numpy_iterator():
    yield {name: batch[name] for name in features}
