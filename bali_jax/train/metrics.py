"""Step metrics: console line, JSONL, TensorBoard (process 0), FLOPs, MFU.

Model FLOPs are the analytic count of `train.flops` (MaxText's
convention), not XLA's cost analysis. The step reports its real-token
FLOPs (`real_flops`); MFU is real-token FLOPs over time over the peak of
`train.peak` (measured on CPU), so padding never counts as useful work.
Padded throughput is reported beside it.
"""

from __future__ import annotations

import json
import os

from bali_jax.train import flops

def _sum(d: dict) -> float:
  return float(sum(d.values()))


def padded_train_flops(cfg, spec) -> float:
  """Training FLOPs the compiled step computes (padding included)."""
  return _sum(flops.padded_flops(cfg, spec["budgets"], cfg.batch_size))


class MetricsWriter:
  def __init__(self, workdir: str, enabled: bool):
    self.enabled = enabled
    self.jsonl = None
    self.tb = None
    if enabled:
      self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict, prefix: str = "") -> None:
    if not self.enabled:
      return
    row = {"step": step, **{prefix + k: v for k, v in metrics.items()}}
    self.jsonl.write(json.dumps(row) + "\n")
    self.jsonl.flush()
    for k, v in metrics.items():
      self.tb.add_scalar(prefix + k, v, step)

  def close(self) -> None:
    if self.enabled:
      self.jsonl.close()
      self.tb.close()
