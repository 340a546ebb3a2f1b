"""SoundStreamCodec: shapes (tiny and abstract paper), valid codes, prefix decoding, input
validation, one trace per shape."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.checkpoints import (
  CHECKPOINT_SUBDIR,
  CheckpointConfig,
  Checkpointer,
  CheckpointMismatchError,
)
from musiclm_jax.jobs import codec as codec_train_job
from musiclm_jax.models.soundstream import SoundStreamGAN
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers.codec_api import load_codec
from musiclm_jax.tokenizers.soundstream import SoundStream, SoundStreamConfig
from musiclm_jax.tokenizers.soundstream.codec import SoundStreamCodec
from musiclm_jax.training import gan_trainer
from musiclm_jax.training.gan_trainer import make_gan_trainer
from musiclm_jax.training.optimizers import OptimizerConfig
from tests.size_configs import size_config
from tests.tokenizers.soundstream.fast_compile import compile_fast

TINY = size_config("soundstream", "tiny")
HOP = TINY.hop_length
SAMPLES = 10 * HOP + 7  # not a multiple of the hop: 11 frames
AUDIO = np.random.default_rng(0).uniform(-0.5, 0.5, (2, SAMPLES)).astype(np.float32)


@functools.cache
def _codec() -> SoundStreamCodec:
  return SoundStreamCodec.random_init(TINY, seed=0)


@functools.cache
def _codes() -> np.ndarray:
  return np.asarray(_codec().encode(AUDIO))


def _reference(method: str, x: np.ndarray, *args) -> np.ndarray:
  """`SoundStream.apply(..., method=method)` compiled on its own, for comparison."""
  model = SoundStream(TINY)
  fn = lambda v, x: model.apply(v, x, *args, method=method)  # noqa: E731
  return np.asarray(compile_fast(fn, _codec().variables, x)(_codec().variables, x))


@pytest.mark.parametrize(
  "config, levels, codebook",
  [(TINY, 6, 16), (SoundStreamConfig(), 12, 1024)],
  ids=["tiny", "paper"],
)
def test_one_second_is_50_frames_and_decodes_to_24000_samples(config, levels, codebook):
  codec = SoundStreamCodec.abstract(config)  # shapes only: nothing is initialised or compiled
  assert (codec.sample_rate, codec.hop_length, codec.frame_rate) == (24000, 480, 50)
  assert (codec.num_levels, codec.codebook_size) == (levels, codebook)
  assert codec.num_frames(24000) == 50 and codec.num_frames(24001) == 51
  codes = codec.encode(jax.ShapeDtypeStruct((3, 24000), jnp.float32))
  assert codes.shape == (3, 50, levels) and codes.dtype == jnp.int32
  for prefix in (codes, jax.ShapeDtypeStruct((3, 50, 1), jnp.int32)):
    audio = codec.decode(prefix)
    assert audio.shape == (3, 24000) and audio.dtype == jnp.float32
  with pytest.raises(ValueError, match="shapes only"):
    codec.encode(np.zeros((1, 480), np.float32))


def test_encode_returns_valid_ids_equal_to_the_model():
  codes = _codes()
  assert codes.shape == (2, 11, TINY.num_levels) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < TINY.rvq.codebook_size
  assert len(np.unique(codes)) > 1
  np.testing.assert_array_equal(codes, _reference("encode", AUDIO))


def test_encode_num_levels_is_a_prefix_of_all_levels():
  coarse = _codec().encode(jnp.asarray(AUDIO), num_levels=2)
  np.testing.assert_array_equal(coarse, _codes()[..., :2])


def test_decode_of_every_prefix_matches_the_model():
  codes = _codes()
  before = _codec().trace_counts["decode"]
  outputs = [np.asarray(_codec().decode(codes[..., :levels])) for levels in range(1, 7)]
  assert _codec().trace_counts["decode"] - before <= 1  # all prefixes share one program
  for out in outputs:
    assert out.shape == (2, 11 * HOP) and np.isfinite(out).all()
  for a, b in zip(outputs, outputs[1:]):
    assert np.abs(a - b).max() > 1e-6  # each level changes the audio
  for levels in (2, 6):
    expected = _reference("decode", codes[..., :levels])
    np.testing.assert_allclose(outputs[levels - 1], expected, rtol=1e-5, atol=1e-5)


def test_same_shape_is_traced_once():
  codec = _codec()
  audio = np.random.default_rng(1).uniform(-0.5, 0.5, (1, 3 * HOP))
  before = codec.trace_counts
  codes = codec.encode(audio)  # float64 numpy
  codec.encode(jnp.asarray(audio, jnp.float32))
  codec.decode(codes)
  codec.decode(np.asarray(codes)[..., :3].astype(np.int64))
  after = codec.trace_counts
  assert after == {"encode": before["encode"] + 1, "decode": before["decode"] + 1}
  codec.encode(audio[:, :-1])  # 1439 samples: a new shape
  assert codec.trace_counts["encode"] == after["encode"] + 1


def _with(value: float, index: tuple[int, int] = (1, 5)) -> np.ndarray:
  audio = AUDIO.copy()
  audio[index] = value
  return audio


@pytest.mark.parametrize("on_device", [False, True], ids=["numpy", "jax"])
@pytest.mark.parametrize(
  "audio, error, match",
  [
    (AUDIO[0], ValueError, r"\[batch, samples\].*audio\[None\]"),
    (AUDIO[None], ValueError, r"\[batch, samples\]"),
    (AUDIO[:, :0], ValueError, "empty"),
    (_with(np.nan), ValueError, r"NaN\): 1 sample.*example 1, sample 5"),
    (_with(-np.inf), ValueError, r"\(inf\)"),
    ((AUDIO * 32767).astype(np.int16), TypeError, "float audio"),
  ],
  ids=["rank1", "rank3", "empty", "nan", "inf", "int16"],
)
def test_bad_audio_is_rejected(audio, error, match, on_device):
  with pytest.raises(error, match=match):
    _codec().encode(jnp.asarray(audio) if on_device else audio)


@pytest.mark.parametrize("num_levels", [0, 7])
def test_bad_num_levels_is_rejected(num_levels):
  with pytest.raises(ValueError, match=r"num_levels=.* must be in \[1, 6\]"):
    _codec().encode(AUDIO, num_levels=num_levels)


def _codes_with(value: int) -> np.ndarray:
  codes = np.zeros((2, 4, 3), np.int32)
  codes[1, 2, 0] = value
  return codes


@pytest.mark.parametrize("on_device", [False, True], ids=["numpy", "jax"])
@pytest.mark.parametrize(
  "codes, error, match",
  [
    (np.zeros((2, 4), np.int32), ValueError, r"\[batch, frames, levels\]"),
    (np.zeros((2, 0, 3), np.int32), ValueError, "empty"),
    (np.zeros((2, 4, 7), np.int32), ValueError, "7 levels; this codec has 6"),
    (np.zeros((2, 4, 0), np.int32), ValueError, "0 levels"),
    (_codes_with(16), ValueError, r"\[0, 16\), got values in \[0, 16\]"),
    (_codes_with(-1), ValueError, r"\[0, 16\), got values in \[-1, 0\]"),
    (np.zeros((2, 4, 3), np.float32), TypeError, "integer codes"),
  ],
  ids=["rank2", "empty", "too_many_levels", "no_levels", "too_big", "negative", "float"],
)
def test_bad_codes_are_rejected(codes, error, match, on_device):
  with pytest.raises(error, match=match):
    _codec().decode(jnp.asarray(codes) if on_device else codes)


def test_variables_need_params_and_quantizer():
  with pytest.raises(ValueError, match=r"missing \['quantizer'\]"):
    SoundStreamCodec(TINY, {"params": _codec().variables["params"]})


# load_codec: a codec job's checkpoint back as a codec.


def _saved_codec_run(model_dir) -> dict:
  """Saves a codec GAN train state as the codec job does; returns the generator's variables."""
  model = SoundStreamGAN(TINY, crop_samples=4 * HOP)
  single = Partitioner(MeshConfig(num_devices=1, ici_data=1))
  trainer = make_gan_trainer(model, single, 1, OptimizerConfig(), OptimizerConfig())
  state = trainer.init_state(seed=1)
  config = CheckpointConfig(async_save=False, save_on_sigterm=False)
  directory = model_dir / CHECKPOINT_SUBDIR
  with Checkpointer(directory, config, metadata=codec_train_job.codec_metadata(model)) as ckpt:
    ckpt.save(3, state, {"data_batches": 3}, force=True)
  return jax.device_get({"params": state.params[gan_trainer.GENERATOR], **state.model_state})


def test_load_codec_reads_the_generator_without_building_a_gan_trainer(tmp_path, monkeypatch):
  expected = _saved_codec_run(tmp_path)

  def refuse(*args, **kwargs):
    raise AssertionError("load_codec built a GanTrainer")

  monkeypatch.setattr(gan_trainer.GanTrainer, "__init__", refuse)
  codec = load_codec(str(tmp_path))
  assert codec.config == TINY
  assert jax.tree.structure(codec.variables) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(codec.variables), expected)
  assert codec.encode(AUDIO).shape == (2, 11, TINY.rvq.num_levels)


def test_load_codec_refuses_another_models_checkpoint(tmp_path):
  directory = tmp_path / "semantic" / CHECKPOINT_SUBDIR
  config = CheckpointConfig(async_save=False, save_on_sigterm=False)
  with Checkpointer(directory, config, metadata={"model": "semantic"}) as checkpointer:
    checkpointer.save(1, {"params": {"w": jnp.zeros(3)}}, {}, force=True)
  with pytest.raises(CheckpointMismatchError, match=f"{directory} .*not a codec"):
    load_codec(str(tmp_path / "semantic"))


def test_load_codec_without_checkpoint_says_so_and_creates_nothing(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"No complete checkpoint in {tmp_path}"):
    load_codec(str(tmp_path))
  assert not list(tmp_path.iterdir())
