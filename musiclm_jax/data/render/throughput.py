"""Rendering throughput: audio-seconds rendered per wall-clock second, for BENCHMARKS.md."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

from musiclm_jax.data.render.corpus import render_corpus


def bench_render(
  *,
  num_clips: int = 32,
  clip_seconds: float = 5.0,
  worker_counts: Sequence[int] = (1, 2),
  seed: int = 0,
  soundfont: str | None = None,
) -> list[dict]:
  """Renders the same corpus once per worker count, each into a fresh folder.

  The same seed gives the same scores and clips, so the rows differ only in parallelism; the
  ratio column is measured against the first worker count in this run.

  Returns:
    One row per worker count: workers, clips, audio_s, wall_s, audio_s_per_s, speedup.
  """
  rows = []
  for workers in worker_counts:
    with tempfile.TemporaryDirectory(prefix="bench_render_") as out_dir:
      summary = render_corpus(
        os.path.join(out_dir, "corpus"),
        num_clips=num_clips,
        clip_seconds=clip_seconds,
        seed=seed,
        num_workers=workers,
        soundfont=soundfont,
        progress=False,
      )
    rate = summary.audio_seconds / summary.wall_seconds
    rows.append(
      {
        "workers": workers,
        "clips": summary.num_clips,
        "scores": summary.num_scores,
        "audio_s": summary.audio_seconds,
        "wall_s": summary.wall_seconds,
        "audio_s_per_s": rate,
        "speedup": rate / rows[0]["audio_s_per_s"] if rows else 1.0,
      }
    )
  return rows
