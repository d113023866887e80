"""Measuring what BALI pre-training buys: zero-shot entity linking
(downstream fine-tuning is bali_jax/finetune/).

SapBERT protocol: encode a query and every name of every concept of the
knowledge graph with the BERT alone (no fine-tuning, no graph), predict the
concept of the nearest name by cosine similarity; a concept scores as its
best name.

  dictionary.py  the concept names (from a built dataset or a KG), aliases
  queries.py     held-out synonyms, held-out test mentions, a user's
                 gold-linked PubTator / BERN2 corpus (with bad-input counts)
  encoder.py     packed, fixed-shape, jitted encoding over local devices
  linking.py     ranks of the gold concept; acc@k, MRR, the hard subset
  models.py      SRC -> BERT (run directory, HF directory, `starter`)
  report.py      `evaluate`: several models side by side (markdown + JSON)
  ablation.py    `ablate`: short runs with one key changed, one table
  in_training.py the pre-training loop's linking evaluator
"""
