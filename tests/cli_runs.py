"""Training runs as users start them (`python -m bali_jax train` in a
subprocess), for the tests that kill, resume and compare them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

# the run every resume test compares against (tiny config, 2 x 4 mesh)
UNINTERRUPTED = ("steps=10", "save_every=100", "mesh_data=2", "mesh_fsdp=4")


def train_cli(workdir, data_dir, *overrides, env=None, devices=8, extra=()):
  env = {**os.environ, **(env or {})}
  env.pop("XLA_FLAGS", None)
  cmd = [sys.executable, "-m", "bali_jax", "train", "--config", "tiny",
         "--workdir", str(workdir), "--num-cpu-devices", str(devices),
         *extra, f"data_dir={data_dir}", *overrides]
  return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def losses(workdir) -> dict:
  """step -> (loss, mlm, align) from the whole lines of a (live) log."""
  out = {}
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return out
  for line in open(path):
    try:
      row = json.loads(line)
    except ValueError:
      continue  # being written, or cut by a kill
    if "loss" in row:
      out[row["step"]] = (row["loss"], row["mlm_loss"], row["align_loss"])
  return out


def sigterm_after(proc, workdir, steps: int) -> str:
  """SIGTERM once `steps` steps are logged; the run's output."""
  deadline = time.time() + 600
  while time.time() < deadline:
    if len(losses(workdir)) >= steps:
      proc.send_signal(signal.SIGTERM)
      break
    if proc.poll() is not None:
      break
    time.sleep(0.05)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert "SIGTERM: saved step" in out, out[-2000:]
  return out
