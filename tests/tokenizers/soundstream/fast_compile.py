"""Cheap XLA compiles for the codec tests: their programs run a few times on tiny inputs, so
skipping LLVM's expensive passes saves far more compile time than it costs in run time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compile_fast(fn: Callable[..., Any], *example_args: Any) -> Callable[..., Any]:
  """`jax.jit(fn)` compiled for the shapes of example_args with low optimisation."""
  return jax.jit(fn).lower(*example_args).compile(compiler_options=_OPTIONS)
