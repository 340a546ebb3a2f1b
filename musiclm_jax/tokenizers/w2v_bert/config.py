"""w2v-BERT architecture and objective settings, one frozen dataclass (t5x style).

Bound once per size in gin/models/w2v_bert/{tiny,base,paper}.gin. Frames: an 80-bin log-mel at
100 Hz (hop 240 samples at 24 kHz) is subsampled ×4 by two stride-2 convolutions, so one frame
covers 960 samples (25 Hz, DESIGN §2): S samples give exactly S // 960 frames.

Paper config (≈600M parameters, w2v-BERT XL-like): d_model 1024, 16 heads × 64, d_ff 4096,
conv kernel 5, 12 contrastive + 12 MLM conformer layers, one codebook of 1024 codes; the semantic
tokens are k-means ids of the 7th MLM layer's outputs.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from musiclm_jax.layers.conformer import ConformerConfig

FEATURE_NORMS = ("utterance", "fixed")
SUBSAMPLING = 4  # two stride-2 convolutions


def _ceil_half(n: int) -> int:
  return -(-n // 2)


@dataclasses.dataclass(frozen=True)
class W2VBertConfig:
  """w2v-BERT: log-mel front end, contrastive and MLM conformer modules, Gumbel quantizer.

  Attributes:
    sample_rate: audio sample rate in Hz.
    n_mels, hop_length, win_length, n_fft: log-mel front end (Hann window of win_length samples
      centred in n_fft, power spectrum, Slaney mel filterbank).
    mel_floor: floor of the mel power before the log.
    feature_norm: 'utterance' (per example and mel bin: zero mean, unit variance over the real
      frames) or 'fixed' ((log-mel - feature_mean) / feature_std).
    feature_mean, feature_std: constants of the 'fixed' normalisation.
    subsampling_channels: channels of the two 3×3 stride-2 subsampling convolutions.
    d_model, num_heads, head_dim, d_ff, conv_kernel_size: conformer block sizes.
    num_contrastive_layers: blocks of the contrastive module.
    num_mlm_layers: blocks of the MLM module.
    relative_attention_num_buckets, relative_attention_max_distance: T5 relative position bias.
    codebook_size: codes of the quantizer (the MLM targets' vocabulary).
    codebook_dim: width of the code vectors and of the contrastive projection.
    gumbel_temperature_start, gumbel_temperature_end, gumbel_temperature_decay_steps: the
      Gumbel-softmax temperature decays exponentially from start to end over decay_steps.
    num_negatives: distractors per masked frame, drawn from the same example's masked frames.
    contrastive_temperature: κ of the InfoNCE logits (cosine similarity / κ).
    contrastive_weight, mlm_weight, diversity_weight: loss = mlm_weight·L_mlm +
      contrastive_weight·L_contrastive + diversity_weight·L_diversity (paper 1, 1, 0.1).
    mask_prob: probability that a real frame starts a masked span.
    mask_span_length: frames per masked span.
    min_masked_spans: spans forced in every example (so at least one frame is masked).
    dropout_rate: dropout in the conformer blocks and on the front-end features.
    kmeans_layer: 1-based MLM layer whose outputs the k-means tokenizer clusters.
    dtype, param_dtype: compute and parameter dtypes.
    attention_impl: 'xla' or 'dot_product_attention'.
  """

  d_model: int
  num_heads: int
  head_dim: int
  d_ff: int
  num_contrastive_layers: int
  num_mlm_layers: int
  codebook_size: int
  codebook_dim: int
  sample_rate: int = 24000
  n_mels: int = 80
  hop_length: int = 240
  win_length: int = 600
  n_fft: int = 1024
  mel_floor: float = 1e-5
  feature_norm: str = "utterance"
  feature_mean: float = -5.0
  feature_std: float = 4.0
  subsampling_channels: int = 128
  conv_kernel_size: int = 5
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  gumbel_temperature_start: float = 2.0
  gumbel_temperature_end: float = 0.5
  gumbel_temperature_decay_steps: int = 250_000
  num_negatives: int = 100
  contrastive_temperature: float = 0.1
  contrastive_weight: float = 1.0
  mlm_weight: float = 1.0
  diversity_weight: float = 0.1
  mask_prob: float = 0.065
  mask_span_length: int = 10
  min_masked_spans: int = 1
  dropout_rate: float = 0.1
  kmeans_layer: int = 7
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention_impl: str = "xla"

  def __post_init__(self):
    if self.feature_norm not in FEATURE_NORMS:
      raise ValueError(f"feature_norm {self.feature_norm!r} is not one of {FEATURE_NORMS}.")
    if not 1 <= self.kmeans_layer <= self.num_mlm_layers:
      raise ValueError(
        f"kmeans_layer={self.kmeans_layer} must be in [1, num_mlm_layers={self.num_mlm_layers}]."
      )
    if not 0.0 <= self.mask_prob <= 1.0 or self.mask_span_length < 1 or self.min_masked_spans < 1:
      raise ValueError(
        "Need 0 <= mask_prob <= 1, mask_span_length >= 1 and min_masked_spans >= 1, got "
        f"{self.mask_prob}, {self.mask_span_length}, {self.min_masked_spans}."
      )
    if self.win_length > self.n_fft or self.n_fft // 2 + 1 < self.n_mels:
      raise ValueError(f"Need win_length <= n_fft and n_mels <= n_fft // 2 + 1: {self}.")
    if self.gumbel_temperature_end <= 0 or self.gumbel_temperature_start <= 0:
      raise ValueError("Gumbel temperatures must be positive.")

  @property
  def samples_per_frame(self) -> int:
    """Audio samples per output frame (960 at 24 kHz: 25 Hz)."""
    return self.hop_length * SUBSAMPLING

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def num_frames(self, num_samples: int) -> int:
    """Frames the model produces for `num_samples` of audio."""
    return num_samples // self.samples_per_frame

  def conformer_config(self, num_layers: int) -> ConformerConfig:
    return ConformerConfig(
      num_layers=num_layers,
      num_heads=self.num_heads,
      head_dim=self.head_dim,
      d_model=self.d_model,
      d_ff=self.d_ff,
      conv_kernel_size=self.conv_kernel_size,
      dropout_rate=self.dropout_rate,
      relative_attention_num_buckets=self.relative_attention_num_buckets,
      relative_attention_max_distance=self.relative_attention_max_distance,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      attention_impl=self.attention_impl,
    )

  def num_params(self) -> int:
    """Parameters of `model.W2VBert` with this config."""
    c = self.subsampling_channels
    freq = _ceil_half(_ceil_half(self.n_mels))  # two stride-2 convs with 'same' padding
    frontend = (9 * c + c) + (9 * c * c + c) + freq * c * self.d_model + 2 * self.d_model
    quantizer = self.d_model * self.codebook_size + self.codebook_size * self.codebook_dim
    heads = self.d_model + self.d_model * self.codebook_dim + self.d_model * self.codebook_size
    conformers = (
      self.conformer_config(self.num_contrastive_layers).num_params()
      + self.conformer_config(self.num_mlm_layers).num_params()
    )
    return frontend + quantizer + heads + conformers
