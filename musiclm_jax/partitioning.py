"""Device meshes, logical→mesh rules and the shardings built from them.

A mesh has axes ('data', 'fsdp', 'tensor'). Degrees come from `MeshConfig`: ICI degrees within a
slice and DCN degrees across slices (MaxText's `ici_*` / `dcn_*`), one of each group may be -1
(fill with what is left). Layers name only logical axes (`axes.py`); `Partitioner` owns the rules
that map them onto the mesh and builds every sharding the trainer and decoders need.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from musiclm_jax import axes

PyTree = Any
LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Weights: FSDP over the model dimension, Megatron-style tensor parallelism over heads / MLP /
# vocab. Activations: batch over data×fsdp, the same tensor split as the weights they meet.
DEFAULT_RULES: LogicalRules = (
  (axes.BATCH, (axes.MESH_DATA, axes.MESH_FSDP)),
  (axes.LENGTH, None),
  (axes.ACT_EMBED, None),
  (axes.ACT_MLP, axes.MESH_TENSOR),
  (axes.ACT_HEADS, axes.MESH_TENSOR),
  (axes.ACT_KV, None),
  (axes.ACT_VOCAB, axes.MESH_TENSOR),
  (axes.CACHE_LENGTH, None),
  (axes.EMBED, axes.MESH_FSDP),
  (axes.MLP, axes.MESH_TENSOR),
  (axes.HEADS, axes.MESH_TENSOR),
  (axes.KV, None),
  (axes.VOCAB, axes.MESH_TENSOR),
  (axes.LAYERS, None),
  (axes.RELPOS_BUCKETS, None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Parallelism degrees. Products of ICI × DCN degrees must cover every device.

  Attributes:
    ici_data, ici_fsdp, ici_tensor: degrees within a slice (fast interconnect); one may be -1.
    dcn_data, dcn_fsdp, dcn_tensor: degrees across slices (data-centre network); one may be -1.
    num_devices: use the first N devices (-1: all), e.g. 1 for a single-device run.
  """

  ici_data: int = -1
  ici_fsdp: int = 1
  ici_tensor: int = 1
  dcn_data: int = 1
  dcn_fsdp: int = 1
  dcn_tensor: int = 1
  num_devices: int = -1

  @property
  def ici(self) -> tuple[int, int, int]:
    return (self.ici_data, self.ici_fsdp, self.ici_tensor)

  @property
  def dcn(self) -> tuple[int, int, int]:
    return (self.dcn_data, self.dcn_fsdp, self.dcn_tensor)


def fill_degrees(degrees: Sequence[int], total: int, what: str) -> tuple[int, ...]:
  """Replaces a single -1 in `degrees` so that their product is `total`."""
  degrees = tuple(int(d) for d in degrees)
  unknown = [i for i, d in enumerate(degrees) if d == -1]
  if len(unknown) > 1:
    raise ValueError(f"{what} degrees {degrees}: at most one may be -1.")
  if any(d == 0 or d < -1 for d in degrees):
    raise ValueError(f"{what} degrees {degrees} must be positive (or one -1).")
  known = math.prod(d for d in degrees if d != -1)
  if unknown:
    if total % known:
      raise ValueError(f"{what} degrees {degrees}: {total} devices are not divisible by {known}.")
    degrees = tuple(total // known if d == -1 else d for d in degrees)
  if math.prod(degrees) != total:
    raise ValueError(
      f"{what} degrees {degrees} multiply to {math.prod(degrees)}, but there are {total} devices."
    )
  return degrees


def _num_slices(devices: Sequence[jax.Device]) -> int:
  return len({getattr(d, "slice_index", 0) for d in devices})


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the ('data', 'fsdp', 'tensor') mesh for `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  if config.num_devices != -1:
    if not 0 < config.num_devices <= len(devices):
      raise ValueError(
        f"MeshConfig.num_devices={config.num_devices}, but {len(devices)} devices are available."
      )
    devices = devices[: config.num_devices]
  num_slices = _num_slices(devices)
  dcn = fill_degrees(config.dcn, num_slices, "DCN")
  ici = fill_degrees(config.ici, len(devices) // num_slices, "ICI")
  if num_slices > 1:
    device_array = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
  elif devices[0].platform == "cpu":
    # CPU devices have no physical topology to respect.
    device_array = np.asarray(devices).reshape(ici)
  else:
    device_array = mesh_utils.create_device_mesh(ici, devices)
  return Mesh(device_array, axes.MESH_AXES, axis_types=(AxisType.Auto,) * len(axes.MESH_AXES))


def _check_rules(rules: LogicalRules) -> LogicalRules:
  rules = tuple((str(name), target) for name, target in rules)
  for name, target in rules:
    targets = target if isinstance(target, tuple) else (target,)
    for t in targets:
      if t is not None and t not in axes.MESH_AXES:
        raise ValueError(
          f"Rule {name!r} -> {target!r} names unknown mesh axis {t!r}; "
          f"mesh axes are {axes.MESH_AXES}."
        )
  return rules


class Partitioner:
  """Owns a mesh and logical-axis rules; builds shardings from logical annotations."""

  def __init__(
    self,
    mesh_config: MeshConfig | None = None,
    rules: LogicalRules | None = None,
    extra_rules: LogicalRules = (),
    devices: Sequence[jax.Device] | None = None,
  ):
    """Args:
    mesh_config: parallelism degrees (default: all devices on 'data').
    rules: logical→mesh rules replacing `DEFAULT_RULES`.
    extra_rules: rules put in front of `rules`, overriding entries of the same name.
    devices: devices to use (default: `jax.devices()`).
    """
    self.mesh_config = mesh_config or MeshConfig()
    self.mesh = make_mesh(self.mesh_config, devices)
    self.rules = _check_rules(tuple(extra_rules) + tuple(rules or DEFAULT_RULES))

  @contextlib.contextmanager
  def activate(self) -> Iterator[None]:
    """Context in which `nn.with_logical_constraint` and logical shardings resolve."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  def sharding(self, logical_spec: Sequence[str | None]) -> NamedSharding:
    """NamedSharding for one array annotated with logical axis names."""
    return NamedSharding(self.mesh, nn.logical_to_mesh_axes(tuple(logical_spec), self.rules))

  def logical_to_sharding(self, logical_specs: PyTree) -> PyTree:
    """Maps a tree of logical PartitionSpecs (e.g. `nn.get_partition_spec`) to NamedShardings."""
    return nn.logical_to_mesh_sharding(logical_specs, self.mesh, self.rules)

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def data_parallel_size(self) -> int:
    """How many ways the batch dimension is split."""
    spec = nn.logical_to_mesh_axes((axes.BATCH,), self.rules)[0]
    names = () if spec is None else (spec if isinstance(spec, tuple) else (spec,))
    return math.prod(self.mesh.shape[n] for n in names)

  def batch_sharding(self, ndim: int) -> NamedSharding:
    """Sharding of a [batch, ...] input array: batch split, other dims replicated."""
    return self.sharding((axes.BATCH,) + (None,) * (ndim - 1))

  def shard_batch(self, batch: PyTree) -> PyTree:
    """Builds global arrays from this process's slice of the batch (multi-host safe)."""

    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_process_local_data(self.batch_sharding(x.ndim), x)

    return jax.tree.map(put, batch)

  def abstract_and_shardings(
    self, init_fn: Callable[..., PyTree], *args: Any
  ) -> tuple[PyTree, PyTree]:
    """Shapes and shardings of `init_fn(*args)`, whose output may hold logical boxes.

    Returns:
      (abstract unboxed tree of ShapeDtypeStruct with shardings attached, tree of NamedSharding).
    """
    with self.activate():
      boxed = jax.eval_shape(init_fn, *args)
    shardings = self.logical_to_sharding(nn.get_partition_spec(boxed))
    abstract = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      nn.unbox(boxed),
      shardings,
    )
    return abstract, shardings

  def init_sharded(self, init_fn: Callable[..., PyTree], *args: Any) -> tuple[PyTree, PyTree]:
    """Runs `init_fn` so its outputs are created already sharded (never whole on one device).

    Returns:
      (unboxed tree of sharded arrays, tree of NamedSharding).
    """
    _, shardings = self.abstract_and_shardings(init_fn, *args)
    with self.activate():
      tree = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
    return tree, shardings
