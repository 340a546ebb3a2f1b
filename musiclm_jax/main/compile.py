"""`musiclm-jax compile --gin_file=MODEL.gin --gin_file=MESH.gin --topology=v5e:4x4`
[--num_slices=2] (multislice: the slice repeated over DCN).

Compiles the train step for a TPU slice on this (CPU) host and prints parameter count, per-chip
memory and FLOPs per step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence

from musiclm_jax import partitioning
from musiclm_jax.main import gin_utils, paths
from musiclm_jax.training import aot, optimizers

COMPILE_EXAMPLE = """musiclm-jax compile --gin_file=gin/models/semantic/base.gin \\
    --gin_file=gin/mesh/tpu_v5e_16.gin --topology=v5e:4x4 --batch_size=64"""


def main(argv: Sequence[str]) -> int:
  gin_files, bindings, rest = gin_utils.split_gin_args(argv)
  parser = argparse.ArgumentParser(prog="musiclm-jax compile", description=__doc__)
  parser.add_argument("--topology", required=True, help="TPU topology, e.g. v5e:4x4 or v4:2x2x4")
  parser.add_argument(
    "--num_slices", type=int, default=1, help="multislice: slices joined over DCN (default 1)"
  )
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--num_microbatches", type=int, default=1)
  parser.add_argument("--out", help="also write the report as JSON here")
  gin_utils.add_gin_flags(parser, COMPILE_EXAMPLE)
  args = parser.parse_args(rest)
  if args.out:
    paths.check_output_file(args.out, "--out")
  gin_utils.parse(gin_files, bindings, args.gin_search_path)
  model = gin_utils.macro("MODEL")
  mesh_config = gin_utils.configured(partitioning.MeshConfig)()
  partitioner = aot.partitioner_for_topology(args.topology, mesh_config, num_slices=args.num_slices)
  topology = args.topology if args.num_slices == 1 else f"{args.num_slices}x {args.topology}"
  report = aot.compile_train_step(
    model,
    partitioner,
    batch_size=args.batch_size,
    num_microbatches=args.num_microbatches,
    optimizer=gin_utils.configured(optimizers.OptimizerConfig)(),
    topology=topology,
  )
  print(report.summary())
  if args.out:
    with open(args.out, "w") as f:
      json.dump(
        {
          **dataclasses.asdict(report),
          "peak_bytes_per_device": report.peak_bytes_per_device,
          "fits": report.fits,
        },
        f,
        indent=2,
      )
  return 0
