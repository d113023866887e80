"""Preemption: SIGTERM (a TPU maintenance event, SLURM's time limit, a
user's kill) asks the run to save and stop at the next step boundary,
agreed by every process. Used by pre-training and fine-tuning."""

import signal

import jax
import numpy as np


class Preemption:
  """SIGTERM sets a flag; the loop saves and stops at a step boundary."""

  def __init__(self):
    self.requested = False
    signal.signal(signal.SIGTERM, self._handler)

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
