"""The MuLan quantizer job: fit the RVQ (paper 12 × 1024) on a trained MuLan's audio embeddings.

`fit_mulan_quantizer()` is what `musiclm-jax train` runs for gin/runs/mulan_quantizer_rendered.gin.
It streams audio crops of one MuLan window through the trained audio tower (jitted) and trains
the shared residual vector quantizer (`tokenizers/rvq.py`: k-means init, EMA codebooks, dead-code
restarts) on the embeddings. Checkpoints make it resumable. At inference the same quantizer turns
the *text* embedding of a prompt into the 12 conditioning tokens (DESIGN §2):
`tokenizers.mulan.tokens.load_mulan_tokenizer(mulan_dir, quantizer_dir)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from musiclm_jax import architecture
from musiclm_jax.checkpoints import CheckpointConfig, Checkpointer
from musiclm_jax.data import audio_batches
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.models.mulan import MuLanModel
from musiclm_jax.tokenizers.mulan.load import TrainedMuLan, load_mulan
from musiclm_jax.tokenizers.mulan.tokens import QUANTIZER_MODEL_NAME
from musiclm_jax.tokenizers.rvq import QUANTIZER, ResidualVectorQuantizer, RVQConfig
from musiclm_jax.training import loop as train_loop


def quantizer_metadata(trained: TrainedMuLan, rvq: RVQConfig) -> dict[str, Any]:
  """What the quantizer expects: its own settings and the MuLan whose embeddings it quantizes."""
  return {
    "model": QUANTIZER_MODEL_NAME,
    "rvq": architecture.to_json(rvq),
    "mulan_architecture": architecture.to_json(trained.config),
  }


def _train_step_fn(trained: TrainedMuLan, quantizer: ResidualVectorQuantizer):
  """(variables, audio [b, window], key) -> (variables, metrics), jitted: embed, then RVQ step."""
  model = MuLanModel(trained.config)

  def step(params, variables, audio, key):
    embeddings = jax.lax.stop_gradient(model.embed_audio(params, audio))
    out, updated = quantizer.apply(
      variables, embeddings, train=True, rngs={QUANTIZER: key}, mutable=[QUANTIZER]
    )
    error = jnp.sum((out.quantized - embeddings) ** 2) / jnp.sum(embeddings**2)
    metrics = {"relative_error": error, **out.metrics}
    return updated, {k: v for k, v in metrics.items() if jnp.ndim(v) == 0}

  return jax.jit(step)


def _abstract_state(quantizer: ResidualVectorQuantizer, dim: int) -> dict[str, Any]:
  replicated = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  shapes = jax.eval_shape(
    lambda: quantizer.init(jax.random.key(0), jnp.zeros((1, dim)), train=False)
  )
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes)


def fit_mulan_quantizer(
  *,
  mulan_dir: str,
  source: AudioSource,
  output_dir: str,
  rvq: RVQConfig = RVQConfig(num_levels=12, codebook_size=1024, dim=128, quantizer_dropout=False),
  num_steps: int = 1000,
  batch_size: int = 64,
  split: str = "train",
  seed: int = 0,
  data_seed: int = 0,
  checkpoint: CheckpointConfig = CheckpointConfig(),
  log_every_steps: int = 50,
  partitioner: Any = None,
  on_start: Callable[[], None] | None = None,
) -> dict[str, float]:
  """Trains the MuLan RVQ on `source`'s audio embeddings until `num_steps` (resumable).

  Args:
    mulan_dir: model dir of a trained MuLan (`mulan_train_job`).
    source: a TFDS audio dataset at the audio tower's sample rate.
    output_dir: the quantizer's checkpoints (and final metrics).
    rvq: levels × codes (paper 12 × 1024); dim must be MuLan's embed_dim.
    num_steps, batch_size: RVQ updates and crops per update (crops of one MuLan window).
    split, data_seed: data; seed: k-means seeding and dead-code restarts.
    checkpoint: cadence and retention.
    log_every_steps: console cadence.
    partitioner: unused (the quantizer is small and runs on one device); kept so the `train`
      verb can pass its mesh.
    on_start: called on the chief once the checkpoint (if any) is accepted, before anything is
      written (the train verb writes config.gin here).
  Returns:
    Metrics of the last step: relative_error (||q - e||² / ||e||²), perplexity, used codes.
  """
  del partitioner
  trained = load_mulan(mulan_dir)
  if rvq.dim != trained.config.embed_dim:
    raise ValueError(
      f"RVQConfig.dim={rvq.dim}, but MuLan's embeddings are {trained.config.embed_dim}-d."
    )
  quantizer = ResidualVectorQuantizer(rvq)
  step_fn = _train_step_fn(trained, quantizer)
  metadata = quantizer_metadata(trained, rvq)
  abstract = _abstract_state(quantizer, rvq.dim)
  with Checkpointer(output_dir, checkpoint, metadata=metadata) as checkpointer:
    if checkpointer.latest_step() is None:
      variables, start = (
        quantizer.init(jax.random.key(seed), jnp.zeros((1, rvq.dim)), train=False),
        0,
      )
    else:
      variables, extra = checkpointer.restore(abstract)
      start = int(extra["step"])
    if on_start is not None and jax.process_index() == 0:
      on_start()
    crops = audio_batches.host_audio_batches(
      source, split, trained.config.audio.window_samples, batch_size, data_seed, start
    )
    params, metrics = trained.params, {}
    for step in range(start + 1, num_steps + 1):
      audio = jnp.asarray(next(crops)["audio"])
      variables, metrics = step_fn(params, variables, audio, jax.random.key(seed * 100_003 + step))
      if step % log_every_steps == 0 or step == num_steps:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        print(f"rvq step {step}/{num_steps}  {metrics}", flush=True)
      if step == num_steps or checkpointer.should_save(step):
        checkpointer.save(step, variables, {"step": step}, force=True)
    checkpointer.wait_until_finished()
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  if jax.process_index() == 0 and metrics:
    train_loop.write_final_metrics(output_dir, num_steps, metrics)
  return metrics
