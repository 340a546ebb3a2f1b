"""w2v-BERT semantic model: config, log-mel front end, quantizer, masking, losses, network."""

from __future__ import annotations

from musiclm_jax.tokenizers.w2v_bert.config import W2VBertConfig
from musiclm_jax.tokenizers.w2v_bert.model import W2VBert, W2VBertOutput

__all__ = ["W2VBert", "W2VBertConfig", "W2VBertOutput"]
