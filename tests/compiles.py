"""Counting XLA compilations in-process, from jax's own log lines (a
persistent-cache hit is logged as a compilation too, so a cache never hides
a recompile)."""

from __future__ import annotations

import contextlib
import logging
import re

import jax

_FINISHED = re.compile(r"Finished XLA compilation of (\S+) in")


@contextlib.contextmanager
def compilations():
  """Yields the list of `jit(name)` compiled inside the block, in order."""
  names: list[str] = []

  class Grab(logging.Handler):
    def emit(self, record):
      m = _FINISHED.search(record.getMessage())
      if m:
        names.append(m.group(1))

  handler = Grab()
  logger = logging.getLogger("jax")
  logger.addHandler(handler)
  before = jax.config.jax_log_compiles
  jax.config.update("jax_log_compiles", True)
  try:
    yield names
  finally:
    jax.config.update("jax_log_compiles", before)
    logger.removeHandler(handler)
