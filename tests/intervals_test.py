"""evaluate's intervals: the bootstrap against the normal approximation,
documents as the resampling unit, the paired difference, McNemar's exact
test against hand-computed binomial tails."""

import math

import numpy as np
import pytest

from bali_jax.eval import intervals, linking
from bali_jax.eval.report import PER_QUERY, add_intervals, to_markdown


def test_bootstrap_matches_the_normal_interval_of_a_proportion():
  rng = np.random.default_rng(0)
  x = (rng.random(4000) < 0.7).astype(float)
  lo, hi = intervals.Resampler(range(len(x)), 2000, seed=1).interval(x)
  p, half = x.mean(), 1.96 * math.sqrt(x.mean() * (1 - x.mean()) / len(x))
  assert lo < p < hi
  assert (hi - lo) == pytest.approx(2 * half, rel=0.1)
  assert abs((lo + hi) / 2 - p) < 0.2 * half
  # seeded: the same draws, the same interval
  assert intervals.Resampler(range(len(x)), 2000, seed=1).interval(x) == [
      lo, hi]
  assert intervals.Resampler(range(5), 50).interval(np.ones(5)) == [1, 1]


def test_documents_are_the_unit_of_resampling():
  """Mentions of one document move together: 400 documents of 10
  identical outcomes give the interval of 400 draws, not of 4,000."""
  rng = np.random.default_rng(2)
  per_doc = (rng.random(400) < 0.5).astype(float)
  x = np.repeat(per_doc, 10)
  docs = np.repeat([f"PMID:{i}" for i in range(400)], 10)
  lo, hi = intervals.Resampler(docs, 2000).interval(x)
  lo_q, hi_q = intervals.Resampler(range(len(x)), 2000).interval(x)
  assert (hi - lo) / (hi_q - lo_q) == pytest.approx(math.sqrt(10), rel=0.15)
  hard = np.zeros(len(x), bool)
  hard[:50] = True  # a subset: its own mean, same resamples
  lo_h, hi_h = intervals.Resampler(docs, 500).interval(x, hard)
  assert lo_h <= x[:50].mean() <= hi_h
  assert intervals.Resampler(docs, 10).interval(x, np.zeros(len(x),
                                                             bool)) is None


def test_mcnemar_exact_against_binomial_tails():
  a = np.array([True] * 10 + [False] * 2 + [True] * 30 + [False] * 5)
  b = np.array([False] * 10 + [True] * 2 + [True] * 30 + [False] * 5)
  m = intervals.mcnemar_exact(a, b)
  assert (m["only_this"], m["only_first"]) == (10, 2)
  want = 2 * sum(math.comb(12, i) for i in range(3)) / 2 ** 12  # 0.0386
  assert m["p_value"] == pytest.approx(want, rel=1e-12)
  assert intervals.mcnemar_exact(a, a)["p_value"] == 1.0
  one = intervals.mcnemar_exact(np.array([True]), np.array([False]))
  assert one["p_value"] == 1.0  # 2 x P(X <= 0), capped


def _row(model, greater, ties, groups, ids=None):
  n = len(greater)
  return {"model": model, "queries": "corpus:x", "representation": "string",
          **linking.metrics(greater, ties, np.zeros(n, bool)),
          PER_QUERY: {"ids": np.arange(n) if ids is None else ids,
                      "values": linking.per_query(greater, ties),
                      "hard": np.zeros(n, bool), "group": list(groups)}}


def test_paired_difference_and_its_verdict():
  rng = np.random.default_rng(3)
  n = 2000
  groups = [f"d{i // 4}" for i in range(n)]
  base = rng.integers(0, 3, n)  # gold ranks: 1, 2 or 3
  better = np.where(rng.random(n) < 0.15, 0, base)  # 15% moved to rank 1
  rows = [_row("a", base, np.zeros(n), groups),
          _row("a_again", base, np.zeros(n), groups),
          _row("b", better, np.zeros(n), groups)]
  add_intervals(rows, 500, seed=0)
  assert all(PER_QUERY not in r for r in rows)
  same, up = rows[1], rows[2]
  assert same["delta_acc@1"] == 0 and same["delta_acc@1_ci"] == [0, 0]
  assert not same["delta_acc@1_measurable"]
  assert same["mcnemar_acc@1"]["p_value"] == 1.0
  d = up["delta_acc@1"]
  assert d == pytest.approx(up["acc@1"] - rows[0]["acc@1"])
  assert up["delta_acc@1_ci"][0] > 0 and up["delta_acc@1_measurable"]
  assert up["mcnemar_acc@1"]["p_value"] < 1e-10
  assert up["mcnemar_acc@1"]["only_first"] == 0
  lo, hi = up["acc@1_ci"]
  assert lo < up["acc@1"] < hi and up["hard_acc@1_ci"] is None
  # paired on the queries both ranked (another tokenizer may cut some)
  part = _row("c", better[100:], np.zeros(n - 100), groups[100:],
              ids=np.arange(100, n))
  add_intervals([_row("a", base, np.zeros(n), groups), part], 200, seed=0)
  assert part["paired_n"] == n - 100
  assert part["delta_acc@1"] == pytest.approx(
      np.mean((better[100:] == 0).astype(float) - (base[100:] == 0)))
  md = to_markdown({"dictionary": {"source": "kg", "concepts_with_names": 1,
                                   "unique_names": 1}, "query_sets": [],
                    "results": rows})
  assert "n.s." in md.splitlines()[-4]  # a_again: the same model
  assert f"{100 * d:+.1f} [" in md and "n.s." not in md.splitlines()[-3]


def test_runs_over_seeds_pool_as_mean_sd_and_one_interval():
  from bali_jax.eval.report import aggregate_seeds
  rng = np.random.default_rng(4)
  n = 600
  groups = [f"d{i // 3}" for i in range(n)]
  base = _row("starter", rng.integers(0, 4, n), np.zeros(n), groups)
  seeds = [_row(f"s{k}", rng.integers(0, 3, n), np.zeros(n), groups)
           for k in range(3)]
  acc = [r["acc@1"] for r in seeds]
  rows = [base] + seeds
  (agg,) = aggregate_seeds(rows, "runs/s*", ["s0", "s1", "s2"])
  assert agg["model"] == "runs/s* (3 seeds)" and agg["n"] == n
  assert agg["acc@1"] == pytest.approx(np.mean(acc))
  assert agg["acc@1_sd"] == pytest.approx(np.std(acc, ddof=1))
  pooled = np.mean([r[PER_QUERY]["values"]["acc@1"] for r in seeds], 0)
  np.testing.assert_allclose(agg[PER_QUERY]["values"]["acc@1"], pooled)
  rows.append(agg)
  add_intervals(rows, 300, seed=0)
  lo, hi = agg["acc@1_ci"]
  assert lo < pooled.mean() < hi
  assert agg["delta_acc@1"] == pytest.approx(pooled.mean() - base["acc@1"])
  md = to_markdown({"dictionary": {"source": "kg", "concepts_with_names": 1,
                                   "unique_names": 1}, "query_sets": [],
                    "results": rows})
  sd = f"± {100 * agg['acc@1_sd']:.1f} ["
  assert "runs/s* (3 seeds)" in md and sd in md
