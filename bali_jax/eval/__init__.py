"""Measuring what BALI pre-training buys: zero-shot entity linking and
downstream fine-tuning.

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
  tasks.py       readers of the downstream tasks' public formats, k folds
  task_batches.py  fixed-shape task batches; the tasks' metrics
  finetune.py    `finetune`: runs per fold and seed, results, comparison
  finetune_run.py  one run: sharded jitted step, epochs, best-on-dev,
                 SIGTERM and exact resume, export as an HF task model
"""
