"""Step metrics: console line, JSONL, TensorBoard (process 0), FLOPs, MFU.

Model FLOPs are the analytic count of `train.flops` (MaxText's
convention), not XLA's cost analysis. The step reports its real-token
FLOPs (`real_flops`); MFU is real-token FLOPs over time over the peak of
`train.peak` (measured on CPU), so padding never counts as useful work.
Padded throughput is reported beside it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time

from bali_jax import storage
from bali_jax.train import flops
from bali_jax.train.tb_events import ScalarWriter


def _sum(d: dict) -> float:
  return float(sum(d.values()))


def padded_train_flops(cfg, spec) -> float:
  """Training FLOPs the compiled step computes (padding included)."""
  return _sum(flops.padded_flops(cfg, spec["budgets"], cfg.batch_size))


def _kept_lines(path: str, start: int | None) -> list[str] | None:
  """The whole JSON lines of the log, of steps <= start if given; None
  when there is no log yet."""
  if not storage.exists(path):
    return None
  kept = []
  for line in storage.read_text(path).splitlines(keepends=True):
    try:
      row = json.loads(line)
    except ValueError:
      continue  # cut by a kill
    if line.endswith("\n") and (start is None
                                 or row.get("step", 0) <= start):
      kept.append(line)
  return kept


class MetricsWriter:
  """metrics.jsonl and TensorBoard events of the run (process 0 only).

  Local runs append to the file and write events in place. Object stores
  cannot append: for a gs:// workdir the lines are kept and the whole file
  is rewritten, and the events are written locally and copied, at most
  every `flush_every_s` seconds and at close (a killed run loses at most
  that much of its log, never its checkpoints).

  Given `start` (the step the run starts or resumes from; the loop always
  gives it), the log keeps the lines of steps up to `start` only: a run
  killed after its last checkpoint logged steps it will now run again, and
  a SIGKILL may have cut the last line in half; the resumed log reads like
  the uninterrupted one. Without it every whole line is kept."""

  def __init__(self, workdir: str, enabled: bool, flush_every_s: float = 60,
               start: int | None = None):
    self.enabled = enabled
    self.remote = storage.is_url(workdir)
    self.path = storage.join(workdir, "metrics.jsonl")
    self.tb_dir = storage.join(workdir, "tensorboard")
    self.flush_every_s = flush_every_s
    self._last_flush = time.time()
    self.jsonl = self.tb = None
    if not enabled:
      return
    kept = _kept_lines(self.path, start)
    if self.remote:
      self.lines = kept or []
      self._tb_local = tempfile.mkdtemp(prefix="bali-tb-")
      self.tb = ScalarWriter(self._tb_local)
    else:
      storage.makedirs(workdir)
      if kept is not None:
        storage.write_text(self.path, "".join(kept))
      self.jsonl = storage.open_file(self.path, "a")  # local: append
      self.tb = ScalarWriter(self.tb_dir)

  def write(self, step: int, metrics: dict, prefix: str = "") -> None:
    if not self.enabled:
      return
    row = {"step": step, **{prefix + k: v for k, v in metrics.items()}}
    for k, v in metrics.items():
      self.tb.add_scalar(prefix + k, v, step)
    if not self.remote:
      self.jsonl.write(json.dumps(row) + "\n")
      self.jsonl.flush()
      return
    self.lines.append(json.dumps(row) + "\n")
    if time.time() - self._last_flush >= self.flush_every_s:
      self.flush()

  def flush(self) -> None:
    if not (self.enabled and self.remote):
      return
    storage.write_text(self.path, "".join(self.lines))
    self.tb.flush()
    storage.copy_tree(self._tb_local, self.tb_dir)
    self._last_flush = time.time()

  def close(self) -> None:
    if not self.enabled:
      return
    if self.remote:
      self.flush()
      self.tb.close()
      storage.copy_tree(self._tb_local, self.tb_dir)
      shutil.rmtree(self._tb_local, ignore_errors=True)
    else:
      self.jsonl.close()
      self.tb.close()
