"""The MuLan quantizer job: fit the RVQ (paper 12 × 1024) on a trained MuLan's audio embeddings.

`fit_mulan_quantizer()` is what `musiclm-jax train` runs for gin/runs/mulan_quantizer_rendered.gin.
It streams audio crops of one MuLan window through the trained audio tower (jitted) and trains
the shared residual vector quantizer (`tokenizers/rvq.py`: k-means init, EMA codebooks, dead-code
restarts) on the embeddings. Checkpoints make it resumable. At inference the same quantizer turns
the *text* embedding of a prompt into the 12 conditioning tokens (DESIGN §2):
`load_mulan_tokenizer(mulan_dir, quantizer_dir)`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from musiclm_jax import architecture
from musiclm_jax.checkpoints import CheckpointConfig, Checkpointer, CheckpointMismatchError
from musiclm_jax.data.audio_batches import AudioSource
from musiclm_jax.jobs.mulan import TrainedMuLan, load_mulan
from musiclm_jax.tokenizers.mulan.tokens import MuLanTokenizer
from musiclm_jax.tokenizers.rvq import QUANTIZER, ResidualVectorQuantizer, RVQConfig
from musiclm_jax.training import loop as train_loop

MODEL_NAME = "mulan_rvq"


def quantizer_metadata(trained: TrainedMuLan, rvq: RVQConfig) -> dict[str, Any]:
  """What the quantizer expects: its own settings and the MuLan whose embeddings it quantizes."""
  return {
    "model": MODEL_NAME,
    "rvq": architecture.to_json(rvq),
    "mulan_architecture": architecture.to_json(trained.model.config),
  }


def _train_step_fn(trained: TrainedMuLan, quantizer: ResidualVectorQuantizer):
  """(variables, audio [b, window], key) -> (variables, metrics), jitted: embed, then RVQ step."""
  model = trained.model

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
  Returns:
    Metrics of the last step: relative_error (||q - e||² / ||e||²), perplexity, used codes.
  """
  del partitioner
  trained = load_mulan(mulan_dir)
  if rvq.dim != trained.model.config.embed_dim:
    raise ValueError(
      f"RVQConfig.dim={rvq.dim}, but MuLan's embeddings are {trained.model.config.embed_dim}-d."
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
    crops = train_loop.host_audio_batches(
      source, split, trained.model.crop_samples, batch_size, data_seed, start
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


def load_mulan_tokenizer(mulan_dir: str, quantizer_dir: str) -> MuLanTokenizer:
  """MuLan (audio and text towers, text tokenizer) with the RVQ fitted on its audio embeddings.

  Raises:
    CheckpointMismatchError: `quantizer_dir` is not a MuLan quantizer, or was fitted on another
      MuLan architecture than the one in `mulan_dir`.
  """
  trained = load_mulan(mulan_dir)
  with Checkpointer(quantizer_dir, CheckpointConfig(save_on_sigterm=False)) as reader:
    saved = reader.saved_metadata()
  if saved.get("model") != MODEL_NAME:
    raise CheckpointMismatchError(
      f"{quantizer_dir} holds no MuLan quantizer ({saved.get('model')!r})."
    )
  if saved.get("mulan_architecture") != architecture.to_json(trained.model.config):
    raise CheckpointMismatchError(
      f"The quantizer in {quantizer_dir} was fitted on another MuLan than {mulan_dir}; fit it "
      "again on this model (fit_mulan_quantizer)."
    )
  rvq = architecture.from_json(RVQConfig, saved["rvq"])
  quantizer = ResidualVectorQuantizer(rvq)
  with Checkpointer(
    quantizer_dir, CheckpointConfig(save_on_sigterm=False), metadata=saved
  ) as checkpointer:
    variables, _ = checkpointer.restore(_abstract_state(quantizer, rvq.dim))
  return MuLanTokenizer(
    trained.model.config, trained.params, rvq, jax.device_get(variables), trained.tokenizer
  )
