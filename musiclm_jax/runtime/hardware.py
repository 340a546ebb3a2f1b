"""Peak numbers of accelerators, for MFU and roofline fractions (dense bf16, per chip)."""

from __future__ import annotations

import jax

# device_kind prefix -> (peak bf16 FLOP/s, HBM bytes/s). Public spec-sheet figures.
_PEAKS: tuple[tuple[str, float, float], ...] = (
  ("TPU v4", 275e12, 1.2e12),
  ("TPU v5 lite", 197e12, 0.82e12),
  ("TPU v5e", 197e12, 0.82e12),
  ("TPU v5p", 459e12, 2.76e12),
  ("TPU v5", 459e12, 2.76e12),
  ("TPU v6 lite", 918e12, 1.64e12),
  ("NVIDIA H200", 989e12, 4.8e12),
  ("NVIDIA H100", 989e12, 3.35e12),
  ("NVIDIA A100", 312e12, 2.0e12),
)


def _lookup(table, device: jax.Device | None, column: int) -> float | None:
  """`column` of the first row whose prefix starts the device kind; None when unknown."""
  kind = (device or jax.devices()[0]).device_kind
  return next((row[column] for row in table if kind.startswith(row[0])), None)


def peak_flops(device: jax.Device | None = None) -> float | None:
  """Peak dense bf16 FLOP/s of one device, or None when unknown (e.g. CPU)."""
  return _lookup(_PEAKS, device, 1)


def peak_memory_bandwidth(device: jax.Device | None = None) -> float | None:
  """HBM bytes/s of one device, or None when unknown."""
  return _lookup(_PEAKS, device, 2)


# device_kind prefix -> HBM bytes per chip.
_HBM_BYTES: tuple[tuple[str, float], ...] = (
  ("TPU v4", 32 * 2**30),
  ("TPU v5 lite", 16 * 2**30),
  ("TPU v5e", 16 * 2**30),
  ("TPU v5p", 95 * 2**30),
  ("TPU v5", 95 * 2**30),
  ("TPU v6 lite", 32 * 2**30),
  ("NVIDIA H200", 141e9),
  ("NVIDIA H100", 80e9),
  ("NVIDIA A100", 80e9),
)


def memory_per_device(device: jax.Device | None = None) -> float | None:
  """HBM capacity in bytes of one device, or None when unknown."""
  return _lookup(_HBM_BYTES, device, 1)
