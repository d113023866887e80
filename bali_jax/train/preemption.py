"""Preemption: SIGTERM (a TPU maintenance event, SLURM's time limit, a
user's kill) asks the run to save and stop at the next step boundary,
agreed by every process. Used by pre-training and fine-tuning."""

import signal

import jax
import numpy as np


class Preemption:
  """SIGTERM sets a flag; the loop saves and stops at a step boundary.

  A context manager: the handler that was there before comes back on
  exit. Why: a run called in-process (a notebook, the tests) must not leave
  its process deaf to SIGTERM, and processes forked later (data_prep's
  worker pool) inherit the handler: `Pool.terminate()` then waits forever
  for workers that only set a flag (seen as a 300 s test timeout)."""

  def __init__(self):
    self.requested = False
    self._before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, self._handler)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self) -> None:
    """Puts the previous SIGTERM handler back."""
    if signal.getsignal(signal.SIGTERM) == self._handler:
      signal.signal(signal.SIGTERM, self._before)

  def _handler(self, signum, frame):
    del signum, frame
    self.requested = True

  def agreed(self) -> bool:
    """All processes stop at the same step (any one's signal counts)."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.max(flags))
