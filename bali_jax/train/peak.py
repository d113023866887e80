"""Peak FLOP/s per device: the denominator of MFU.

Accelerators: the vendor's dense bf16 peak, by `device_kind` prefix.
CPU: there is no such table (the peak depends on the cores, their vector
units and how busy the machine is), so it is measured in the same process
with a short fp32 matmul probe through XLA (the library that runs our
step), and split over the host's devices. `peak_tflops_per_device=` in the
config overrides both.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

# Dense bf16 TFLOP/s per chip, vendor figures without sparsity, matched by
# the longest `device_kind` prefix (so "NVIDIA H100 PCIe" is not an SXM).
PEAK_TFLOPS = {"TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0,
               "TPU v5p": 459.0, "TPU v5": 459.0, "TPU v6 lite": 918.0,
               "TPU v6e": 918.0, "NVIDIA H100": 989.0,
               "NVIDIA H100 PCIe": 756.0, "NVIDIA H100 NVL": 835.0,
               "NVIDIA H200": 989.0, "NVIDIA GH200": 989.0,
               "NVIDIA A100": 312.0, "NVIDIA L4": 121.0}


@functools.cache
def measure_matmul_tflops(n: int = 2048, repeats: int = 5) -> float:
  """Median fp32 TFLOP/s of an n x n matmul on the first local device
  (one warm-up product first). On CPU one device's matmul uses every
  core, so this is the host's peak."""
  dev = jax.local_devices()[0]
  a = jax.device_put(np.random.default_rng(0).standard_normal(
      (n, n), np.float32), dev)
  mm = jax.jit(lambda x, y: jnp.matmul(x, y, precision="highest"))
  mm(a, a).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    mm(a, a).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / statistics.median(times) / 1e12


def peak_source(cfg) -> str:
  if cfg.peak_tflops_per_device:
    return "config"
  d = jax.devices()[0]
  if d.platform == "cpu":
    return "measured fp32 matmul"
  return "table" if _table(d.device_kind) else "unknown"


def _table(kind: str) -> float:
  match = max((p for p in PEAK_TFLOPS if kind.startswith(p)), key=len,
              default=None)
  return PEAK_TFLOPS[match] if match else 0.0


def peak_tflops_per_device(cfg) -> float:
  """The MFU denominator (0 when unknown: MFU is then not reported)."""
  if cfg.peak_tflops_per_device:
    return cfg.peak_tflops_per_device
  d = jax.devices()[0]
  if d.platform == "cpu":
    return measure_matmul_tflops() / jax.local_device_count()
  return _table(d.device_kind)
