"""One source of truth per setting: sizes live in gin size files, sampling in gin/runs/infer.gin."""

import re
from pathlib import Path

import pytest

import gin
from musiclm_jax.decoding.pipeline import PipelineConfig
from musiclm_jax.main import gin_utils
from musiclm_jax.models.stage_lm import SamplingConfig
from musiclm_jax.tokenizers.mulan.config import AudioTowerConfig, MuLanConfig
from musiclm_jax.tokenizers.mulan.text_tower import TextTowerConfig
from musiclm_jax.tokenizers.rvq import RVQConfig
from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig
from musiclm_jax.tokenizers.spectral.config import SpectralCodecConfig
from musiclm_jax.tokenizers.w2v_bert.config import W2VBertConfig
from tests.size_configs import MACROS, SIZES, size_config

GIN_DIR = Path(__file__).resolve().parents[2] / "gin"
CONFIG_CLASSES = {
  "soundstream": SoundStreamConfig,
  "spectral_codec": SpectralCodecConfig,
  "w2v_bert": W2VBertConfig,
  "mulan": MuLanConfig,
}
# A setting of how to sample, in a line that is not a comment.
SAMPLING = re.compile(r"^[^#\n]*(SamplingConfig|TEMPERATURE|\btemperature\b|\btop_[kp]\b)", re.M)


@pytest.mark.parametrize(
  "cls",
  [
    SoundStreamConfig,
    SpectralCodecConfig,
    W2VBertConfig,
    MuLanConfig,
    AudioTowerConfig,
    TextTowerConfig,
    RVQConfig,
  ],
)
def test_config_dataclasses_define_no_sizes(cls):
  """A size is a gin file; a preset classmethod would be a second definition that can drift."""
  assert [size for size in SIZES if hasattr(cls, size)] == []


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("thing", sorted(MACROS))
def test_every_size_file_builds_its_architecture(thing, size):
  config = size_config(thing, size)
  assert type(config) is CONFIG_CLASSES[thing]
  assert (GIN_DIR / "models" / thing / f"{size}.gin").is_file()


def test_sizes_differ():
  for thing in MACROS:
    assert len({size_config(thing, size) for size in SIZES}) == len(SIZES), thing


def test_no_model_file_binds_sampling():
  """Model files describe what is trained; infer reads sampling from gin/runs/infer.gin only."""
  files = sorted(GIN_DIR.glob("models/**/*.gin"))
  assert len(files) > 20
  offending = [
    str(path.relative_to(GIN_DIR)) for path in files if SAMPLING.search(path.read_text())
  ]
  assert offending == []


def test_infer_samples_as_the_paper_by_default():
  gin_utils.parse(["gin/runs/infer.gin"], [])
  try:
    config = gin_utils.macro("PIPELINE_CONFIG")
  finally:
    gin.clear_config()
  assert (config.semantic, config.coarse, config.fine) == (
    SamplingConfig(temperature=1.0, top_k=0, top_p=1.0),
    SamplingConfig(temperature=0.95, top_k=0, top_p=1.0),
    SamplingConfig(temperature=0.4, top_k=0, top_p=1.0),
  )
  # The library default (quickstart, benchmarks) samples as infer does.
  default = PipelineConfig()
  assert (config.semantic, config.coarse, config.fine) == (
    default.semantic,
    default.coarse,
    default.fine,
  )
