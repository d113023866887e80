"""data_prep's own readers: a user's ontologies and gold or raw
corpora for `python -m data_prep kg` (the shared KG and corpus readers
are bali_jax/readers)."""
