"""The shared base's record makers: sentences to examples, graph
linearisation, and the packer that fills fixed-shape rows
(bali_jax/features.py is their schema). Used by data_prep's pipelines and
by `bench --synthetic`, which packs generated documents the same way."""
