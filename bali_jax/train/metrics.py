"""Step metrics: console line, JSONL, TensorBoard (process 0), FLOPs, MFU.

Model FLOPs are an analytic count of matmuls (MaxText's convention), not
XLA's cost analysis. Attention is bidirectional: no causal halving. Training
counts 3x forward. Padded tokens are computed, so they count toward FLOPs;
real-token throughput is reported beside padded throughput.
"""

from __future__ import annotations

import json
import os

import jax

# Dense bf16 peak TFLOP/s per device, by `device_kind` prefix. CPU: the fp32
# matmul peak measured on this project's 2-core machines (177 GFLOP/s per
# host, see the PyTorch reference bench), split over the host's devices.
PEAK_TFLOPS = {"TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5": 459.0,
               "TPU v6 lite": 918.0, "NVIDIA H100": 989.0,
               "NVIDIA H200": 989.0, "NVIDIA A100": 312.0}
CPU_HOST_PEAK_TFLOPS = 0.177


def peak_tflops_per_device(cfg) -> float:
  if cfg.peak_tflops_per_device:
    return cfg.peak_tflops_per_device
  d = jax.devices()[0]
  if d.platform == "cpu":
    return CPU_HOST_PEAK_TFLOPS / jax.local_device_count()
  for prefix, peak in PEAK_TFLOPS.items():
    if d.device_kind.startswith(prefix):
      return peak
  return 0.0


def train_flops_per_step(cfg, spec) -> float:
  """Analytic training FLOPs of one step (forward x 3)."""
  b = spec["budgets"]
  bc, g = cfg.model.bert, cfg.model.gnn
  d, inter, layers = bc.hidden_size, bc.intermediate_size, bc.num_hidden_layers
  rows = cfg.batch_size

  def encoder(tokens, row_len):  # per token: projections + attention
    return tokens * layers * (2 * (4 * d * d + 2 * d * inter)
                              + 2 * 2 * row_len * d)

  fwd = encoder(rows * b["seq_len"], b["seq_len"])
  fwd += encoder(rows * b["name_rows"] * b["name_len"], b["name_len"])
  k = cfg.mlm_max_predictions or -(-b["seq_len"] // 5)
  fwd += rows * k * 2 * (d * d + d * bc.vocab_size)
  hidden = g.hidden or d
  widths = [d] + [hidden] * (g.num_layers - 1) + [d]
  fwd += rows * b["max_nodes"] * sum(2 * i * o for i, o in zip(widths,
                                                               widths[1:]))
  fwd += rows * b["max_entities"] * 2 * d * d
  return 3.0 * fwd


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
