"""`musiclm-jax train --gin_file=RUN.gin [--gin.KEY=VALUE ...] [multi-host flags]`.

The run file picks the job: `TRAIN_JOB = @codec_train_job.train_codec` for the codec; without a
TRAIN_JOB macro it is the stage-LM job (`train_job.train`). On several hosts every process runs
the same command (`launch/`); `distributed.py` starts JAX's multi-controller runtime first.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax

import gin
from musiclm_jax import partitioning
from musiclm_jax.jobs import stage_lm as train_job
from musiclm_jax.main import gin_utils, paths
from musiclm_jax.runtime import distributed

TRAIN_EXAMPLE = """musiclm-jax train --gin_file=gin/models/semantic/tiny.gin \\
    --gin_file=gin/runs/synthetic.gin --gin.MODEL_DIR="'runs/semantic_tiny'" --gin.NUM_STEPS=50"""


def main(argv: Sequence[str]) -> int:
  gin_files, bindings, rest = gin_utils.split_gin_args(argv)
  parser = argparse.ArgumentParser(prog="musiclm-jax train", description=__doc__)
  gin_utils.add_gin_flags(parser, TRAIN_EXAMPLE)
  distributed.add_flags(parser)
  args = parser.parse_args(rest)
  try:
    distributed_config = distributed.config_from_flags(args)
  except ValueError as e:
    parser.error(str(e))
  distributed.initialize(distributed_config)
  gin_utils.parse(gin_files, bindings, args.gin_search_path)
  distributed.check_agreement("gin configuration", gin.config_str())
  model_dir = gin_utils.macro("MODEL_DIR")
  paths.check_output_dir(model_dir, "MODEL_DIR")
  partitioner = gin_utils.configured(partitioning.Partitioner)()
  is_chief = jax.process_index() == 0
  train = gin_utils.macro("TRAIN_JOB", default=None) or gin_utils.configured(train_job.train)
  # config.gin is written once the job has accepted MODEL_DIR's checkpoint: a refused run
  # (another model's checkpoint) leaves the directory describing what it holds.
  train(partitioner=partitioner, on_start=lambda: gin_utils.write_config(model_dir))
  if is_chief:
    gin_utils.write_config(model_dir, "operative_config.gin", operative=True)
  return 0
