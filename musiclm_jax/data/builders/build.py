"""`build_dataset`: one call that builds a registered audio+caption dataset (the build-data verb).

  result = build_dataset("musiccaps", data_dir="data", manual_dir="musiccaps_raw")
  print(result.splits, result.report.summary_line(), result.report_path)

The same builders work with `tfds build --imports=musiclm_jax.data.builders`; this adds
overrides that pick or make a config, and hands back the split sizes and the skip report.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from musiclm_jax.data.builders import base
from musiclm_jax.data.builders.audio_folder import AudioFolder
from musiclm_jax.data.builders.musiccaps import Musiccaps
from musiclm_jax.data.builders.rendered_music import RenderedMusic
from musiclm_jax.data.skip_report import SkipReport

BUILDERS: dict[str, type[base.AudioCaptionBuilder]] = {
  "musiccaps": Musiccaps,
  "audio_folder": AudioFolder,
  "rendered_music": RenderedMusic,
}


@dataclasses.dataclass(frozen=True)
class BuildResult:
  """What a build produced.

  Attributes:
    name: the dataset ('musiccaps', ...).
    config: its config ('24khz', ...); `tfds.load(f"{name}/{config}", data_dir=...)` reads it.
    version: the dataset version.
    data_dir: the TFDS data dir (what `tfds.load(..., data_dir=)` takes).
    dataset_dir: `<data_dir>/<name>/<config>/<version>`, the shards and dataset_info.json.
    splits: examples per split.
    report_path: the skip report, `<dataset_dir>/skip_report.json`.
    report: the skip report.
    reused: the dataset already existed and was not rebuilt (its old report is returned).
  """

  name: str
  config: str
  version: str
  data_dir: str
  dataset_dir: str
  splits: dict[str, int]
  report_path: str
  report: SkipReport
  reused: bool

  @property
  def tfds_name(self) -> str:
    """'name/config', for `tfds.load` and `tfds.builder`."""
    return f"{self.name}/{self.config}"


def split_overrides(
  builder_cls: type[base.AudioCaptionBuilder], overrides: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Splits overrides into config fields (`base.CONFIG_FIELDS`) and builder kwargs.

  Raises:
    BuildError: a key that is neither, listing the accepted ones.
  """
  params = inspect.signature(builder_cls.__init__).parameters
  kwargs_names = [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY]
  unknown = sorted(set(overrides) - set(base.CONFIG_FIELDS) - set(kwargs_names))
  if unknown:
    raise base.BuildError(
      f"{builder_cls.name}: unknown option(s) {', '.join(unknown)}; accepted: "
      f"{', '.join(base.CONFIG_FIELDS + tuple(kwargs_names))}"
    )
  fields = {k: v for k, v in overrides.items() if k in base.CONFIG_FIELDS}
  return fields, {k: v for k, v in overrides.items() if k not in base.CONFIG_FIELDS}


def resolve_config(
  builder_cls: type[base.AudioCaptionBuilder], config: str | None, fields: dict[str, Any]
) -> str | base.AudioCaptionConfig:
  """A registered config's name, or a new config, for `config` (a name) and field overrides.

  Without a name, the config is named by `base.config_name` of its fields ('16khz_max10s').

  Raises:
    BuildError: a registered name with other field values.
  """
  registered = builder_cls.builder_configs
  start = registered.get(config or "", registered[builder_cls.DEFAULT_CONFIG_NAME])
  values = {f: fields.get(f, getattr(start, f)) for f in base.CONFIG_FIELDS}
  name = config or base.config_name(**values)
  if name not in registered:
    return base.make_config(name, **values)
  if any(getattr(registered[name], f) != v for f, v in values.items()):
    raise base.BuildError(
      f"config {name!r} is registered with other values ({registered[name].description}); "
      "name a new config or leave the name out"
    )
  return name


def _download_config(
  manual_dir: str,
  beam_runner: str | None,
  beam_options: Sequence[str] | None,
  overwrite: bool,
  num_shards: int | None = None,
) -> tfds.download.DownloadConfig:
  options = None
  if beam_options:
    from apache_beam.options.pipeline_options import PipelineOptions  # only for Beam builds

    options = PipelineOptions(list(beam_options))
  mode = tfds.download.GenerateMode
  return tfds.download.DownloadConfig(
    manual_dir=manual_dir,
    beam_runner=beam_runner,
    beam_options=options,
    download_mode=mode.REUSE_CACHE_IF_EXISTS if overwrite else mode.REUSE_DATASET_IF_EXISTS,
    num_shards=num_shards,
  )


def build_dataset(
  name: str,
  *,
  data_dir: str,
  manual_dir: str,
  config: str | None = None,
  beam_runner: str | None = None,
  beam_options: list[str] | None = None,
  overrides: dict | None = None,
  overwrite: bool = False,
  num_shards: int | None = None,
) -> BuildResult:
  """Builds (or finds already built) one audio+caption dataset.

  Args:
    name: 'musiccaps', 'audio_folder' or 'rendered_music'.
    data_dir: the TFDS data dir.
    manual_dir: the user's inputs (see each builder's MANUAL_DOWNLOAD_INSTRUCTIONS).
    config: a config name; registered ones are '24khz' (default), '16khz', '32khz', '48khz'.
    beam_runner: e.g. 'DirectRunner': build with Apache Beam.
    beam_options: Beam pipeline flags, e.g. ['--direct_num_workers=2'] (implies Beam).
    overrides: config fields (sample_rate, max_seconds, min_seconds, normalization) and
      builder kwargs (e.g. manifest, render_num_clips).
    overwrite: rebuild even if the dataset exists.
    num_shards: files per split (None: TFDS sizes them). Each file is one unit of work of the
      token cache job, so more files tokenize on more workers.

  Returns:
    The BuildResult.

  Raises:
    BuildError: unknown dataset or option, unreadable manifest, or no usable example.
  """
  if name not in BUILDERS:
    raise base.BuildError(f"unknown dataset {name!r}; one of {', '.join(BUILDERS)}")
  builder_cls = BUILDERS[name]
  fields, kwargs = split_overrides(builder_cls, dict(overrides or {}))
  builder = builder_cls(
    data_dir=data_dir, config=resolve_config(builder_cls, config, fields), **kwargs
  )
  reused = builder.is_prepared() and not overwrite
  builder.download_and_prepare(
    download_config=_download_config(manual_dir, beam_runner, beam_options, overwrite, num_shards)
  )
  report_path = epath.Path(builder.data_dir) / base.REPORT_NAME
  return BuildResult(
    name=builder.name,
    config=builder.builder_config.name,
    version=str(builder.version),
    data_dir=os.fspath(data_dir),
    dataset_dir=os.fspath(builder.data_dir),
    splits={s: info.num_examples for s, info in sorted(builder.info.splits.items())},
    report_path=os.fspath(report_path),
    report=SkipReport.from_dict(json.loads(report_path.read_text())),
    reused=reused,
  )
