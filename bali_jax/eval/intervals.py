"""Confidence intervals and a paired test for `evaluate`'s scores.

A point of acc@1 on a few thousand queries is within noise, so every
acc@k / MRR, and every difference to the first model, carries a 95%
percentile-bootstrap interval. The bootstrap resamples the unit the
queries were drawn in: documents for a corpus and for the test mentions
(mentions of one abstract are not independent), single queries for a
synonym set. Every model is scored on the same resamples, so the interval
of a difference is paired. Between two models, McNemar's exact test on
acc@1 (two-sided binomial test on the discordant queries) gives a p-value;
a query whose gold concept ties with others counts as correct with the
expected probability 1 / (ties + 1), drawn with a fixed seed shared by the
models so that equal rankings give equal outcomes.

A difference whose interval contains 0 is "no measurable change".
"""

from __future__ import annotations

import numpy as np

DEFAULT_RESAMPLES = 1000
_KEEP_ELEMENTS = 2 ** 24  # 128 MiB of float64 draws
_CHUNK = 100  # resamples per matrix product (bounds memory)


class Resampler:
  """Seeded bootstrap resamples of the groups of one query set."""

  def __init__(self, groups, n: int = DEFAULT_RESAMPLES, seed: int = 0):
    _, self.group = np.unique(np.asarray(groups, dtype=object).astype(str),
                              return_inverse=True)  # (Q,) group index
    self.num_groups = int(self.group.max()) + 1 if len(self.group) else 0
    self.n, self.seed = n, seed
    self._kept = None  # the draws as float64, once made, if small enough

  def _weights(self):
    """(chunk, G) how often each group is drawn, chunk by chunk (the same
    draws on every call). Drawing them is most of an interval's cost (a
    multinomial over 8,048 synonyms: 0.29 s per call, and a report makes
    dozens of calls per query set), so up to _KEEP_ELEMENTS they are kept
    for the next call, as the float64 the products below cast them to."""
    if self._kept is not None:
      yield from self._kept
      return
    rng = np.random.default_rng(self.seed)
    g = self.num_groups
    keep = self.n * g <= _KEEP_ELEMENTS
    kept = []
    for s in range(0, self.n, _CHUNK):
      w = rng.multinomial(g, np.full(g, 1.0 / g), size=min(_CHUNK,
                                                           self.n - s))
      if keep:
        w = w.astype(np.float64)  # exact: counts far below 2**53
        kept.append(w)
      yield w
    if keep:
      self._kept = kept

  def means(self, values: np.ndarray, select=None) -> np.ndarray:
    """(n,) the mean of `values` over the selected queries of each
    resample (NaN where a resample holds none)."""
    sel = np.ones(len(values), bool) if select is None else select
    sums = np.bincount(self.group[sel], np.asarray(values, float)[sel],
                       self.num_groups)
    counts = np.bincount(self.group[sel], minlength=self.num_groups)
    out = []
    for w in self._weights():
      c = w @ counts
      out.append(np.where(c > 0, (w @ sums) / np.maximum(c, 1), np.nan))
    return np.concatenate(out) if out else np.zeros(0)

  def interval(self, values, select=None) -> list[float] | None:
    """[2.5th, 97.5th] percentiles; None without queries."""
    if self.num_groups == 0 or (select is not None and not select.any()):
      return None
    m = self.means(values, select)
    m = m[np.isfinite(m)]
    return [float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))]


def top1_outcomes(p_at_1: np.ndarray, seed: int = 0) -> np.ndarray:
  """Correct / wrong per query for McNemar: ties resolved by a seeded draw
  (the same draws for every model)."""
  u = np.random.default_rng(seed + 7919).random(len(p_at_1))
  return u < np.asarray(p_at_1)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> dict:
  """Two-sided exact McNemar test of two paired correct/wrong vectors."""
  from scipy.stats import binom
  only_a = int(np.sum(a & ~b))
  only_b = int(np.sum(~a & b))
  n = only_a + only_b
  p = 1.0 if n == 0 else min(1.0, 2.0 * float(binom.cdf(min(only_a, only_b),
                                                        n, 0.5)))
  return {"only_first": only_b, "only_this": only_a, "p_value": p}
