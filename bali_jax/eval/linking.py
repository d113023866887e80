"""Ranking concepts for queries, and the metrics (acc@1, acc@5, MRR).

A concept's score is the best cosine similarity of any of its names; the
gold rank is 1 + the number of other concepts that score higher. Ties are
real (a name shared by two concepts gives both exactly the same score; a
degenerate model ties everything), so they are broken uniformly at random
*in expectation*: with g concepts above the best gold concept and t other
concepts level with it,

  P(rank <= k) = clip((k - g) / (t + 1), 0, 1)
  E[1 / rank]  = (H(g + t + 1) - H(g)) / (t + 1)     (H: harmonic numbers)

so a constant model scores exactly chance (1 / #concepts) and no ordering
of the dictionary can help or hurt a model.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

MAX_GOLD = 8  # gold concepts per query kept (multi-id mentions)
KS = (1, 5)


@functools.partial(jax.jit, static_argnames=("k",))
def rank_concepts(concept, gold, *, k: int = 5):
  """(greater, ties, top-k concepts) from concept scores.

  Args:
    concept: (Q, C) each concept's best name similarity (-inf: no name).
    gold: (Q, G) gold nodes, -1 padded.
  """
  valid = gold >= 0
  gscore = jnp.where(valid, jnp.take_along_axis(
      concept, jnp.maximum(gold, 0), axis=1), -jnp.inf)  # (Q, G)
  best = jnp.max(gscore, axis=1, keepdims=True)  # (Q, 1)
  is_gold = jnp.zeros(concept.shape, bool).at[
      jnp.arange(concept.shape[0])[:, None], jnp.maximum(gold, 0)].max(valid)
  other = ~is_gold & jnp.isfinite(concept)
  greater = jnp.sum(other & (concept > best), axis=1)
  ties = jnp.sum(other & (concept == best), axis=1)
  return greater, ties, jax.lax.top_k(concept, min(k, concept.shape[1]))[1]


@functools.partial(jax.jit, static_argnames=("num_concepts", "k"))
def _rank_chunk(q, names, pair_name, pair_concept, gold, *, num_concepts, k):
  """rank_concepts for a chunk of queries against every name in memory.

  Args:
    q: (Q, D) unit query vectors; names: (Nn, D) unit name vectors.
    pair_name, pair_concept: (P,) the dictionary's (name, concept) pairs.
    gold: (Q, G) gold nodes, -1 padded.
  """
  sim = q @ names.T  # (Q, Nn)
  pair = sim[:, pair_name]  # (Q, P)
  concept = jax.ops.segment_max(pair.T, pair_concept,
                                num_segments=num_concepts).T  # (Q, C)
  return rank_concepts(concept, gold, k=k)


def gold_array(gold: list[tuple[int, ...]]) -> np.ndarray:
  """(Q, MAX_GOLD) gold nodes, -1 padded."""
  g = np.full((len(gold), MAX_GOLD), -1, np.int32)
  for i, gs in enumerate(gold):
    gs = gs[:MAX_GOLD]
    g[i, :len(gs)] = gs
  return g


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """x with zero rows appended up to `rows` (fixed shapes: one
  compilation for every chunk)."""
  if len(x) == rows:
    return x
  return np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:],
                                     x.dtype)])


def gold_ranks(queries: np.ndarray, names: np.ndarray, pair_name, pair_concept,
               gold: list[tuple[int, ...]], num_concepts: int,
               chunk: int = 128, k: int = 5):
  """(greater, ties, top-k concepts) per query, numpy int arrays: every
  name vector in memory (`search.gold_ranks` streams them from disk)."""
  g = gold_array(gold)
  names = jnp.asarray(names)
  pn, pc = jnp.asarray(pair_name), jnp.asarray(pair_concept)
  outs = []
  for s in range(0, len(gold), chunk):
    qc, gc = queries[s:s + chunk], g[s:s + chunk]
    n = len(qc)
    out = _rank_chunk(jnp.asarray(pad_rows(qc, chunk)), names, pn, pc,
                      jnp.asarray(pad_rows(gc, chunk)),
                      num_concepts=num_concepts, k=k)
    outs.append([np.asarray(o)[:n] for o in out])
  if not outs:
    z = np.zeros(0, np.int64)
    return z, z, np.zeros((0, k), np.int64)
  return tuple(np.concatenate(x) for x in zip(*outs))


def _harmonic(n: np.ndarray) -> np.ndarray:
  """H(n) = sum_{i<=n} 1/i, exact below 256, asymptotic above."""
  n = np.asarray(n, np.float64)
  table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, 256))])
  big = np.log(np.maximum(n, 1)) + 0.5772156649015329 + 1 / (
      2 * np.maximum(n, 1)) - 1 / (12 * np.maximum(n, 1) ** 2)
  return np.where(n < 256, table[np.minimum(n, 255).astype(int)], big)


def per_query(greater: np.ndarray, ties: np.ndarray) -> dict:
  """Each query's expected acc@k and reciprocal rank under random
  tie-breaking: {"acc@1": (Q,), "acc@5": (Q,), "mrr": (Q,)}."""
  g = np.asarray(greater, np.float64)
  t = np.asarray(ties, np.float64)
  out = {f"acc@{k}": np.clip((k - g) / (t + 1), 0.0, 1.0) for k in KS}
  out["mrr"] = (_harmonic(g + t + 1) - _harmonic(g)) / (t + 1)
  return out


def metrics(greater: np.ndarray, ties: np.ndarray, hard: np.ndarray) -> dict:
  """acc@k and MRR (expected under random tie-breaking), on all queries and
  on the hard subset, with the counts (None where a subset is empty)."""
  values = per_query(greater, ties)
  hard = np.asarray(hard, bool)

  def block(sel):
    out = {"n": int(sel.sum())}
    for key, v in values.items():
      out[key] = float(v[sel].mean()) if sel.any() else None
    return out

  all_ = block(np.ones(len(hard), bool))
  hard_ = block(hard)
  return {**all_, **{f"hard_{k}": v for k, v in hard_.items()}}
