"""Model code: the Flax BERT and (later) the BALI towers and heads."""
