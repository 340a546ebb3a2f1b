"""SoundStream model: shapes (tiny and paper), padding, causality, prefix decoding, overfitting."""

from __future__ import annotations

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.tokenizers.rvq import QUANTIZER
from musiclm_jax.tokenizers.soundstream import SoundStream, SoundStreamConfig, losses
from musiclm_jax.tokenizers.soundstream.seanet import Snake
from tests.size_configs import size_config
from tests.tokenizers.soundstream.fast_compile import compile_fast

TINY = size_config("soundstream", "tiny")
CAUSAL = dataclasses.replace(TINY, causal=True)
SR, HOP = TINY.sample_rate, TINY.hop_length
FRAMES = 10
AUDIO = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (2, FRAMES * HOP)), jnp.float32)


@functools.cache
def _variables() -> dict:
  """Initial variables of the tiny model (causal and centred models share the structure)."""
  model = SoundStream(TINY)
  init = compile_fast(lambda x: model.init(jax.random.key(0), x, train=False), AUDIO)
  return init(AUDIO)


@functools.cache
def _method(config: SoundStreamConfig, method: str, *example_shape_args):
  """Compiled `apply(variables, x, method=method)` for x of the given (shape, dtype)."""
  model = SoundStream(config)
  x = jax.ShapeDtypeStruct(*example_shape_args)
  return compile_fast(lambda v, x: model.apply(v, x, method=method), _variables(), x)


def _run(config: SoundStreamConfig, method: str, x: jax.Array) -> jax.Array:
  return _method(config, method, x.shape, x.dtype)(_variables(), x)


@functools.cache
def _abstract_variables(config: SoundStreamConfig) -> dict:
  """Variable shapes (independent of the audio length)."""
  audio = jax.ShapeDtypeStruct((1, config.hop_length), jnp.float32)
  init = lambda x: SoundStream(config).init(jax.random.key(0), x, train=False)  # noqa: E731
  return jax.eval_shape(init, audio)


def _shapes(config: SoundStreamConfig, samples: int, levels: int | None = None):
  """Abstract (reconstruction, codes, encode, decode) outputs; nothing is compiled."""
  model = SoundStream(config)
  audio = jax.ShapeDtypeStruct((1, samples), jnp.float32)
  variables = _abstract_variables(config)
  recon, out = jax.eval_shape(
    lambda v, x: model.apply(v, x, train=False, num_levels=levels), variables, audio
  )
  codes = jax.eval_shape(lambda v, x: model.apply(v, x, levels, method="encode"), variables, audio)
  decoded = jax.eval_shape(lambda v, c: model.apply(v, c, method="decode"), variables, codes)
  return recon, out.codes, codes, decoded


def test_paper_config_one_second_is_50_frames_of_12_levels():
  recon, _, codes, decoded = _shapes(SoundStreamConfig(), 24000)
  assert recon.shape == (1, 24000)
  assert codes.shape == (1, 50, 12) and codes.dtype == jnp.int32
  assert decoded.shape == (1, 24000)


@pytest.mark.parametrize("samples, frames", [(4800, 10), (5000, 11), (1, 1)])
def test_lengths_are_padded_up_to_the_hop(samples, frames):
  recon, train_codes, codes, decoded = _shapes(TINY, samples)
  assert recon.shape == (1, samples)
  assert train_codes.shape == codes.shape == (1, frames, TINY.num_levels)
  assert decoded.shape == (1, frames * HOP)


@pytest.mark.parametrize("levels", range(1, TINY.num_levels + 1))
def test_any_prefix_of_levels_has_decode_shapes(levels):
  _, train_codes, codes, decoded = _shapes(TINY, 4800, levels)
  assert train_codes.shape == codes.shape == (1, FRAMES, levels)
  assert decoded.shape == (1, 4800)


def _perturb_after(audio: jax.Array, sample: int) -> jax.Array:
  noise = np.random.default_rng(1).normal(size=audio.shape) * 0.3
  return audio + jnp.asarray(np.where(np.arange(audio.shape[1]) >= sample, noise, 0.0))


@pytest.mark.parametrize("frame", [0, 4, 8])
def test_causal_encoder_ignores_the_future(frame):
  changed = _perturb_after(AUDIO, (frame + 1) * HOP)
  before, after = _run(CAUSAL, "embed", AUDIO), _run(CAUSAL, "embed", changed)
  np.testing.assert_allclose(after[:, : frame + 1], before[:, : frame + 1], atol=1e-6)
  assert np.max(np.abs(after[:, frame + 1 :] - before[:, frame + 1 :])) > 1e-3


def test_centred_encoder_looks_ahead():
  changed = _perturb_after(AUDIO, 5 * HOP)
  before, after = _run(TINY, "embed", AUDIO), _run(TINY, "embed", changed)
  assert np.max(np.abs(after[:, 4] - before[:, 4])) > 1e-3


def test_causal_decoder_ignores_future_codes():
  codes = _run(CAUSAL, "encode", AUDIO)
  frame = 4
  changed = codes.at[:, frame + 1 :].set((codes[:, frame + 1 :] + 1) % TINY.rvq.codebook_size)
  before, after = _run(CAUSAL, "decode", codes), _run(CAUSAL, "decode", changed)
  end = (frame + 1) * HOP
  np.testing.assert_allclose(after[:, :end], before[:, :end], atol=1e-6)
  assert np.max(np.abs(after[:, end:] - before[:, end:])) > 1e-4


@pytest.mark.parametrize("levels", [1, TINY.num_levels])
def test_decoding_a_prefix_of_codes_equals_the_forward_pass(levels):
  model = SoundStream(TINY)
  audio = AUDIO[:, :4700]  # not a multiple of the hop
  forward = compile_fast(
    lambda v, x: model.apply(v, x, train=False, num_levels=levels), _variables(), audio
  )
  recon, out = forward(_variables(), audio)
  codes = _run(TINY, "encode", audio)
  np.testing.assert_array_equal(out.codes, codes[..., :levels])
  decoded = _run(TINY, "decode", codes[..., :levels])
  np.testing.assert_allclose(decoded[:, :4700], recon, atol=1e-5)


def test_sharded_forward_equals_unsharded():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices for a 2x2x2 mesh")
  partitioner = Partitioner(MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2))
  model, audio = SoundStream(TINY), jnp.concatenate([AUDIO, -AUDIO])  # batch 4 = data × fsdp

  def forward(v, x):
    recon, out = model.apply(v, x, train=False)
    return recon, out.codes

  expected = compile_fast(forward, _variables(), audio)(_variables(), audio)
  with partitioner.activate():
    sharded = jax.device_put(audio, partitioner.batch_sharding(2))
    got = compile_fast(forward, _variables(), sharded)(_variables(), sharded)
  assert got[0].sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_array_equal(got[1], expected[1])
  np.testing.assert_allclose(got[0], expected[0], atol=1e-5)


def test_bad_shapes_raise():
  model = SoundStream(TINY)
  with pytest.raises(ValueError, match=r"\[batch, samples\]"):
    model.apply(_variables(), jnp.zeros((480,)), train=False)
  with pytest.raises(ValueError, match=r"\[batch, frames, levels\]"):
    model.apply(_variables(), jnp.zeros((10, 6), jnp.int32), method="decode")


def _tones(samples: int = 4800) -> jax.Array:
  """[2, samples]: a 220→2620 Hz chirp and a 440 Hz sine at half scale."""
  t = np.arange(samples) / SR
  chirp = np.sin(2 * np.pi * (220 + 2000 * t) * t)
  return jnp.asarray(0.5 * np.stack([chirp, np.sin(2 * np.pi * 440 * t)]), jnp.float32)


def _overfit_step(model: SoundStream, optimizer: optax.GradientTransformation):
  """(params, quantizer, opt_state, audio, key) -> (params, quantizer, opt_state, mel loss)."""

  def loss_fn(params, quantizer, audio, key):
    (recon, out), updated = model.apply(
      {"params": params, QUANTIZER: quantizer},
      audio,
      train=True,
      rngs={QUANTIZER: key},
      mutable=[QUANTIZER],
    )
    mel = losses.multiscale_mel_loss(recon, audio, SR)
    total = mel + losses.multi_resolution_stft_loss(recon, audio) + out.commitment_loss
    return total, (mel, updated[QUANTIZER])

  def step(params, quantizer, opt_state, audio, key):
    grads, (mel, quantizer) = jax.grad(loss_fn, has_aux=True)(params, quantizer, audio, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), quantizer, opt_state, mel

  return step


def test_generator_overfits_tones_through_the_quantizer():
  model, optimizer = SoundStream(TINY), optax.adam(3e-3)
  audio, variables = _tones(), _variables()
  params, quantizer = variables["params"], variables[QUANTIZER]
  opt_state = optimizer.init(params)
  key = jax.random.key(0)
  step = compile_fast(_overfit_step(model, optimizer), params, quantizer, opt_state, audio, key)
  mels = []
  for i in range(40):
    params, quantizer, opt_state, mel = step(
      params, quantizer, opt_state, audio, jax.random.fold_in(key, i)
    )
    mels.append(float(mel))
  assert bool(quantizer["quantizer"]["initialized"])
  assert np.all(np.isfinite(mels))
  assert np.mean(mels[-3:]) < 0.4 * mels[0], mels


SNAKE = dataclasses.replace(TINY, activation="snake")


def test_snake_is_x_plus_sin_squared_over_alpha_per_channel():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5, 2)), jnp.float32)
  alpha = jnp.asarray([2.0, 0.5])
  got = Snake().apply({"params": {"alpha": alpha}}, x)
  np.testing.assert_allclose(got, x + np.sin(alpha * x) ** 2 / alpha, rtol=1e-6, atol=1e-6)


def test_snake_codec_starts_at_the_scale_of_its_input():
  """Every activation learns its own α (from 1), and residual branches start at zero: without
  that, Snake's non-negative sin² compounds through the stack to ~50× the input's RMS."""
  model = SoundStream(SNAKE)
  variables = compile_fast(lambda x: model.init(jax.random.key(0), x, train=False), AUDIO)(AUDIO)
  flat = flax.traverse_util.flatten_dict(variables["params"])
  alphas = [v for k, v in flat.items() if k[-1] == "alpha"]
  # 4 blocks × (3 units × 2 + 1) + 1 in the encoder and in the decoder.
  assert len(alphas) == 2 * (4 * 7 + 1) and all(np.all(a == 1.0) for a in alphas)
  pointwise = [v for k, v in flat.items() if "pointwise" in k and k[-1] == "kernel"]
  assert pointwise and not any(np.any(kernel) for kernel in pointwise)
  recon, _ = compile_fast(lambda v, x: model.apply(v, x, train=False), variables, AUDIO)(
    variables, AUDIO
  )
  rms = lambda a: float(jnp.sqrt(jnp.mean(jnp.square(a))))  # noqa: E731
  assert 0.01 * rms(AUDIO) < rms(recon) < rms(AUDIO)


def test_snake_codec_decodes_a_prefix_of_codes_like_the_forward_pass():
  model = SoundStream(SNAKE)
  variables = compile_fast(lambda x: model.init(jax.random.key(1), x, train=False), AUDIO)(AUDIO)
  forward = compile_fast(
    lambda v, x: model.apply(v, x, train=False, num_levels=2), variables, AUDIO
  )
  recon, out = forward(variables, AUDIO)
  decode = compile_fast(lambda v, c: model.apply(v, c, method="decode"), variables, out.codes)
  np.testing.assert_allclose(decode(variables, out.codes), recon, atol=1e-5)
