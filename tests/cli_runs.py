"""Training runs as users start them (`python -m bali_jax train` in a
subprocess), for the tests that kill, resume and compare them; and SIGTERM
to an in-process run, whose handler is the same."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

# Tiny test programs spend their time compiling, not running: XLA's CPU
# backend compiles them at optimisation level 0 and with its older loop
# emitters in the test session (tests/conftest.py) and in the `python -m`
# runs the tests start, as CPU numerics are the same IEEE operations;
# `bench` and users compile with XLA's defaults. Measured on the tiny train
# step (8 devices, 2 cores): 8-12 s to compile with the fusion emitters,
# 6-7.4 s without. Runs that mostly execute (the starter's fine-tuning)
# drop them: `subprocess_env(optimized=True)`.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0",
                  "--xla_cpu_use_fusion_emitters=false")

# the run every resume test compares against (tiny config, 2 x 4 mesh);
# in-process tests that need a tiny step, not a particular one, use it too
# (`**SHARED_STEP`): the session's compilation cache then holds one train
# step for all of them (steps: the schedule is part of the program)
UNINTERRUPTED = ("steps=10", "save_every=100", "mesh_data=2", "mesh_fsdp=4")
SHARED_STEP = dict(kv.split("=") for kv in UNINTERRUPTED)


def subprocess_env(devices: int | None = None, optimized: bool = False,
                   **extra) -> dict:
  """The environment of a `python -m` run started by a test: this
  session's (its compilation cache, the test XLA flags) without the
  session's fake device count, or with `devices` of them. `optimized`:
  XLA's default optimisation level and fusion emitters (no test compile
  flags), for runs that spend more time executing than compiling (the
  starter MiniLM's steps: measured 23 s a warm fine-tuning run against
  38 s at level 0; a cold one 37 s against 82 s with the legacy
  emitters), and JAX's default matmul precision, as a user runs them
  (they share no program with this session)."""
  name = lambda flag: flag.split("=", 1)[0]
  drop = {name(f) for f in TEST_XLA_FLAGS} if optimized else set()
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if "device_count" not in f and name(f) not in drop]
  if devices:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  env = {**os.environ, "XLA_FLAGS": " ".join(flags), **extra}
  if optimized:
    env.pop("JAX_DEFAULT_MATMUL_PRECISION", None)
  return env


def train_cli(workdir, data_dir, *overrides, env=None, devices=8, extra=()):
  env = subprocess_env(**(env or {}))  # devices: --num-cpu-devices below
  cmd = [sys.executable, "-m", "bali_jax", "train", "--config", "tiny",
         "--workdir", str(workdir), "--num-cpu-devices", str(devices),
         *extra, f"data_dir={data_dir}", *overrides]
  return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def loss_rows(workdir) -> list[dict]:
  """The whole lines with a training loss of a (live) metrics.jsonl: a
  pre-training or a fine-tuning run's."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  rows = []
  for line in open(path):
    try:
      row = json.loads(line)
    except ValueError:
      continue  # being written, or cut by a kill
    if "loss" in row:
      rows.append(row)
  return rows


def losses(workdir) -> dict:
  """step -> (loss, mlm, align) of a pre-training run's (live) log."""
  return {r["step"]: (r["loss"], r["mlm_loss"], r["align_loss"])
          for r in loss_rows(workdir)}


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


@contextlib.contextmanager
def sigterm_self_after(workdir, steps: int):
  """For an in-process run: SIGTERM this process once `steps` steps of
  `workdir` are logged (the run's own handler saves and stops it); the
  handler that was there before is put back afterwards."""
  before = signal.getsignal(signal.SIGTERM)
  stop = threading.Event()

  def watch():
    while not stop.wait(0.05):
      if len(losses(workdir)) >= steps:
        os.kill(os.getpid(), signal.SIGTERM)
        return
  t = threading.Thread(target=watch, daemon=True)
  t.start()
  try:
    yield
  finally:
    stop.set()
    t.join()
    signal.signal(signal.SIGTERM, before)
