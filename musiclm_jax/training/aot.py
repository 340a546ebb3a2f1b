"""Ahead-of-time compilation of a train step for hardware this host does not have.

With `libtpu` installed, `jax.experimental.topologies` describes a TPU slice (e.g. 'v5e:4x4') as
compile-only devices; the train step is lowered and compiled for that mesh on a CPU host, and
XLA reports per-chip memory and FLOPs. This checks pod configs without pods.
"""

from __future__ import annotations

import dataclasses
import math

import jax
from jax.experimental import topologies

from musiclm_jax.models.stage_lm import StageLM, train_flops_per_token
from musiclm_jax.partitioning import MeshConfig, Partitioner
from musiclm_jax.runtime import hardware
from musiclm_jax.training.optimizers import OptimizerConfig, make_optimizer
from musiclm_jax.training.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class CompileReport:
  """What one compiled train step costs on each chip."""

  topology: str
  device_kind: str
  num_devices: int
  mesh_shape: dict[str, int]
  batch_size: int
  num_params: int
  argument_bytes: int
  output_bytes: int
  temp_bytes: int
  alias_bytes: int
  code_bytes: int
  compiled_flops_per_device: float
  model_flops_per_step: float
  hbm_bytes_per_device: float | None

  @property
  def peak_bytes_per_device(self) -> int:
    """Live memory of the step: arguments + outputs (minus donated aliases) + temporaries."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  @property
  def fits(self) -> bool | None:
    if self.hbm_bytes_per_device is None:
      return None
    return self.peak_bytes_per_device <= self.hbm_bytes_per_device

  def summary(self) -> str:
    gib = 2.0**30
    hbm = (
      "unknown" if self.hbm_bytes_per_device is None else f"{self.hbm_bytes_per_device / gib:.1f}"
    )
    return "\n".join(
      [
        f"topology {self.topology}: {self.num_devices} × {self.device_kind}, mesh {self.mesh_shape}",
        f"parameters: {self.num_params:,} ({self.num_params / 1e6:.1f}M)",
        f"global batch: {self.batch_size}",
        f"per-chip memory: {self.peak_bytes_per_device / gib:.2f} GiB of {hbm} GiB "
        f"(arguments {self.argument_bytes / gib:.2f}, temporaries {self.temp_bytes / gib:.2f}, "
        f"outputs {self.output_bytes / gib:.2f}, donated {self.alias_bytes / gib:.2f}) -> "
        f"{'fits' if self.fits else 'DOES NOT FIT' if self.fits is False else 'unknown capacity'}",
        f"FLOPs per step: {self.model_flops_per_step:.3e} model (6N + attention); XLA cost "
        f"analysis {self.compiled_flops_per_device * self.num_devices:.3e} (counts a scanned "
        f"layer loop's body once, so it undercounts scanned models)",
      ]
    )


def topology_devices(topology: str, num_slices: int = 1) -> list[jax.Device]:
  """Compile-only devices of a TPU topology such as 'v5e:4x4' (needs libtpu).

  `num_slices` > 1 describes a multislice job: that many copies of the slice joined over the
  data-centre network, each device with its `slice_index` (what the DCN mesh degrees split).
  """
  if num_slices < 1:
    raise ValueError(f"num_slices must be >= 1, got {num_slices}.")
  try:
    return list(topologies.get_topology_desc(topology, "tpu", num_slices=num_slices).devices)
  except Exception as e:  # libtpu raises several types for unknown names or a missing runtime
    raise ValueError(
      f"Cannot describe TPU topology {topology!r} ({e}). Install the `tpu` extra "
      "(libtpu) and use names like 'v5e:4x4', 'v4:2x2x4', 'v5p:4x4x4'."
    ) from None


def compile_train_step(
  model: StageLM,
  partitioner: Partitioner,
  *,
  batch_size: int,
  optimizer: OptimizerConfig = OptimizerConfig(),
  num_microbatches: int = 1,
  topology: str = "",
) -> CompileReport:
  """Lowers and compiles `model`'s train step on `partitioner`'s (possibly compile-only) mesh."""
  trainer = Trainer(
    model,
    make_optimizer(optimizer),
    partitioner,
    batch_size=batch_size,
    num_microbatches=num_microbatches,
  )
  compiled = trainer.lower_train_step().compile()
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(trainer.abstract_state.params))
  device = partitioner.mesh.devices.flat[0]
  tokens = batch_size * model.sequence_length
  return CompileReport(
    topology=topology or device.platform,
    device_kind=device.device_kind,
    num_devices=partitioner.mesh.size,
    mesh_shape=dict(partitioner.mesh.shape),
    batch_size=batch_size,
    num_params=num_params,
    argument_bytes=memory.argument_size_in_bytes,
    output_bytes=memory.output_size_in_bytes,
    temp_bytes=memory.temp_size_in_bytes,
    alias_bytes=memory.alias_size_in_bytes,
    code_bytes=memory.generated_code_size_in_bytes,
    compiled_flops_per_device=float(cost.get("flops", 0.0)),
    model_flops_per_step=tokens
    * train_flops_per_token(model.config, model.vocab_size, model.sequence_length),
    hbm_bytes_per_device=hardware.memory_per_device(device),
  )


def partitioner_for_topology(
  topology: str, mesh_config: MeshConfig, rules=None, num_slices: int = 1
) -> Partitioner:
  """A Partitioner over the compile-only devices of `topology` (× `num_slices`)."""
  return Partitioner(mesh_config, rules=rules, devices=topology_devices(topology, num_slices))
