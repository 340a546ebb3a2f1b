"""`rendered_music`: music21 scores rendered to audio (`musiclm-jax render`), as a dataset.

  musiclm-jax render --out_dir=DIR ...        then
  musiclm-jax build-data --dataset=rendered_music --manual_dir=DIR --data_dir=DATA
  musiclm-jax build-data --dataset=rendered_music --manual_dir=DIR --data_dir=DATA \
    --render_num_clips=200 --render_clip_seconds=10     # renders into DIR first if it is empty

Splits come from the render's `split` column; `melody_group` pairs renders of the same score.
"""

from __future__ import annotations

from collections.abc import Iterable

from absl import logging
from etils import epath

from musiclm_jax.data.builders import base
from musiclm_jax.data.manifest import ManifestRow, read_musiccaps_csv
from musiclm_jax.data.render import corpus, synth
from musiclm_jax.data.skip_report import SkipReport

CSV_NAME = corpus.CSV_NAME
AUDIO_SUBDIR = corpus.AUDIO_SUBDIR

_INSTRUCTIONS = f"""
manual_dir is the output folder of `musiclm-jax render` ({CSV_NAME} in MusicCaps format with
melody_group, score_id and split columns, and the clips in {AUDIO_SUBDIR}/). Or pass
render_num_clips > 0 (build-data --render_num_clips N) to render into manual_dir first when it
has no {CSV_NAME}.
"""


class RenderedMusic(base.AudioCaptionBuilder):
  """Public-domain scores (music21 corpus) rendered with General-MIDI instruments."""

  DESCRIPTION = "music21 corpus scores rendered with FluidSynth, captions from score metadata."
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  def __init__(
    self,
    *,
    render_num_clips: int = 0,
    render_clip_seconds: float = 10.0,
    render_seed: int = 0,
    render_num_workers: int = 1,
    soundfont: str | None = None,
    **kwargs,
  ):
    """Builder kwargs say how to render when manual_dir has no render yet.

    Args:
      render_num_clips: render this many clips into manual_dir if it has no musiccaps.csv
        (0: never render; a missing render is then an error).
      render_clip_seconds: length of each rendered clip.
      render_seed: the render's seed (which scores, instruments, excerpts).
      render_num_workers: render processes.
      soundfont: a .sf2 file (default: the renderer's).
      **kwargs: `tfds.core.DatasetBuilder` arguments (data_dir, config, ...).
    """
    self._render_num_clips = render_num_clips
    self._render_clip_seconds = render_clip_seconds
    self._render_seed = render_seed
    self._render_num_workers = render_num_workers
    self._soundfont = soundfont
    super().__init__(**kwargs)

  def _prepare_manual_dir(self, manual_dir: epath.Path) -> None:
    if (manual_dir / CSV_NAME).is_file():
      return
    if self._render_num_clips <= 0:
      raise base.BuildError(
        f"{manual_dir} has no {CSV_NAME}: run `musiclm-jax render --out_dir={manual_dir} "
        "--num_clips=N` or "
        "pass --render_num_clips N (builder kwarg render_num_clips) to render into it"
      )
    manual_dir.mkdir(parents=True, exist_ok=True)
    try:
      summary = corpus.render_corpus(
        str(manual_dir),
        num_clips=self._render_num_clips,
        clip_seconds=self._render_clip_seconds,
        seed=self._render_seed,
        sample_rate=self.builder_config.sample_rate,
        num_workers=self._render_num_workers,
        soundfont=self._soundfont,
        progress=False,
      )
    except (ValueError, FileNotFoundError, synth.RenderError) as e:
      raise base.BuildError(f"rendered_music: cannot render into {manual_dir}: {e}") from e
    logging.info("rendered_music: rendered into %s: %s", manual_dir, summary)

  def _manifest_rows(self, manual_dir: epath.Path, report: SkipReport) -> Iterable[ManifestRow]:
    return read_musiccaps_csv(
      manual_dir / CSV_NAME, manual_dir / AUDIO_SUBDIR, report=report, split_column="split"
    )
