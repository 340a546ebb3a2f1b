"""The architecture of an imported HuBERT or MERT (a wav2vec 2.0-style speech/music encoder).

Field names follow transformers' `HubertConfig` where the meaning is the same. HuBERT base
(`facebook/hubert-base-ls960`): 7 convolutions of 512 channels, strides 5·2·2·2·2·2·2 (hop 320:
50 Hz at 16 kHz), 12 post-LN layers of 768, GELU. MERT (`m-a-p/MERT-v1-95M`) has the same layout
at 24 kHz (75 Hz).
"""

from __future__ import annotations

import dataclasses
import math

ACTIVATIONS = ("gelu", "gelu_new")  # exact erf GELU; tanh-approximated GELU


@dataclasses.dataclass(frozen=True)
class HubertEncoderConfig:
  """A HuBERT / MERT encoder's shape (see transformers' `HubertConfig`).

  Attributes:
    sample_rate: audio samples per second the model was trained on.
    conv_dim, conv_stride, conv_kernel: the feature extractor's convolutions (unpadded).
    conv_bias: whether they have biases.
    feat_extract_norm: 'group' (the first convolution normalises each channel over time) or
      'layer' (every convolution is followed by a layer norm over channels).
    feat_proj_layer_norm: a layer norm before the projection to hidden_size.
    hidden_size, num_layers, num_heads, intermediate_size: the transformer.
    hidden_act: 'gelu' (erf) or 'gelu_new' (tanh), in the feed-forward blocks.
    layer_norm_eps: epsilon of the transformer's layer norms.
    num_conv_pos_embeddings, num_conv_pos_embedding_groups: the grouped convolution that gives
      positions.
    do_stable_layer_norm: pre-LN layers with a final layer norm (HuBERT large) instead of post-LN
      layers after a layer norm of the input (HuBERT base, MERT).
    model_type: 'hubert' or 'mert_model', as the checkpoint's config says.
  """

  sample_rate: int = 16_000
  conv_dim: tuple[int, ...] = (512,) * 7
  conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
  conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
  conv_bias: bool = False
  feat_extract_norm: str = "group"
  feat_proj_layer_norm: bool = True
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-5
  num_conv_pos_embeddings: int = 128
  num_conv_pos_embedding_groups: int = 16
  do_stable_layer_norm: bool = False
  model_type: str = "hubert"

  def __post_init__(self):
    if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel):
      raise ValueError("conv_dim, conv_stride and conv_kernel must have one entry per layer.")
    if self.feat_extract_norm not in ("group", "layer"):
      raise ValueError(f"feat_extract_norm {self.feat_extract_norm!r} is not 'group' or 'layer'.")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {list(ACTIVATIONS)}.")
    if self.hidden_size % self.num_heads:
      raise ValueError(
        f"hidden_size={self.hidden_size} is not divisible by {self.num_heads} heads."
      )
    if self.hidden_size % self.num_conv_pos_embedding_groups:
      raise ValueError("hidden_size is not divisible by num_conv_pos_embedding_groups.")

  @property
  def hop_length(self) -> int:
    """Samples per frame (320 for HuBERT and MERT)."""
    return math.prod(self.conv_stride)

  @property
  def frame_rate(self) -> float:
    """Frames per second (50 for HuBERT at 16 kHz, 75 for MERT at 24 kHz)."""
    return self.sample_rate / self.hop_length

  def num_frames(self, num_samples: int) -> int:
    """Frames the unpadded convolutions give for num_samples (0 if shorter than their field)."""
    length = num_samples
    for kernel, stride in zip(self.conv_kernel, self.conv_stride):
      length = max(0, (length - kernel) // stride + 1)
    return length
