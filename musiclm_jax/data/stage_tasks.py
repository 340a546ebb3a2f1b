"""SeqIO tasks that turn per-clip token streams into stage-LM examples (DESIGN §3).

A source yields one example per clip: `mulan` [mulan_levels], `semantic` [T_s] and `acoustic`
[T_a, acoustic_levels] raw codes, T_s and T_a varying per clip. A stage task

1. keeps the families its stage reads and checks their shapes and code ranges,
2. applies the short-clip policy ('drop': remove clips shorter than the crop; 'pad': keep them),
3. takes a random *aligned* crop: semantic frames [s, s + F) and acoustic frames
   [r·s, r·(s + F)) with r acoustic frames per semantic frame, s drawn from seqio's per-example
   stateless seeds so that it is a pure function of the dataset seed and the example's position,
4. encodes the crop into `inputs` / `targets` ids with the offsets of `StageLayout` (identical to
   `StageLayout.encode`); positions of a padded short clip hold `PAD_ID`.

`get_stage_dataset` batches those through `seqio.PrefixLMFeatureConverter` for the trainer.
"""

from __future__ import annotations

import functools

import numpy as np
import seqio
import tensorflow as tf

from musiclm_jax.stages import ACOUSTIC, MULAN, PAD_ID, SEMANTIC, Segment, StageLayout

SHORT_CLIP_POLICIES = ("drop", "pad")
_MISSING = -1  # raw-code marker of a padded position; becomes PAD_ID after encoding


def stage_feature_lengths(layout: StageLayout) -> dict[str, int]:
  """Task feature lengths for seqio: {'inputs': inputs_length, 'targets': targets_length}."""
  return {"inputs": layout.inputs_length, "targets": layout.targets_length}


def stage_output_features(layout: StageLayout) -> dict[str, seqio.Feature]:
  """The task's output features: int32 id sequences over the stage's padded vocabulary."""
  vocabulary = seqio.PassThroughVocabulary(size=layout.padded_vocab_size())
  return {
    name: seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32) for name in ("inputs", "targets")
  }


def _time_families(layout: StageLayout) -> tuple[str, ...]:
  return tuple(f for f in layout.families if f in (SEMANTIC, ACOUSTIC))


def _check_spec(layout: StageLayout, spec: dict[str, tf.TensorSpec]) -> None:
  """Fails at pipeline construction on missing families or statically wrong shapes."""
  missing = [f for f in layout.families if f not in spec]
  if missing:
    raise ValueError(
      f"{layout.stage} stage task needs token families {missing}; the source yields {sorted(spec)}"
    )
  tokens = layout.tokens
  expected = {
    MULAN: [tokens.mulan_levels],
    SEMANTIC: [None],
    ACOUSTIC: [None, tokens.acoustic_levels],
  }
  for family in layout.families:
    if not spec[family].dtype.is_integer or not spec[family].shape.is_compatible_with(
      expected[family]
    ):
      raise ValueError(
        f"{layout.stage} stage task: source feature '{family}' must be an integer tensor of "
        f"shape {expected[family]} (None: any length), got {spec[family]}"
      )


def _validated(features: dict[str, tf.Tensor], layout: StageLayout) -> dict[str, tf.Tensor]:
  """Keeps the stage's families as int32, asserting code ranges and any unknown level dims.

  Messages avoid quotes: tf escapes them in the error text.
  """
  spec = layout.tokens
  levels = {MULAN: spec.mulan_levels, ACOUSTIC: spec.acoustic_levels}
  out = {}
  for family in layout.families:
    x = tf.cast(features[family], tf.int32)
    size = spec.codebook_size(family)
    message = f"{layout.stage} stage task: {family} codes must be in [0, {size})"
    checks = [
      tf.debugging.assert_non_negative(x, message=message),
      tf.debugging.assert_less(x, size, message=message),
    ]
    if family in levels and x.shape[-1] is None:
      checks.append(
        tf.debugging.assert_equal(
          tf.shape(x)[-1],
          levels[family],
          message=f"{family} tokens must have {levels[family]} levels",
        )
      )
    with tf.control_dependencies(checks):
      out[family] = tf.identity(x)
  return out


def _usable_semantic_frames(features: dict[str, tf.Tensor], layout: StageLayout) -> tf.Tensor:
  """Semantic frames for which both time streams the stage reads have data. int32 scalar."""
  ratio = layout.tokens.acoustic_frames_per_semantic
  lengths = []
  if SEMANTIC in _time_families(layout):
    lengths.append(tf.shape(features[SEMANTIC])[0])
  if ACOUSTIC in _time_families(layout):
    lengths.append(tf.shape(features[ACOUSTIC])[0] // ratio)
  return tf.reduce_min(tf.stack(lengths))


def _validate_and_filter(
  dataset: tf.data.Dataset, layout: StageLayout, short_clip_policy: str
) -> tf.data.Dataset:
  """Preprocessor: validation plus the short-clip policy.

  Empty clips are dropped under both policies: an all-PAD example has no target to learn.
  """
  _check_spec(layout, dataset.element_spec)
  dataset = dataset.map(
    functools.partial(_validated, layout=layout), num_parallel_calls=tf.data.AUTOTUNE
  )
  min_frames = layout.semantic_frames if short_clip_policy == "drop" else 1
  return dataset.filter(lambda ex: _usable_semantic_frames(ex, layout) >= min_frames)


def _crop_time(x: tf.Tensor, start: tf.Tensor, length: tf.Tensor, crop: int) -> tf.Tensor:
  """x[start : start + length] padded with `_MISSING` up to `crop` frames (static)."""
  x = x[start : start + length]
  padding = [[0, crop - length]] + [[0, 0]] * (len(x.shape) - 1)
  x = tf.pad(x, padding, constant_values=_MISSING)
  return tf.ensure_shape(x, [crop] + x.shape[1:].as_list())


@seqio.map_over_dataset(num_seeds=1)
def _random_aligned_crop(
  features: dict[str, tf.Tensor], seed: tf.Tensor, layout: StageLayout
) -> dict[str, tf.Tensor]:
  """Crops semantic [s, s+F) and acoustic [r·s, r·(s+F)) with s uniform over valid starts.

  A clip shorter than the crop (kept by the 'pad' policy) starts at 0 and is padded.
  """
  usable = _usable_semantic_frames(features, layout)
  crop = layout.semantic_frames
  max_start = tf.maximum(usable - crop, 0)
  start = tf.random.stateless_uniform([], seed, minval=0, maxval=max_start + 1, dtype=tf.int32)
  length = tf.minimum(usable, crop)
  ratio = layout.tokens.acoustic_frames_per_semantic
  out = {MULAN: features[MULAN]} if MULAN in features else {}
  if SEMANTIC in features:
    out[SEMANTIC] = _crop_time(features[SEMANTIC], start, length, crop)
  if ACOUSTIC in features:
    out[ACOUSTIC] = _crop_time(
      features[ACOUSTIC], ratio * start, ratio * length, layout.acoustic_frames
    )
  return out


def _encode_segments_tf(
  features: dict[str, tf.Tensor], segments: tuple[Segment, ...], offsets: np.ndarray
) -> tf.Tensor:
  """tf twin of `StageLayout.encode_*` for one example; `_MISSING` codes become PAD_ID.

  Args:
    features: raw codes of one crop, as `StageLayout.split_clip` takes them (no batch dims).
    segments: the part's segments.
    offsets: int [length], first id of each position's range (`*_id_ranges()[:, 0]`).

  Returns:
    int32 [length].
  """
  flat = []
  for segment in segments:
    x = features[segment.family]
    if segment.family == ACOUSTIC:
      x = x[:, segment.level_lo : segment.level_hi]  # frame-major after the reshape below
    flat.append(tf.reshape(x, [-1]))
  raw = tf.concat(flat, axis=0)
  ids = raw + tf.constant(offsets, tf.int32)
  return tf.where(raw == _MISSING, tf.constant(PAD_ID, tf.int32), ids)


def _encode(dataset: tf.data.Dataset, layout: StageLayout) -> tf.data.Dataset:
  """Preprocessor: crop features → {'inputs', 'targets'} ids."""
  inputs_offsets = layout.inputs_id_ranges()[:, 0].astype(np.int32)
  targets_offsets = layout.target_id_ranges()[:, 0].astype(np.int32)

  def encode(features):
    return {
      "inputs": _encode_segments_tf(features, layout.inputs_segments, inputs_offsets),
      "targets": _encode_segments_tf(features, layout.targets_segments, targets_offsets),
    }

  return dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE)


@seqio.map_over_dataset(num_seeds=1)
def _drop_conditioning(
  features: dict[str, tf.Tensor], seed: tf.Tensor, rate: float, mulan_levels: int
) -> dict[str, tf.Tensor]:
  """With probability `rate`, replaces the MuLan tokens at the start of `inputs` by PAD_ID.

  Trains the unconditional model of classifier-free guidance inside the conditional one; the
  decoding pipeline asks for the same PAD-conditioned inputs (`guidance_scale`).
  """
  drop = tf.random.stateless_uniform([], seed) < rate
  inputs = features["inputs"]
  dropped = tf.concat(
    [tf.fill([mulan_levels], tf.constant(PAD_ID, inputs.dtype)), inputs[mulan_levels:]], 0
  )
  return {**features, "inputs": tf.where(drop, dropped, inputs)}


def make_stage_task(
  name: str,
  source: seqio.DataSource,
  layout: StageLayout,
  *,
  short_clip_policy: str = "drop",
  shuffle_buffer_size: int = 1000,
  conditioning_dropout: float = 0.0,
  register: bool = True,
) -> seqio.Task:
  """Builds (and registers) the seqio Task of one stage.

  Args:
    name: task name; re-registering a name replaces the earlier task.
    source: yields per-clip `mulan` [mulan_levels], `semantic` [T_s], `acoustic`
      [T_a, acoustic_levels] integer codes (only the families the stage reads are needed).
    layout: the stage's sequence format and crop length.
    short_clip_policy: 'drop' removes clips shorter than the crop; 'pad' keeps them, cropped from
      frame 0 and padded with PAD_ID (which the loss ignores). Empty clips are always dropped.
    shuffle_buffer_size: examples in the post-crop shuffle buffer.
    conditioning_dropout: probability of replacing an example's MuLan tokens by PAD (semantic and
      coarse stages), for classifier-free guidance at decoding. 0 (the paper): never.
    register: add the task to `seqio.TaskRegistry`.

  Returns:
    A task with features `inputs` int32 [inputs_length] and `targets` int32 [targets_length].
  """
  if short_clip_policy not in SHORT_CLIP_POLICIES:
    raise ValueError(
      f"short_clip_policy must be one of {SHORT_CLIP_POLICIES}, got {short_clip_policy!r}"
    )
  if not 0.0 <= conditioning_dropout <= 1.0:
    raise ValueError(f"conditioning_dropout must be in [0, 1], got {conditioning_dropout}")
  if conditioning_dropout and MULAN not in layout.families:
    raise ValueError(f"the {layout.stage} stage has no MuLan conditioning to drop")
  preprocessors = [
    functools.partial(_validate_and_filter, layout=layout, short_clip_policy=short_clip_policy),
    functools.partial(_random_aligned_crop, layout=layout),
    functools.partial(_encode, layout=layout),
  ]
  if conditioning_dropout:
    preprocessors.append(
      functools.partial(
        _drop_conditioning, rate=conditioning_dropout, mulan_levels=layout.tokens.mulan_levels
      )
    )
  task = seqio.Task(
    name,
    source=source,
    output_features=stage_output_features(layout),
    preprocessors=preprocessors,
    shuffle_buffer_size=shuffle_buffer_size,
  )
  if register:
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add_provider(name, task)
  return task


def _loss_on_targets_only(batch: dict[str, tf.Tensor], inputs_length: int) -> dict[str, tf.Tensor]:
  """Zeroes loss weights on the whole prefix.

  PrefixLMFeatureConverter computes them as (position in inputs) XOR (token != PAD), which puts
  weight 1 on PAD tokens inside the inputs (short clips padded by the 'pad' policy).
  """
  tokens = batch["decoder_target_tokens"]
  in_targets = tf.range(tf.shape(tokens)[-1]) >= inputs_length
  weights = tf.logical_and(in_targets[tf.newaxis, :], tokens != PAD_ID)
  return {**batch, "decoder_loss_weights": tf.cast(weights, tf.int32)}


def get_stage_dataset(
  task_or_mixture: str | seqio.Task | seqio.Mixture,
  layout: StageLayout,
  *,
  split: str,
  batch_size: int,
  seed: int,
  shuffle: bool = True,
  num_epochs: int | None = None,
  shard_id: int = 0,
  num_shards: int = 1,
  skip_batches: int = 0,
) -> tf.data.Dataset:
  """Batched, deterministic PrefixLM model features of one host's shard.

  The same arguments always give the same batches (crops, order, shuffles), so a run resumed with
  `skip_batches=N` sees exactly the batches an uninterrupted run sees from batch N on (the skipped
  batches are still computed). All hosts use the same `seed`, seqio's convention, so that a
  source which shuffles before sharding stays disjoint; the k-th example of every host therefore
  draws the same crop seed (the crop start still depends on each clip's length).

  Args:
    task_or_mixture: a registered name or the task / mixture itself.
    layout: the stage layout the task was built with.
    split: source split.
    batch_size: examples per batch on this host; the remainder is dropped.
    seed: seeds shuffling and crops.
    shuffle: shuffle examples (buffered, after cropping).
    num_epochs: passes over the data; None repeats forever.
    shard_id: this host's shard in [0, num_shards).
    num_shards: number of disjoint shards (hosts).
    skip_batches: batches to skip at the start (resuming).

  Returns:
    A dataset of dicts, each int32 [batch_size, inputs_length + targets_length]:
    `decoder_target_tokens`, `decoder_input_tokens` (shifted right, PAD as BOS),
    `decoder_loss_weights` (1 on non-PAD targets), `decoder_causal_attention` (1 on the prefix
    and the first target position, which reads the last prefix token).
  """
  if not 0 <= shard_id < num_shards:
    raise ValueError(f"shard_id={shard_id} must be in [0, num_shards={num_shards})")
  if batch_size < 1 or skip_batches < 0:
    raise ValueError(
      f"need batch_size >= 1 and skip_batches >= 0, got {batch_size}, {skip_batches}"
    )
  dataset = seqio.get_dataset(
    task_or_mixture,
    task_feature_lengths=stage_feature_lengths(layout),
    feature_converter=seqio.PrefixLMFeatureConverter(pack=False),
    dataset_split=split,
    shuffle=shuffle,
    num_epochs=num_epochs,
    shard_info=seqio.ShardInfo(shard_id, num_shards) if num_shards > 1 else None,
    verbose=False,
    seed=seed,
    batch_size=batch_size,
  )
  dataset = dataset.map(
    functools.partial(_loss_on_targets_only, inputs_length=layout.inputs_length),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  options = tf.data.Options()
  options.deterministic = True  # parallel maps must not reorder, whatever the global default
  return dataset.with_options(options).skip(skip_batches)
