"""Test setup: 8 fake CPU devices, set before JAX is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
