"""HuBERT and MERT imported from transformers checkpoints: hidden states for semantic tokens."""

from __future__ import annotations

from musiclm_jax.tokenizers.hubert.config import HubertEncoderConfig
from musiclm_jax.tokenizers.hubert.encoder import HubertEncoder, load_hubert, save_hubert
from musiclm_jax.tokenizers.hubert.hf_import import load_hf_hubert

__all__ = ["HubertEncoder", "HubertEncoderConfig", "load_hf_hubert", "load_hubert", "save_hubert"]
