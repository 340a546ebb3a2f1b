"""musiclm-jax: MusicLM (text to 24 kHz music) in JAX/Flax."""

__version__ = "0.1.0"
