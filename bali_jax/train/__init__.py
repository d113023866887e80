"""Training: loop, pure step, sharding, checkpoints, metrics, input pipeline.

  loop.py            train_and_evaluate: mesh, state, data, eval, checkpoints
  step.py            TrainState, optimiser, the pure train/eval steps
  masking.py         on-device MLM / mention / concept-name corruption
  sharding.py        mesh, logical axis rules -> NamedShardings
  input_pipeline.py  TFRecords -> per-process batches -> global arrays
  checkpoint.py      Orbax CheckpointManager behind one small class
  metrics.py         JSONL + TensorBoard writer, FLOPs and MFU
  plots.py           metrics.png from metrics.jsonl
"""
