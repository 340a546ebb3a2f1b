"""MuLan conditioning tokens: embeddings of audio (training) or text (inference) → RVQ ids.

    audio [b, samples] ─► clip embedding (mean over windows) ─┐
                                                              ├─► RVQ (12 × 1024) ─► ids [b, 12]
    captions ─► text tokenizer ─► text tower ─────────────────┘

The same quantizer serves both modalities: that is the conditioning swap of MusicLM (DESIGN §2).
Build one with `load_mulan_tokenizer(mulan_dir, quantizer_dir)`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from musiclm_jax import architecture, checkpoints
from musiclm_jax.tokenizers.mulan import audio_tower
from musiclm_jax.tokenizers.mulan.config import MuLanConfig
from musiclm_jax.tokenizers.mulan.load import load_mulan
from musiclm_jax.tokenizers.mulan.model import MuLan
from musiclm_jax.tokenizers.mulan.text_tokenizer import TextTokenizer
from musiclm_jax.tokenizers.rvq import QUANTIZER, ResidualVectorQuantizer, RVQConfig

PyTree = Any

# The "model" a MuLan quantizer checkpoint's metadata names (the MuLan quantizer job's).
QUANTIZER_MODEL_NAME = "mulan_rvq"


class MuLanTokenizer:
  """Audio and text embeddings of a trained MuLan and their RVQ tokens.

  Args:
    config: the MuLan architecture.
    params: its (unboxed) parameters.
    rvq: the quantizer's settings (dim = config.embed_dim).
    rvq_variables: the fitted codebooks ({'quantizer': ...}).
    text_tokenizer: the tokenizer the text tower was trained with.
  """

  def __init__(
    self,
    config: MuLanConfig,
    params: PyTree,
    rvq: RVQConfig,
    rvq_variables: PyTree,
    text_tokenizer: TextTokenizer,
  ):
    if rvq.dim != config.embed_dim:
      raise ValueError(f"RVQ dim {rvq.dim} differs from MuLan's embed_dim {config.embed_dim}.")
    self.config, self.rvq, self.text_tokenizer = config, rvq, text_tokenizer
    self._params, self._rvq_variables = params, rvq_variables
    module, quantizer = MuLan(config), ResidualVectorQuantizer(rvq)
    embed = functools.partial(module.apply, method=MuLan.embed_audio)

    def audio_embedding(params, audio):
      window = functools.partial(lambda p, a: embed({"params": p}, a), params)
      cfg = config.audio
      return audio_tower.clip_embedding(window, audio, cfg.window_samples, cfg.hop_samples)

    self._audio_embedding = jax.jit(audio_embedding)
    self._text_embedding = jax.jit(
      lambda params, ids, mask: module.apply({"params": params}, ids, mask, method=MuLan.embed_text)
    )
    self._encode = jax.jit(
      lambda variables, x: quantizer.apply(variables, x, method=ResidualVectorQuantizer.encode)
    )

  @property
  def rvq_variables(self) -> PyTree:
    """The fitted codebooks ({'quantizer': ...})."""
    return self._rvq_variables

  @property
  def num_levels(self) -> int:
    return self.rvq.num_levels

  @property
  def codebook_size(self) -> int:
    return self.rvq.codebook_size

  def audio_embedding(self, audio: np.ndarray) -> np.ndarray:
    """Clip embeddings: [batch, samples] float audio (finite) → float32 [batch, embed_dim]."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2:
      raise ValueError(f"audio must be [batch, samples]; got shape {audio.shape}.")
    bad = ~np.isfinite(audio).all(axis=1)
    if bad.any():
      raise ValueError(f"audio rows {np.flatnonzero(bad).tolist()} hold NaN or inf samples.")
    return np.asarray(self._audio_embedding(self._params, audio))

  def text_embedding(self, texts: Sequence[str]) -> np.ndarray:
    """Caption embeddings: texts → float32 [batch, embed_dim] (empty captions are refused)."""
    ids, mask = self.text_tokenizer.encode_batch(list(texts), self.config.text.max_length)
    return np.asarray(self._text_embedding(self._params, ids, mask))

  def tokens(self, embeddings: np.ndarray) -> np.ndarray:
    """[batch, embed_dim] embeddings → int32 [batch, num_levels] in [0, codebook_size)."""
    return np.asarray(self._encode(self._rvq_variables, np.asarray(embeddings, np.float32)))

  def audio_tokens(self, audio: np.ndarray) -> np.ndarray:
    """The conditioning tokens of training: [batch, samples] → int32 [batch, num_levels]."""
    return self.tokens(self.audio_embedding(audio))

  def text_tokens(self, texts: Sequence[str]) -> np.ndarray:
    """The conditioning tokens of inference: captions → int32 [batch, num_levels]."""
    return self.tokens(self.text_embedding(texts))

  def mcc(self, texts: Sequence[str], audio: np.ndarray) -> np.ndarray:
    """MuLan cycle consistency: cosine of each caption's and its clip's embedding, [batch]."""
    return np.sum(self.text_embedding(texts) * self.audio_embedding(audio), axis=-1)


def load_mulan_tokenizer(mulan_dir: str, quantizer_dir: str) -> MuLanTokenizer:
  """MuLan (audio and text towers, text tokenizer) with the RVQ fitted on its audio embeddings.

  Args:
    mulan_dir: the MuLan job's model dir.
    quantizer_dir: the MuLan quantizer job's output dir (its checkpoints).

  Raises:
    FileNotFoundError: no MuLan or quantizer checkpoint, or no text tokenizer.
    CheckpointMismatchError: `quantizer_dir` is not a MuLan quantizer, or was fitted on another
      MuLan architecture than the one in `mulan_dir`.
  """
  trained = load_mulan(mulan_dir)
  saved, variables, _ = checkpoints.restore_trained(
    quantizer_dir, QUANTIZER_MODEL_NAME, "a MuLan quantizer", subtrees=((QUANTIZER,),)
  )
  if saved.get("mulan_architecture") != architecture.to_json(trained.config):
    raise checkpoints.CheckpointMismatchError(
      f"The quantizer in {quantizer_dir} was fitted on another MuLan than {mulan_dir}; fit it "
      "again on this model (fit_mulan_quantizer)."
    )
  rvq = architecture.from_json(RVQConfig, saved["rvq"])
  return MuLanTokenizer(trained.config, trained.params, rvq, variables, trained.tokenizer)
