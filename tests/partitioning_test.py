"""Tests of meshes, logical-axis rules and the shardings built from them (8 fake CPU devices)."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from musiclm_jax import axes
from musiclm_jax.partitioning import (
  DEFAULT_RULES,
  MeshConfig,
  Partitioner,
  fill_degrees,
  make_mesh,
)


@pytest.fixture(autouse=True)
def _eight_devices(num_devices):
  if num_devices < 8:
    pytest.skip("needs 8 devices (tests/conftest.py fakes them on CPU)")


@pytest.mark.parametrize(
  "degrees, total, expected",
  [
    ((-1, 1, 1), 8, (8, 1, 1)),
    ((2, -1, 2), 8, (2, 2, 2)),
    ((1, 1, -1), 4, (1, 1, 4)),
    ((2, 2, 2), 8, (2, 2, 2)),
    ((-1, 1, 1), 1, (1, 1, 1)),
  ],
)
def test_fill_degrees(degrees, total, expected):
  assert fill_degrees(degrees, total, "ICI") == expected


@pytest.mark.parametrize(
  "degrees, total, message",
  [
    ((-1, -1, 1), 8, r"ICI degrees \(-1, -1, 1\): at most one may be -1"),
    ((0, 1, 1), 8, r"must be positive"),
    ((-2, 1, 1), 8, r"must be positive"),
    ((-1, 3, 1), 8, r"8 devices are not divisible by 3"),
    ((2, 2, 1), 8, r"ICI degrees \(2, 2, 1\) multiply to 4, but there are 8 devices"),
  ],
)
def test_fill_degrees_errors(degrees, total, message):
  with pytest.raises(ValueError, match=message):
    fill_degrees(degrees, total, "ICI")


@pytest.mark.parametrize(
  "config, shape",
  [
    (MeshConfig(), (8, 1, 1)),
    (MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2), (2, 2, 2)),
    (MeshConfig(ici_data=1, ici_fsdp=-1), (1, 8, 1)),
    (MeshConfig(ici_data=2, ici_tensor=-1), (2, 1, 4)),
    (MeshConfig(num_devices=1, ici_data=1), (1, 1, 1)),
    (MeshConfig(num_devices=1), (1, 1, 1)),
    (MeshConfig(num_devices=4, ici_tensor=2), (2, 1, 2)),
  ],
)
def test_make_mesh_shapes(config, shape):
  mesh = make_mesh(config)
  assert mesh.axis_names == axes.MESH_AXES
  assert tuple(mesh.shape[name] for name in axes.MESH_AXES) == shape
  used = jax.devices()[: np.prod(shape)]
  assert list(mesh.devices.flat) == used


@pytest.mark.parametrize(
  "config, message",
  [
    (MeshConfig(num_devices=9), r"num_devices=9, but 8 devices are available"),
    (MeshConfig(num_devices=0), r"num_devices=0"),
    (MeshConfig(ici_data=3), r"multiply to 3, but there are 8 devices"),
    (MeshConfig(ici_data=-1, ici_fsdp=-1), r"at most one may be -1"),
    (MeshConfig(dcn_data=2), r"DCN degrees \(2, 1, 1\) multiply to 2"),
  ],
)
def test_make_mesh_rejects_bad_configs(config, message):
  with pytest.raises(ValueError, match=message):
    make_mesh(config)


def test_make_mesh_uses_given_devices():
  devices = jax.devices()[4:]
  mesh = make_mesh(MeshConfig(ici_data=2, ici_tensor=2), devices)
  assert list(mesh.devices.flat) == devices


@pytest.mark.parametrize(
  "rules, message",
  [
    (
      ((axes.BATCH, "bogus"),),
      r"Rule 'activation_batch' -> 'bogus' names unknown mesh axis 'bogus'",
    ),
    (((axes.EMBED, ("fsdp", "model")),), r"unknown mesh axis 'model'"),
  ],
)
def test_rules_naming_unknown_mesh_axes_are_rejected(rules, message):
  with pytest.raises(ValueError, match=message):
    Partitioner(MeshConfig(), rules=rules)
  with pytest.raises(ValueError, match=message):
    Partitioner(MeshConfig(), extra_rules=rules)


@pytest.fixture(scope="module")
def partitioner_2x2x2() -> Partitioner:
  return Partitioner(MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2))


def test_logical_specs_map_to_mesh_axes(partitioner_2x2x2):
  p = partitioner_2x2x2
  assert p.sharding((axes.EMBED, axes.HEADS, axes.KV)).spec == P("fsdp", "tensor", None)
  assert p.sharding((axes.LAYERS, axes.EMBED, axes.MLP)).spec == P(None, "fsdp", "tensor")
  assert p.sharding((axes.BATCH, axes.LENGTH, axes.ACT_VOCAB)).spec == P(
    ("data", "fsdp"), None, "tensor"
  )
  assert p.replicated.is_fully_replicated


def test_extra_rules_override_default_rules():
  p = Partitioner(
    MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2), extra_rules=((axes.EMBED, None),)
  )
  assert p.sharding((axes.EMBED, axes.MLP)).spec == P(None, "tensor")
  assert p.rules[1:] == DEFAULT_RULES


@pytest.mark.parametrize(
  "config, extra_rules, size",
  [
    (MeshConfig(), (), 8),
    (MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2), (), 4),
    (MeshConfig(ici_data=2, ici_fsdp=2, ici_tensor=2), ((axes.BATCH, "data"),), 2),
    (MeshConfig(ici_data=1, ici_tensor=-1), (), 1),
    (MeshConfig(num_devices=1, ici_data=1), (), 1),
  ],
)
def test_data_parallel_size(config, extra_rules, size):
  assert Partitioner(config, extra_rules=extra_rules).data_parallel_size == size


def test_batch_sharding_splits_only_the_batch(partitioner_2x2x2):
  assert partitioner_2x2x2.batch_sharding(1).spec == P(("data", "fsdp"))
  assert partitioner_2x2x2.batch_sharding(3).spec == P(("data", "fsdp"), None, None)


def test_shard_batch_places_rows_on_data_and_fsdp(partitioner_2x2x2):
  p = partitioner_2x2x2
  host = {"tokens": np.arange(8 * 3, dtype=np.int32).reshape(8, 3), "scale": np.arange(8.0)}
  batch = p.shard_batch(host)
  for name, array in batch.items():
    assert array.sharding == p.batch_sharding(host[name].ndim)
    np.testing.assert_array_equal(np.asarray(array), host[name])
  tokens = batch["tokens"]
  assert len(tokens.addressable_shards) == 8
  mesh_devices = p.mesh.devices  # [data, fsdp, tensor]
  for d in range(2):
    for f in range(2):
      rows = slice(2 * (2 * d + f), 2 * (2 * d + f) + 2)
      for t in range(2):  # replicated over 'tensor'
        shard = next(s for s in tokens.addressable_shards if s.device == mesh_devices[d, f, t])
        np.testing.assert_array_equal(np.asarray(shard.data), host["tokens"][rows])


def test_shard_batch_rejects_batches_the_mesh_cannot_split(partitioner_2x2x2):
  with pytest.raises(ValueError):
    partitioner_2x2x2.shard_batch({"tokens": np.zeros((6, 3), np.int32)})
