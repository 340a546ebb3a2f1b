"""Test setup: 8 fake CPU devices, set before JAX is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# libtpu locks /tmp/libtpu_lockfile for the life of the process that loads it, so the compile
# tests (compile-only TPU topologies, no chips) in the two xdist workers would lock each other
# out. The lock guards real TPU chips, which tests never use.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

# Tests compare sharded and unsharded results exactly; keep matmuls at full precision.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def num_devices() -> int:
  return jax.device_count()


@pytest.fixture(scope="module")
def persistent_compilation_cache(tmp_path_factory):
  """A module's jobs each build their own trainer; a persistent cache compiles each step once.

  Use with `pytestmark = pytest.mark.usefixtures("persistent_compilation_cache")`.
  """
  previous = (
    jax.config.jax_compilation_cache_dir,
    jax.config.jax_persistent_cache_min_compile_time_secs,
  )
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  yield
  jax.config.update("jax_compilation_cache_dir", previous[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])


@pytest.fixture(scope="session")
def token_world(tmp_path_factory):
  """A tiny rendered corpus (3 TFDS files per split) and tiny trained tokenizers for it.

  Shared by the tokens-task, cache and tokenize-verb tests: training the five tokenizer pieces
  costs about a minute, once per session. Streams: acoustic 12 × 16 at 50 Hz, semantic 32 at
  25 Hz, MuLan 12 × 8, so the paper's stage lengths (DESIGN §3) hold at paper crops.
  """
  from musiclm_jax.data.audio_batches import AudioSource
  from musiclm_jax.data.builders import build
  from musiclm_jax.data.render.corpus import render_corpus
  from musiclm_jax.data.token_bundle import bundle_under
  from tests.tiny_tokenizers import train_tiny_tokenizers

  manual_dir = tmp_path_factory.mktemp("token_world_rendered")
  render_corpus(
    str(manual_dir), num_clips=12, clip_seconds=4.0, seed=1, progress=False, group_size=2
  )
  data_dir = str(tmp_path_factory.mktemp("token_world_tfds"))
  build.build_dataset("rendered_music", data_dir=data_dir, manual_dir=str(manual_dir), num_shards=3)
  root = str(tmp_path_factory.mktemp("token_world_tokenizers"))
  train_tiny_tokenizers(root, AudioSource("rendered_music/24khz", data_dir))
  return TokenWorld(data_dir=data_dir, tokenizers_dir=root, bundle=bundle_under(root, batch_size=4))


class TokenWorld:
  """What `token_world` made: the TFDS data dir, the tokenizers' root and their bundle config."""

  def __init__(self, data_dir, tokenizers_dir, bundle):
    self.data_dir, self.tokenizers_dir, self.bundle = data_dir, tokenizers_dir, bundle
