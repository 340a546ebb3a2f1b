"""MusicLM's seqio tasks and mixtures (registrations; `musiclm_jax/data` implements them).

  musiclm_tokens_<dataset>                   audio → acoustic / semantic / MuLan token streams,
                                             ending in a required cache placeholder
  musiclm_{semantic,coarse,fine}_<dataset>   stage examples (DESIGN §3) from those streams
  musiclm_{semantic,coarse,fine}_mix         a mixture of the stage tasks across datasets

Tasks depend on the tokenizer checkpoints and on the stage layout, so they are registered by
these functions (called from gin: `gin/runs/tokenize_*.gin`, `gin/runs/stage_*.gin`) rather than
at import time. The datasets are the TFDS builders of `musiclm_jax/data/builders`.
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio

from musiclm_jax.data import stage_tasks, token_bundle, token_tasks
from musiclm_jax.data.token_bundle import CacheMismatchError, TokenizerBundleConfig
from musiclm_jax.stages import StageLayout

# dataset name → TFDS name (24 kHz configs; see `musiclm-jax build-data`).
DATASETS = {
  "rendered_music": "rendered_music/24khz:1.0.0",
  "musiccaps": "musiccaps/24khz:1.0.0",
  "audio_folder": "audio_folder/24khz:1.0.0",
}


def tokens_task_name(dataset: str) -> str:
  return f"musiclm_tokens_{dataset}"


def stage_task_name(stage: str, dataset: str) -> str:
  return f"musiclm_{stage}_{dataset}"


def mixture_name(stage: str) -> str:
  return f"musiclm_{stage}_mix"


def tokens_task_spec(
  dataset: str,
  bundle: TokenizerBundleConfig,
  *,
  data_dir: str | None = None,
  tfds_name: str | None = None,
  length_quantum_seconds: float = 1.0,
) -> token_tasks.TokensTaskSpec:
  """The tokens task of `dataset` (a `DATASETS` key, or any name with `tfds_name` given)."""
  if tfds_name is None and dataset not in DATASETS:
    raise ValueError(f"Unknown dataset {dataset!r}: one of {sorted(DATASETS)}, or pass tfds_name.")
  return token_tasks.TokensTaskSpec(
    name=tokens_task_name(dataset),
    tfds_name=tfds_name or DATASETS[dataset],
    data_dir=data_dir,
    bundle=bundle,
    length_quantum_seconds=length_quantum_seconds,
  )


def register_tokens_tasks(
  bundle: TokenizerBundleConfig,
  datasets: Mapping[str, str] | None = None,
  *,
  data_dir: str | None = None,
  length_quantum_seconds: float = 1.0,
) -> dict[str, token_tasks.TokensTaskSpec]:
  """Registers `musiclm_tokens_<dataset>` for each dataset → TFDS name; returns name → spec."""
  specs = {}
  for dataset, tfds_name in (datasets or DATASETS).items():
    spec = tokens_task_spec(
      dataset,
      bundle,
      data_dir=data_dir,
      tfds_name=tfds_name,
      length_quantum_seconds=length_quantum_seconds,
    )
    token_tasks.register_tokens_task(spec)
    specs[spec.name] = spec
  return specs


def check_layout_tokens(layout: StageLayout, bundle: TokenizerBundleConfig) -> None:
  """The layout's TokenSpec (gin's TOKENS) must be what the tokenizers produce."""
  produced = token_bundle.bundle_token_spec(bundle, layout.tokens.num_coarse_levels)
  if produced != layout.tokens:
    raise CacheMismatchError(
      f"The {layout.stage} stage's token spec {layout.tokens} differs from what the tokenizers "
      f"produce, {produced}; derive TOKENS from the bundle (gin/tokenizers/bundle.gin)."
    )


def stage_task(
  layout: StageLayout,
  dataset: str,
  bundle: TokenizerBundleConfig,
  *,
  data_dir: str | None = None,
  tfds_name: str | None = None,
  cache_dir: str | None = None,
  use_cached: bool = True,
  short_clip_policy: str = "drop",
  shuffle_buffer_size: int = 1000,
  length_quantum_seconds: float = 1.0,
  conditioning_dropout: float = 0.0,
) -> seqio.Task:
  """Registers and returns `musiclm_<stage>_<dataset>` for `layout`.

  Args:
    layout: the stage's format and crop (the model's LAYOUT).
    dataset: a `DATASETS` key (or any name, with `tfds_name`).
    bundle: the tokenizers; a cache made by others is refused.
    data_dir: TFDS data dir of the audio.
    tfds_name: the TFDS name (default: `DATASETS[dataset]`).
    cache_dir: the tokenize job's `--output_cache_dir` (None: seqio's global cache dirs).
    use_cached: read the offline cache (training at scale) or tokenize on the fly.
    short_clip_policy: 'drop' or 'pad' (see `stage_tasks.make_stage_task`).
    shuffle_buffer_size: crops in the shuffle buffer.
    length_quantum_seconds: the tokens task's clip trimming (must match the cache's).
    conditioning_dropout: probability of training an example unconditioned (MuLan tokens → PAD),
      for classifier-free guidance (semantic and coarse stages only).
  """
  check_layout_tokens(layout, bundle)
  spec = tokens_task_spec(
    dataset,
    bundle,
    data_dir=data_dir,
    tfds_name=tfds_name,
    length_quantum_seconds=length_quantum_seconds,
  )
  source = token_tasks.TokenStreamSource(spec, use_cached=use_cached, cache_dir=cache_dir)
  return stage_tasks.make_stage_task(
    stage_task_name(layout.stage, dataset),
    source,
    layout,
    short_clip_policy=short_clip_policy,
    shuffle_buffer_size=shuffle_buffer_size,
    conditioning_dropout=conditioning_dropout,
  )


def stage_mixture(
  layout: StageLayout,
  rates: Mapping[str, float],
  bundle: TokenizerBundleConfig,
  *,
  data_dirs: Mapping[str, str | None] | None = None,
  cache_dir: str | None = None,
  use_cached: bool = True,
  short_clip_policy: str = "drop",
) -> seqio.Mixture:
  """Registers `musiclm_<stage>_mix`: the stage tasks of `rates`' datasets, sampled by rate."""
  if not rates or any(r <= 0 for r in rates.values()):
    raise ValueError(f"mixture rates must be positive, got {dict(rates)}")
  tasks = []
  for dataset, rate in rates.items():
    task = stage_task(
      layout,
      dataset,
      bundle,
      data_dir=(data_dirs or {}).get(dataset),
      cache_dir=cache_dir,
      use_cached=use_cached,
      short_clip_policy=short_clip_policy,
    )
    tasks.append((task.name, rate))
  name = mixture_name(layout.stage)
  seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, tasks)
