"""What a dataset holds beyond the packed rows' schema: the train views'
sampled subgraphs and packing (views.py), the tensorflow-datasets builder
(tfds_builder.py) and the data card (card.py)."""
