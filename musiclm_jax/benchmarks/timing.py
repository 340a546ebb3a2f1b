"""Wall-clock timing of jitted work, shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """Median wall seconds of `fn()` (blocked until ready) after one warm-up call (compile)."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]
