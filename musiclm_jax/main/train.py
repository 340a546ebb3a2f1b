"""`musiclm-jax train --gin_file=RUN.gin [--gin.KEY=VALUE ...]`: gin-configured training.

The run file picks the job: `TRAIN_JOB = @codec_train_job.train_codec` for the codec; without a
TRAIN_JOB macro it is the stage-LM job (`train_job.train`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from musiclm_jax import partitioning, train_job
from musiclm_jax.main import gin_utils


def main(argv: Sequence[str]) -> int:
  gin_files, bindings, rest = gin_utils.split_gin_args(argv)
  parser = argparse.ArgumentParser(prog="musiclm-jax train")
  parser.add_argument("--gin_search_path", action="append", default=[])
  args = parser.parse_args(rest)
  gin_utils.parse(gin_files, bindings, args.gin_search_path)
  model_dir = gin_utils.macro("MODEL_DIR")
  partitioner = gin_utils.configured(partitioning.Partitioner)()
  gin_utils.write_config(model_dir)
  train = gin_utils.macro("TRAIN_JOB", default=None) or gin_utils.configured(train_job.train)
  train(partitioner=partitioner)
  gin_utils.write_config(model_dir, "operative_config.gin", operative=True)
  return 0
