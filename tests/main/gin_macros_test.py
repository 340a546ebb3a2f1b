"""gin_utils.parse: an override of a macro no gin file defines is an error; defined ones apply."""

from __future__ import annotations

from pathlib import Path

import pytest

import gin
from musiclm_jax.main import gin_utils

REPO_ROOT = Path(__file__).resolve().parents[2]
FILES = ["gin/models/semantic/tiny.gin", "gin/runs/synthetic.gin"]


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)
  yield
  gin.clear_config()


def test_defined_macro_overrides_apply():
  _, bindings, _ = gin_utils.split_gin_args(["--gin.NUM_STEPS=5", "--gin.MODEL_DIR='/tmp/x'"])
  gin_utils.parse(FILES, bindings + ["BATCH_SIZE = 4\nCROP_SECONDS = 2.0"])
  assert gin_utils.macro("NUM_STEPS") == 5 and gin_utils.macro("BATCH_SIZE") == 4
  assert gin_utils.macro("CROP_SECONDS") == 2.0 and gin_utils.macro("MODEL_DIR") == "/tmp/x"
  assert {"NUM_STEPS", "MODEL_DIR", "STAGE"} <= set(gin_utils.defined_macros())


@pytest.mark.parametrize(
  "binding, named",
  [
    ("NUM_STEPZ = 5", "did you mean NUM_STEPS?"),
    ("BATCH_SIZE = 4\nCROPSECONDS = 2.0", "did you mean CROP_SECONDS?"),  # the second line
    ("ZZZ = 1", "defined: BATCH_SIZE, "),  # nothing close: the defined names
  ],
  ids=["typo", "second_line", "nothing_close"],
)
def test_undefined_macro_override_is_an_error(binding, named):
  with pytest.raises(gin_utils.GinConfigError, match="no gin file given defines") as error:
    gin_utils.parse(FILES, [binding])
  message = str(error.value)
  assert message.split(" = ")[0] == binding.splitlines()[-1].split(" = ")[0]
  assert named in message and "\n" not in message


def test_parameter_bindings_are_left_to_gin():
  gin_utils.parse(FILES, ["train_job.train.log_every_steps = 7"])
  assert gin.query_parameter("train_job.train.log_every_steps") == 7
  with pytest.raises(gin_utils.GinConfigError, match="log_every_stepz"):
    gin_utils.parse(FILES, ["train_job.train.log_every_stepz = 7"])
