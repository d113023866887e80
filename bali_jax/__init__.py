"""bali_jax: BALI (knowledge-graph / language-model alignment) in JAX/Flax."""

__version__ = "0.1.0"
