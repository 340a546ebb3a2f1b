"""The SoundStream codec as an adversarial training model: its losses, metrics and variables.

The Flax modules (`tokenizers/soundstream/`) know nothing of losses; this wrapper owns them, in
the t5x split of network vs model. The generator is the encoder → RVQ → decoder; the
discriminator is the multi-scale STFT + waveform pair. Loss weights are a frozen config bound
in gin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from musiclm_jax.tokenizers.rvq import QUANTIZER
from musiclm_jax.tokenizers.soundstream import codec, losses
from musiclm_jax.tokenizers.soundstream.config import SoundStreamConfig
from musiclm_jax.tokenizers.soundstream.discriminators import SoundStreamDiscriminator
from musiclm_jax.tokenizers.soundstream.model import SoundStream

PyTree = Any
Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class CodecLossConfig:
  """Weights of the generator's loss terms (SoundStream §3.4 / EnCodec §3.4 style).

  Attributes:
    mel_weight: multi-scale log-mel reconstruction (L1 + L2, FFT sizes 64..2048).
    stft_weight: multi-resolution STFT (spectral convergence + log magnitude).
    adversarial_weight: hinge generator loss against both discriminators.
    feature_matching_weight: L1 between discriminator features of real and decoded audio.
    commitment_weight: RVQ commitment (encoder output pulled toward its codes).
    adversarial_start_step: adversarial and feature-matching terms (and discriminator updates)
      start at this step, so the discriminator meets reconstructions that already sound like
      something. Before it the discriminator is not run; its losses and logits read 0.
  """

  mel_weight: float = 1.0
  stft_weight: float = 1.0
  adversarial_weight: float = 1.0
  feature_matching_weight: float = 3.0
  commitment_weight: float = 1.0
  adversarial_start_step: int = 0


class SoundStreamGAN:
  """Generator/discriminator losses of the codec for `gan_trainer.GanTrainer`.

  Args:
    config: the codec architecture.
    loss: loss weights.
    crop_samples: training crop length (the shape of `zeros_batch`).
  """

  name = codec.MODEL_NAME  # what load_codec accepts

  def __init__(
    self,
    config: SoundStreamConfig,
    loss: CodecLossConfig = CodecLossConfig(),
    crop_samples: int = 24_000,
  ):
    if crop_samples % config.hop_length:
      raise ValueError(
        f"crop_samples {crop_samples} is not a multiple of the codec hop {config.hop_length}."
      )
    self.config, self.loss, self.crop_samples = config, loss, crop_samples
    self.generator = SoundStream(config)
    self.discriminator = SoundStreamDiscriminator(config)

  def zeros_batch(self, batch_size: int) -> dict[str, jax.Array]:
    return {"audio": jnp.zeros((batch_size, self.crop_samples), jnp.float32)}

  def get_initial_variables(self, rng: jax.Array) -> dict[str, PyTree]:
    gen_rng, disc_rng = jax.random.split(rng)
    audio = jnp.zeros((1, self.config.hop_length * 4), jnp.float32)
    return {
      "generator": self.generator.init({"params": gen_rng}, audio, train=False),
      "discriminator": self.discriminator.init({"params": disc_rng}, audio),
    }

  def _once_adversarial(self, step: jax.Array, terms: Callable[..., Any], *args: Any) -> Any:
    """`terms(*args)` from `adversarial_start_step` on; before it, zeros of the same structure.

    A `lax.cond`, not a zero weight: before the start the discriminator is not run at all (on
    the tiny codec its forward and backward passes are ~4/5 of a step).
    """

    def zeros(*args):
      return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(terms, *args))

    started = jnp.asarray(step) >= self.loss.adversarial_start_step
    return jax.lax.cond(started, terms, zeros, *args)

  def _adversarial_terms(
    self, disc_params: PyTree, real: jax.Array, fake: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """(generator hinge loss, feature matching loss) of `fake` against `real`."""
    real_out = self.discriminator.apply({"params": disc_params}, real)
    fake_out = self.discriminator.apply({"params": disc_params}, fake)
    adversarial = losses.generator_hinge_loss(fake_out.logits)
    return adversarial, losses.feature_matching_loss(real_out.features, fake_out.features)

  def generator_loss(
    self,
    params: PyTree,
    state: PyTree,
    disc_params: PyTree,
    batch: Batch,
    rng: jax.Array,
    step: jax.Array,
  ) -> tuple[jax.Array, tuple[dict[str, jax.Array], PyTree, jax.Array]]:
    """Weighted reconstruction + adversarial + feature matching + commitment loss.

    Args:
      params / state: generator params and its {'quantizer': ...} variables.
      disc_params: the discriminator's params (held fixed here).
      batch: {'audio': [batch, samples] float}.
    Returns:
      (loss, (metrics, updated generator state, reconstruction [batch, samples])).
    """
    real = batch["audio"]
    (fake, rvq), new_state = self.generator.apply(
      {"params": params, **state}, real, train=True, rngs={QUANTIZER: rng}, mutable=[QUANTIZER]
    )
    cfg, sr = self.loss, self.config.sample_rate
    mel = losses.multiscale_mel_loss(fake, real, sr)
    stft = losses.multi_resolution_stft_loss(fake, real)
    adversarial, feature = self._once_adversarial(
      step, self._adversarial_terms, disc_params, real, fake
    )
    total = (
      cfg.mel_weight * mel
      + cfg.stft_weight * stft
      + cfg.adversarial_weight * adversarial
      + cfg.feature_matching_weight * feature
      + cfg.commitment_weight * rvq.commitment_loss
    )
    metrics = {
      "mel_loss": mel,
      "stft_loss": stft,
      "adversarial_loss": adversarial,
      "feature_matching_loss": feature,
      "commitment_loss": rvq.commitment_loss,
      "codebook_perplexity": rvq.metrics["perplexity"],
      "used_code_fraction": rvq.metrics["used_code_fraction"],
      "restarted_code_fraction": rvq.metrics["restarted_code_fraction"],
    }
    return total, (metrics, dict(new_state), fake)

  def discriminator_loss(
    self, params: PyTree, batch: Batch, fake: jax.Array, step: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Hinge loss on real audio vs the generator's (stopped) reconstructions; zero, with zero
    metrics, before the adversarial phase."""
    return self._once_adversarial(step, self._hinge_and_metrics, params, batch["audio"], fake)

  def _hinge_and_metrics(
    self, params: PyTree, real: jax.Array, fake: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(discriminator hinge loss, its metrics with the mean real and fake logits)."""
    real_out = self.discriminator.apply({"params": params}, real)
    fake_out = self.discriminator.apply({"params": params}, fake)
    hinge = losses.discriminator_hinge_loss(real_out.logits, fake_out.logits)
    real_logit = jnp.mean(jnp.stack([jnp.mean(x) for x in real_out.logits]))
    fake_logit = jnp.mean(jnp.stack([jnp.mean(x) for x in fake_out.logits]))
    return hinge, {"hinge_loss": hinge, "real_logit": real_logit, "fake_logit": fake_logit}

  def reconstruct(
    self, params: PyTree, state: PyTree, audio: jax.Array, num_levels: int | None = None
  ) -> jax.Array:
    """Eval-mode encode → decode with the first `num_levels` levels: [batch, samples]."""
    fake, _ = self.generator.apply(
      {"params": params, **state}, audio, train=False, num_levels=num_levels
    )
    return fake

  def eval_metrics(self, params: PyTree, state: PyTree, batch: Batch) -> dict[str, jax.Array]:
    """Mel distance of reconstructions with all levels and with one level (batch means)."""
    real = batch["audio"]
    sr = self.config.sample_rate
    metrics = {}
    for name, levels in (("all_levels", None), ("1_level", 1)):
      fake = self.reconstruct(params, state, real, levels)
      metrics[f"mel_distance_{name}"] = jnp.mean(losses.mel_distance(fake, real, sr))
    metrics["mel_distance_silence"] = jnp.mean(losses.mel_distance(jnp.zeros_like(real), real, sr))
    return metrics
