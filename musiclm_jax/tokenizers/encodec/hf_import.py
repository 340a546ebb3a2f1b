"""Imports a transformers `EncodecModel` checkpoint directory (no torch) as our EnCodec variables.

A checkpoint directory is what `EncodecModel.save_pretrained` writes: `config.json`
(`model_type: "encodec"`) and `model.safetensors`. What this takes, tensor by tensor:

- convolutions: `<layer>.conv.weight` or its weight-norm pair (`parametrizations.weight.original0`
  / `original1` as transformers 5 saves it, `weight_g` / `weight_v` in older checkpoints such as
  the hub's `facebook/encodec_24khz`), folded here into one kernel w = g · v / ‖v‖ (the norm over
  all but the first axis), and `<layer>.conv.bias`. torch's Conv1d weight is [out, in, width] and
  ConvTranspose1d's [in, out, width]; ours are [width, in, out].
- LSTMs: `weight_ih_l{k}` / `weight_hh_l{k}` [4H, in] transposed, the two biases summed.
- codebooks: `quantizer.layers.{i}.codebook.embed` of the first `num_levels` levels; the EMA
  buffers (`cluster_size`, `embed_avg`, `inited`) and the levels beyond are not used.

Anything else (a missing tensor, a wrong shape, a tensor the config does not explain) is refused
naming the tensor, the file and both shapes (`hf_checkpoint.check_tensors`).

Supported: mono, unnormalised, unchunked models with weight norm (the 24 kHz family). The 48 kHz
model (stereo, chunked with overlap-add, normalised, time-group norm) is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from musiclm_jax.tokenizers import hf_checkpoint
from musiclm_jax.tokenizers.encodec.config import PAD_MODES, EncodecCodecConfig
from musiclm_jax.tokenizers.rvq import QUANTIZER

CONFIG_FILE = hf_checkpoint.CONFIG_FILE
WEIGHTS_FILE = hf_checkpoint.WEIGHTS_FILE
_BUFFERS = re.compile(r"quantizer\.layers\.\d+\.codebook\.(cluster_size|embed_avg|inited)$")


# --- config.json ------------------------------------------------------------------------------


def _refuse_unsupported(hf: Mapping[str, Any], path: str) -> None:
  checks = (
    (hf.get("model_type") == "encodec", f"model_type {hf.get('model_type')!r} is not 'encodec'"),
    (hf.get("audio_channels", 1) == 1, f"audio_channels={hf.get('audio_channels')} (mono only)"),
    (not hf.get("normalize", False), "normalize=true (per-chunk loudness scales unsupported)"),
    (
      hf.get("chunk_length_s") is None,
      f"chunk_length_s={hf.get('chunk_length_s')} (unchunked only)",
    ),
    (
      hf.get("norm_type", "weight_norm") == "weight_norm",
      f"norm_type {hf.get('norm_type')!r} (weight_norm only)",
    ),
    (
      hf.get("codebook_dim") in (None, hf.get("hidden_size", 128)),
      f"codebook_dim={hf.get('codebook_dim')} differs from hidden_size={hf.get('hidden_size')}",
    ),
    (hf.get("pad_mode", "reflect") in PAD_MODES, f"pad_mode {hf.get('pad_mode')!r}"),
  )
  for ok, what in checks:
    if not ok:
      raise ValueError(f"{path}: unsupported EnCodec config: {what}.")


def num_levels_for(hf: Mapping[str, Any], bandwidth: float | None) -> tuple[int, int]:
  """(levels at `bandwidth` kbps, levels the checkpoint holds), as transformers counts them.

  Raises:
    ValueError: bandwidth not one of the config's `target_bandwidths`.
  """
  bandwidths = [float(b) for b in hf.get("target_bandwidths", (1.5, 3.0, 6.0, 12.0, 24.0))]
  ratios = hf.get("upsampling_ratios", (8, 5, 4, 2))
  frame_rate = math.ceil(int(hf.get("sampling_rate", 24_000)) / math.prod(ratios))
  bits_per_second = math.log2(int(hf.get("codebook_size", 1024))) * frame_rate
  held = int(1000 * bandwidths[-1] // bits_per_second)
  if bandwidth is None:
    bandwidth = bandwidths[-1]
  if float(bandwidth) not in bandwidths:
    raise ValueError(f"bandwidth {bandwidth} kbps is not one of this model's {bandwidths}.")
  return max(1, math.floor(float(bandwidth) * 1000 / bits_per_second)), held


def config_from_hf(path: str, bandwidth: float | None = None) -> EncodecCodecConfig:
  """Our config of the transformers EnCodec `config.json` at `path`, keeping the levels of
  `bandwidth` kbps (default: the largest of its `target_bandwidths`, i.e. all its levels)."""
  hf = hf_checkpoint.read_json(path)
  _refuse_unsupported(hf, path)
  try:
    levels, held = num_levels_for(hf, bandwidth)
    fields = {
      f: hf[f]
      for f in (
        "num_filters",
        "hidden_size",
        "num_residual_layers",
        "kernel_size",
        "last_kernel_size",
        "residual_kernel_size",
        "dilation_growth_rate",
        "use_causal_conv",
        "pad_mode",
        "compress",
        "num_lstm_layers",
        "trim_right_ratio",
        "use_conv_shortcut",
        "codebook_size",
      )
      if f in hf
    }
    return EncodecCodecConfig(
      sample_rate=int(hf.get("sampling_rate", 24_000)),
      upsampling_ratios=tuple(int(r) for r in hf.get("upsampling_ratios", (8, 5, 4, 2))),
      num_levels=levels,
      num_quantizers=held,
      **fields,
    )
  except (ValueError, TypeError) as e:
    raise ValueError(f"{path}: {e}") from e


# --- the tensors a config implies --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Conv:
  """One convolution: its HF prefix, where it goes, its torch weight shape, whether transposed."""

  prefix: str
  path: tuple[str, ...]
  shape: tuple[int, int, int]
  transpose: bool = False

  @property
  def out_channels(self) -> int:
    # torch: Conv1d weights are [out, in, width], ConvTranspose1d weights [in, out, width].
    return self.shape[1] if self.transpose else self.shape[0]


def _residuals(config: EncodecCodecConfig, first: int, layers: str, path: tuple, dim: int):
  hidden = dim // config.compress
  for j in range(config.num_residual_layers):
    prefix, here = f"{layers}.{first + j}", path + (f"residual_{j}",)
    yield _Conv(f"{prefix}.block.1", here + ("conv_0",), (hidden, dim, config.residual_kernel_size))
    yield _Conv(f"{prefix}.block.3", here + ("conv_1",), (dim, hidden, 1))
    if config.use_conv_shortcut:
      yield _Conv(f"{prefix}.shortcut", here + ("shortcut",), (dim, dim, 1))


def _conv_layers(config: EncodecCodecConfig) -> Iterator[_Conv]:
  """Every convolution, encoder then decoder. HF prefixes index transformers' `layers` lists,
  whose ELUs and LSTM take indices too (a resolution is its residual blocks, an ELU and a
  strided convolution: num_residual_layers + 2 entries)."""
  channels, hidden, residuals = (
    config.encoder_channels(),
    config.hidden_size,
    config.num_residual_layers,
  )
  yield _Conv("encoder.layers.0", ("encoder", "conv_in"), (channels[0], 1, config.kernel_size))
  index = 1
  for b, ratio in enumerate(reversed(config.upsampling_ratios)):
    yield from _residuals(config, index, "encoder.layers", ("encoder", f"block_{b}"), channels[b])
    index += residuals + 1  # past the blocks and an ELU
    down = (channels[b + 1], channels[b], 2 * ratio)
    yield _Conv(f"encoder.layers.{index}", ("encoder", f"block_{b}", "downsample"), down)
    index += 1
  # index is the LSTM's, then an ELU.
  out = (hidden, channels[-1], config.last_kernel_size)
  yield _Conv(f"encoder.layers.{index + 2}", ("encoder", "conv_out"), out)
  yield _Conv(
    "decoder.layers.0", ("decoder", "conv_in"), (channels[-1], hidden, config.kernel_size)
  )
  index = 2  # past conv_in and the LSTM
  for b, ratio in enumerate(config.upsampling_ratios):
    wide, narrow = channels[-1 - b], channels[-2 - b]
    path = ("decoder", f"block_{b}")
    up = (wide, narrow, 2 * ratio)
    yield _Conv(f"decoder.layers.{index + 1}", path + ("upsample",), up, transpose=True)
    index += 2  # past an ELU and the transposed convolution
    yield from _residuals(config, index, "decoder.layers", path, narrow)
    index += residuals
  out = (1, channels[0], config.last_kernel_size)
  yield _Conv(f"decoder.layers.{index + 1}", ("decoder", "conv_out"), out)


def _lstm_layers(config: EncodecCodecConfig) -> Iterator[tuple[str, tuple[str, ...], int]]:
  """(HF prefix, our path, width) of the encoder's and the decoder's LSTM."""
  encoder_index = 1 + len(config.upsampling_ratios) * (config.num_residual_layers + 2)
  width = config.encoder_channels()[-1]
  yield f"encoder.layers.{encoder_index}.lstm", ("encoder", "lstm"), width
  yield "decoder.layers.1.lstm", ("decoder", "lstm"), width


def variable_shapes(config: EncodecCodecConfig) -> dict[str, Any]:
  """Our variables' shapes for `config` ({"params": ..., "quantizer": {"codebooks"}}): what
  `convert` fills, for random weights (benchmarks) and shape checks."""
  params: dict[str, Any] = {}
  for c in _conv_layers(config):
    width = c.shape[2]
    inputs = c.shape[0] if c.transpose else c.shape[1]
    hf_checkpoint.set_path(
      params, c.path, {"kernel": (width, inputs, c.out_channels), "bias": (c.out_channels,)}
    )
  for _, path, width in _lstm_layers(config):
    for k in range(config.num_lstm_layers):
      layer = {"w_ih": (width, 4 * width), "w_hh": (width, 4 * width), "bias": (4 * width,)}
      hf_checkpoint.set_path(params, path + (f"layer_{k}",), layer)
  codebooks = (config.num_levels, config.codebook_size, config.hidden_size)
  return {"params": params, QUANTIZER: {"codebooks": codebooks}}


def expected_shapes(
  config: EncodecCodecConfig, tensors: Mapping[str, np.ndarray]
) -> dict[str, tuple[int, ...]]:
  """Every tensor a checkpoint of `config` must hold, with its shape (weight norm named as
  this checkpoint names it)."""
  shapes: dict[str, tuple[int, ...]] = {}
  for c in _conv_layers(config):
    names = hf_checkpoint.weight_names(f"{c.prefix}.conv", tensors)
    if len(names) == 2:
      shapes[names[0]] = (c.shape[0], 1, 1)
    shapes[names[-1]] = c.shape
    shapes[f"{c.prefix}.conv.bias"] = (c.out_channels,)
  for prefix, _, width in _lstm_layers(config):
    for k in range(config.num_lstm_layers):
      for kind in ("ih", "hh"):
        shapes[f"{prefix}.weight_{kind}_l{k}"] = (4 * width, width)
        shapes[f"{prefix}.bias_{kind}_l{k}"] = (4 * width,)
  for i in range(config.num_quantizers):
    shapes[f"quantizer.layers.{i}.codebook.embed"] = (config.codebook_size, config.hidden_size)
  return shapes


# --- conversion -------------------------------------------------------------------------------


def _kernel(c: _Conv, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
  """The torch weight (weight norm folded: g · v / ‖v‖ over all but axis 0) as [width, in, out]."""
  weight = hf_checkpoint.folded_weight(f"{c.prefix}.conv", tensors, norm_axes=(1, 2))
  # Conv1d [out, in, w] -> [w, in, out]; ConvTranspose1d [in, out, w] -> [w, in, out].
  order = (2, 0, 1) if c.transpose else (2, 1, 0)
  return np.ascontiguousarray(weight.transpose(order), dtype=np.float32)


def convert(config: EncodecCodecConfig, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Checked HF tensors -> {"params": ..., "quantizer": {"codebooks"}} (numpy, float32)."""
  params: dict[str, Any] = {}
  for c in _conv_layers(config):
    bias = np.asarray(tensors[f"{c.prefix}.conv.bias"], np.float32)
    hf_checkpoint.set_path(params, c.path, {"kernel": _kernel(c, tensors), "bias": bias})
  for prefix, path, _ in _lstm_layers(config):
    for k in range(config.num_lstm_layers):
      layer = {
        "w_ih": tensors[f"{prefix}.weight_ih_l{k}"].T,
        "w_hh": tensors[f"{prefix}.weight_hh_l{k}"].T,
        "bias": tensors[f"{prefix}.bias_ih_l{k}"] + tensors[f"{prefix}.bias_hh_l{k}"],
      }
      hf_checkpoint.set_path(
        params,
        path + (f"layer_{k}",),
        {n: np.ascontiguousarray(v, np.float32) for n, v in layer.items()},
      )
  codebooks = np.stack(
    [tensors[f"quantizer.layers.{i}.codebook.embed"] for i in range(config.num_levels)]
  ).astype(np.float32)
  return {"params": params, QUANTIZER: {"codebooks": codebooks}}


def load_hf_encodec(
  directory: str | os.PathLike[str], bandwidth: float | None = None
) -> tuple[EncodecCodecConfig, dict[str, Any]]:
  """Imports a transformers EnCodec checkpoint directory.

  Args:
    directory: holds `config.json` and `model.safetensors` (as `save_pretrained` writes them).
    bandwidth: kbps, one of the config's `target_bandwidths`; decides how many levels are kept
      (None: the largest, every level).
  Returns:
    (config, variables) for `EncodecCodec`.
  Raises:
    FileNotFoundError / ValueError naming the file: missing files, an unsupported config, a
    missing, misshapen or unexplained tensor.
  """
  directory = os.fspath(directory)
  config = config_from_hf(os.path.join(directory, CONFIG_FILE), bandwidth)
  weights = os.path.join(directory, WEIGHTS_FILE)
  tensors = hf_checkpoint.read_safetensors(weights)
  hf_checkpoint.check_tensors(
    expected_shapes(config, tensors),
    tensors,
    weights,
    ignored=[name for name in tensors if _BUFFERS.match(name)],
    extra_hint=f"do num_residual_layers, num_lstm_layers and upsampling_ratios in {CONFIG_FILE} match it?",
  )
  return config, convert(config, tensors)
