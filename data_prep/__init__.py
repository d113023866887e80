"""data_prep: knowledge graph + linked corpus -> packed BALI TFRecords."""
