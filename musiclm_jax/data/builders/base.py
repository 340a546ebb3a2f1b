"""What the audio+caption builders share: the config, splits, both generation paths, the report.

A subclass says where its manifest rows come from (`_manifest_rows`); this base turns them into
splits of `features.features_dict` examples, with the plain generator or, when the build is
given a Beam runner or Beam options, with `beam_split.LoadSplit`. Every build writes a
`SkipReport` as `skip_report.json` beside the dataset files
(`<data_dir>/<name>/<config>/<version>/`), correct in both paths.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from musiclm_jax.data.audio_io import DEFAULT_SAMPLE_RATE
from musiclm_jax.data.builders import examples
from musiclm_jax.data.builders.features import features_dict
from musiclm_jax.data.manifest import ManifestRow
from musiclm_jax.data.skip_report import SkipReport

REPORT_NAME = "skip_report.json"
_PARTIAL_REPORT_GLOB = "skip_report.*.partial.json"
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_MIN_SECONDS = 0.5
DEFAULT_NORMALIZATION = "none"
STANDARD_SAMPLE_RATES = (24_000, 16_000, 32_000, 48_000)


class BuildError(ValueError):
  """A build that cannot start or produced nothing; the message says what to do.

  Attributes:
    report: the skip report so far (None if no row was read).
  """

  def __init__(self, message: str, report: SkipReport | None = None):
    super().__init__(message)
    self.report = report


@dataclasses.dataclass(eq=False)
class AudioCaptionConfig(tfds.core.BuilderConfig):
  """What an example is: audio rate and length limits (the config name encodes them).

  Attributes:
    sample_rate: audio rate in Hz.
    max_seconds: longer clips are cut to their first `max_seconds`.
    min_seconds: shorter clips are skipped ('too_short').
    normalization: 'none', 'peak' or 'loudness' (`audio_io.normalize`).
  """

  sample_rate: int = DEFAULT_SAMPLE_RATE
  max_seconds: float = DEFAULT_MAX_SECONDS
  min_seconds: float = DEFAULT_MIN_SECONDS
  normalization: str = DEFAULT_NORMALIZATION


CONFIG_FIELDS = ("sample_rate", "max_seconds", "min_seconds", "normalization")


def _number_name(value: float) -> str:
  return f"{value:g}".replace(".", "p").replace("-", "m")


def config_name(
  sample_rate: int,
  max_seconds: float = DEFAULT_MAX_SECONDS,
  min_seconds: float = DEFAULT_MIN_SECONDS,
  normalization: str = DEFAULT_NORMALIZATION,
) -> str:
  """'24khz', '22050hz', '16khz_max10s_min1s_peak': the rate, then what differs from default."""
  parts = [f"{sample_rate // 1000}khz" if sample_rate % 1000 == 0 else f"{sample_rate}hz"]
  if max_seconds != DEFAULT_MAX_SECONDS:
    parts.append(f"max{_number_name(max_seconds)}s")
  if min_seconds != DEFAULT_MIN_SECONDS:
    parts.append(f"min{_number_name(min_seconds)}s")
  if normalization != DEFAULT_NORMALIZATION:
    parts.append(normalization)
  return "_".join(parts)


def make_config(name: str | None = None, **fields: Any) -> AudioCaptionConfig:
  """An AudioCaptionConfig named `name`, or by `config_name` of its fields."""
  config = AudioCaptionConfig(name="unnamed", **fields)
  values = {f: getattr(config, f) for f in CONFIG_FIELDS}
  name = name or config_name(**values)
  description = ", ".join(f"{k}={v}" for k, v in values.items())
  return dataclasses.replace(config, name=name, description=description)


def standard_configs() -> list[AudioCaptionConfig]:
  """The registered configs: one per rate in STANDARD_SAMPLE_RATES, default limits."""
  return [make_config(sample_rate=rate) for rate in STANDARD_SAMPLE_RATES]


def _manual_dir(dl_manager: Any, download_config: Any) -> epath.Path:
  """The manual dir as TFDS resolves it, without TFDS' must-exist-and-be-non-empty check."""
  if download_config.manual_dir:
    return epath.Path(download_config.manual_dir)
  return dl_manager.download_dir / "manual"


class AudioCaptionBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the audio+caption builders (not registered itself).

  Subclasses set DESCRIPTION, MANUAL_DOWNLOAD_INSTRUCTIONS and `_manifest_rows`; they may
  override `_prepare_manual_dir` (called before the manual dir is read).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = standard_configs()
  DEFAULT_CONFIG_NAME = "24khz"
  DESCRIPTION = ""
  HOMEPAGE = ""

  # Set per build by `_download_and_prepare`.
  _use_beam = False
  _skip_report: SkipReport | None = None
  _resolved_manual_dir: epath.Path | None = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.DESCRIPTION,
      features=features_dict(self.builder_config.sample_rate),
      homepage=self.HOMEPAGE or None,
    )

  def _manifest_rows(self, manual_dir: epath.Path, report: SkipReport) -> Iterable[ManifestRow]:
    """The rows of the data in `manual_dir`; bad rows go to `report`. Subclasses define it."""
    raise NotImplementedError

  def _prepare_manual_dir(self, manual_dir: epath.Path) -> None:
    """Hook run before the manual dir is read (rendered_music renders into it)."""
    del manual_dir

  def _load_spec(self) -> examples.LoadSpec:
    config = self.builder_config
    return examples.LoadSpec(
      sample_rate=config.sample_rate,
      max_seconds=config.max_seconds,
      min_seconds=config.min_seconds,
      normalization=config.normalization,
    )

  def _download_and_prepare(self, dl_manager: Any, download_config: Any) -> None:
    self._use_beam = bool(download_config.beam_runner or download_config.beam_options)
    self._skip_report = SkipReport(f"{self.name}/{self.builder_config.name}")
    manual_dir = _manual_dir(dl_manager, download_config)
    self._prepare_manual_dir(manual_dir)
    if not manual_dir.is_dir():
      raise BuildError(
        f"{self.name}: manual_dir {manual_dir} is not a folder. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    self._resolved_manual_dir = manual_dir
    super()._download_and_prepare(dl_manager, download_config)
    self._write_report()

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    del dl_manager  # its manual_dir insists on a non-empty folder; ours says what to do
    report, manual_dir = self._skip_report, self._resolved_manual_dir
    try:
      rows = list(self._manifest_rows(manual_dir, report))
    except ValueError as e:  # the manifest cannot be read at all: header, folder, extension
      raise BuildError(f"{self.name}: {e}", report) from e
    spec = self._load_spec()
    generators = {}
    for split, split_rows in examples.rows_by_split(rows, report).items():
      first, rest = examples.first_loadable(split_rows, spec, report)
      if first is None:
        logging.warning("%s: no usable clip in split %r; it is left out", self.name, split)
        continue
      generators[split] = self._generate_examples(first=first, rows=rest, spec=spec, split=split)
    if not generators:
      raise BuildError(
        f"{self.name}: no usable examples in {manual_dir} ({report.summary_line()}); the "
        f"report's examples say what is wrong with each. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}",
        report,
      )
    return generators

  def _generate_examples(
    self,
    first: examples.KeyExample,
    rows: list[ManifestRow],
    spec: examples.LoadSpec,
    split: str,
  ) -> Any:
    """A generator of `(key, features)`, or a `beam.PTransform` when the build uses Beam."""
    if not self._use_beam:
      return examples.generate(first, rows, spec, self._skip_report)
    from musiclm_jax.data.builders import beam_split  # Beam is imported only when used.

    path = epath.Path(self.data_dir) / _PARTIAL_REPORT_GLOB.replace("*", split)
    return beam_split.LoadSplit(first, rows, spec, split, path)

  def _write_report(self) -> None:
    """Folds the Beam workers' partial reports into the driver's and writes skip_report.json."""
    out_dir = epath.Path(self.data_dir)
    report = self._skip_report
    for partial in sorted(out_dir.glob(_PARTIAL_REPORT_GLOB)):
      report.merge(SkipReport.from_dict(json.loads(partial.read_text())))
      partial.unlink()
    (out_dir / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    logging.info("%s: %s", report.name, report.summary_line())


def find_manifest(
  manual_dir: epath.Path, name: str | None, preferred: tuple[str, ...], extensions: tuple[str, ...]
) -> epath.Path:
  """The manifest file in `manual_dir`: `name` if given, else a preferred name, else the only
  file with one of `extensions`.

  Raises:
    BuildError: naming the folder and what to pass when there is no single candidate.
  """
  if name:
    path = manual_dir / name
    if not path.is_file():
      raise BuildError(f"{path} does not exist; put the manifest there or fix its name")
    return path
  for candidate in preferred:
    if (manual_dir / candidate).is_file():
      return manual_dir / candidate
  found = sorted(p for p in manual_dir.iterdir() if p.suffix.lower() in extensions)
  if len(found) != 1:
    what = ", ".join(p.name for p in found) if found else "none"
    raise BuildError(
      f"{manual_dir}: expected one manifest ({' or '.join(preferred)}, or a single "
      f"{'/'.join(extensions)} file), found {what}; pass its name as manifest= (build-data --manifest)"
    )
  return found[0]
