"""SpectralCodec: the codec API (shapes, prefixes of levels, checks) over fitted-style variables."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from musiclm_jax.tokenizers import rvq
from musiclm_jax.tokenizers.rvq import RVQConfig
from musiclm_jax.tokenizers.spectral import SpectralCodec, SpectralCodecConfig, model
from tests.size_configs import size_config

SMALL = SpectralCodecConfig(
  rvq=RVQConfig(num_levels=3, codebook_size=8, dim=4), griffin_lim_iters=2
)
AUDIO = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 10 * 480 + 7)).astype(np.float32)


@pytest.fixture(scope="module")
def codec() -> SpectralCodec:
  return SpectralCodec.random_init(SMALL, seed=0)


def test_tiny_size_file_is_the_quickstart_codec():
  tiny = size_config("spectral_codec", "tiny")
  assert (tiny.num_levels, tiny.rvq.codebook_size, tiny.latent_dim) == (8, 256, 32)
  assert (tiny.sample_rate, tiny.hop_length, tiny.frame_rate) == (24_000, 480, 50)
  assert size_config("spectral_codec", "base").num_levels == 12


def test_encode_and_decode_shapes(codec):
  codes = codec.encode(AUDIO)
  assert codes.shape == (2, 11, 3) and codes.dtype == np.int32
  assert 0 <= int(codes.min()) and int(codes.max()) < 8
  assert codec.encode(AUDIO, num_levels=2).shape == (2, 11, 2)
  assert codec.decode(codes).shape == (2, 11 * 480)
  abstract = SpectralCodec.abstract(SMALL)
  assert abstract.encode(jax.ShapeDtypeStruct((1, 960), np.float32)).shape == (1, 2, 3)
  assert abstract.decode(jax.ShapeDtypeStruct((1, 2, 1), np.int32)).shape == (1, 960)
  with pytest.raises(ValueError, match="shapes only"):
    abstract.encode(AUDIO)


@pytest.mark.parametrize("thing", ["spectral_codec", "soundstream"])
def test_both_codecs_hand_out_their_code_vectors(thing):
  """What initialises the stage LMs' acoustic embeddings (models.code_embeddings)."""
  from musiclm_jax.tokenizers.codec_api import random_codec

  config = size_config(thing, "tiny")
  books = random_codec(config).codebooks()
  assert books.shape == (config.num_levels, config.rvq.codebook_size, config.rvq.dim)
  assert books.dtype == np.float32 and np.isfinite(books).all() and books.std() > 0


def test_first_levels_of_the_codes_are_the_codes_of_fewer_levels(codec):
  np.testing.assert_array_equal(codec.encode(AUDIO)[..., :2], codec.encode(AUDIO, num_levels=2))


def test_a_prefix_of_levels_decodes_as_its_sum_of_code_vectors(codec):
  codes = np.asarray(codec.encode(AUDIO))
  books = codec.variables["quantizer"]["codebooks"]
  padded = np.concatenate([codes[..., :1], -np.ones_like(codes[..., 1:])], -1)
  np.testing.assert_array_equal(
    rvq.sum_code_vectors(books, padded), rvq.sum_code_vectors(books, codes[..., :1])
  )
  direct = model.decode(SMALL, codec.variables, padded)
  np.testing.assert_allclose(codec.decode(codes[..., :1]), direct, atol=1e-5)


def test_decoding_is_deterministic_and_one_program_serves_every_prefix(codec):
  codes = codec.encode(AUDIO)
  before = codec.trace_counts["decode"]
  first = np.asarray(codec.decode(codes[..., :1]))
  np.testing.assert_array_equal(first, np.asarray(codec.decode(codes[..., :1])))
  codec.decode(codes)
  assert codec.trace_counts["decode"] - before <= 1


def test_bad_inputs_are_refused_before_anything_runs(codec):
  bad = AUDIO.copy()
  bad[1, 30] = np.nan
  with pytest.raises(ValueError, match="example 1, sample 30"):
    codec.encode(bad)
  with pytest.raises(ValueError, match=r"codes must be in \[0, 8\)"):
    codec.decode(np.full((1, 2, 3), 8, np.int32))
  with pytest.raises(ValueError, match="this codec has 3"):
    codec.decode(np.zeros((1, 2, 4), np.int32))


@pytest.mark.parametrize(
  "change, message",
  [
    (dict(n_fft=1000), "multiple of hop_length"),
    (dict(compression=0.0), "compression"),
    (dict(rvq=RVQConfig(num_levels=1, codebook_size=4, dim=2000)), "exceed"),
    (dict(griffin_lim_momentum=1.0), "momentum"),
  ],
)
def test_config_refuses_what_cannot_work(change, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(SMALL, **change)
