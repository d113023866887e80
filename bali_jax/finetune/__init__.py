"""`finetune`: a BERT (a run, an HF directory, the starter) fine-tuned on a
downstream task.

  tasks.py    readers of the downstream tasks' public formats, k folds
  batches.py  fixed-shape task batches; the tasks' metrics
  runner.py   `finetune`: runs per fold and seed, results, comparison
  run.py      one run: sharded jitted step, epochs, best-on-dev, SIGTERM
              and exact resume (the training scaffolding's preemption,
              checkpoints and metrics), export as an HF task model
"""
