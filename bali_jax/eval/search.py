"""Exact concept ranking streamed over name-vector shards, in a memory budget.

The in-memory ranking (`linking.gold_ranks`) holds every name vector and a
(queries x names) similarity matrix: fine for 50k names, not for UMLS's
10M. Here the name vectors stay on disk (`name_store.NameStore`) and the
queries go in blocks. For one block, a running (block x concepts) array
holds each concept's best name similarity so far; each shard adds its
names (`max` over the shard's (name, concept) pairs). Max is exact and
order-free, and every unique name's similarity is computed once, so the
concept scores are the in-memory path's (a name shared by two concepts
still ties them exactly). The gold rank, ties and top-k then come from the
same function as in memory (`linking.rank_concepts`).

Memory: a shard (stored + float32 copy), the block's running concept
scores and the per-shard (block x shard) similarities; `plan` sizes shards
and blocks to a budget (`--memory-budget`, 4 GiB by default) and names
the smallest budget that fits one query. The store is read once per query
block.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np

from bali_jax.eval import linking
from bali_jax.eval import name_store
from bali_jax.eval.name_store import DTYPES, NameStore

MIN_SHARD_ROWS = 256
MAX_BLOCK = 1024  # queries per block at most
# bytes per (query, concept) while ranking a block: the running scores,
# the final comparisons and the gold mask (float32 + bools, with slack)
CONCEPT_BYTES = 16
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*$", re.I)


def parse_bytes(text: str) -> int:
  """'4GiB', '512MiB', '1.5G', '1000000' -> bytes (powers of 1024)."""
  m = _SIZE.match(str(text))
  if not m:
    raise ValueError(f"memory budget {text!r}: expected a size such as "
                     "4GiB, 512MiB or a number of bytes")
  scale = 1024 ** " KMGT".index((m.group(2) or " ").upper())
  return int(float(m.group(1)) * scale)


def _human(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if n < 1024 or unit == "GiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} GiB"


@dataclasses.dataclass(frozen=True)
class Plan:
  shard_rows: int
  query_block: int
  budget: int
  estimate: int  # bytes the plan uses at most (by the model above)


def _shard_bytes(rows: int, dim: int, dtype: str) -> int:
  return rows * dim * (DTYPES[dtype] + 4)  # as stored + float32 on device


def _query_bytes(rows: int, dim: int, concepts: int,
                 pairs_per_name: float) -> int:
  """One query's share: its running concept scores, its similarities to a
  shard's names and pairs, its vector."""
  return (concepts + 1) * CONCEPT_BYTES + int(
      rows * (1 + pairs_per_name) * 4 * 2) + dim * 4


def plan(budget: int, num_names: int, num_concepts: int, num_pairs: int,
         dim: int, dtype: str = "float32", num_queries: int = MAX_BLOCK,
         shard_rows: int | None = None) -> Plan:
  """Shard rows and query block size for a budget in bytes; a quarter of
  it for a shard, the rest for the block (or the shard rows of an existing
  store). ValueError naming the minimum when one query does not fit."""
  ppn = num_pairs / max(num_names, 1)
  floor = min(num_names, MIN_SHARD_ROWS) if shard_rows is None else \
      shard_rows
  minimum = _shard_bytes(floor, dim, dtype) + _query_bytes(
      floor, dim, num_concepts, ppn)
  if budget < minimum:
    raise ValueError(
        f"memory budget {_human(budget)} is too small for one query "
        f"block: at least {_human(minimum)} ({minimum:,} bytes) is needed "
        f"for {num_concepts:,} concepts and shards of {floor:,} x {dim} "
        f"{dtype} names")
  if shard_rows is None:
    shard_rows = max(floor, min(max(num_names, 1), (budget // 4) // (
        dim * (DTYPES[dtype] + 4))))
  rest = budget - _shard_bytes(shard_rows, dim, dtype)
  per_query = _query_bytes(shard_rows, dim, num_concepts, ppn)
  block = int(max(1, min(MAX_BLOCK, max(num_queries, 1), rest // per_query)))
  return Plan(shard_rows, block, budget,
              _shard_bytes(shard_rows, dim, dtype) + block * per_query)


@functools.partial(jax.jit, donate_argnums=0)
def _add_shard(running, q, names, pair_name, pair_concept):
  """running (C + 1, B): best similarity per concept so far, concept-major
  (each pair updates one contiguous row: 10x faster on CPU than
  column-wise); q (B, D); names (S, D) one shard; pair_name (P,) positions
  in the shard and pair_concept (P,) their concepts (padding pairs point at
  row C)."""
  sim = names.astype(jnp.float32) @ q.T  # (S, B)
  return running.at[pair_concept].max(sim[pair_name])


def _shard_pairs(store: NameStore, pair_name, pair_concept, num_concepts):
  """Per shard, its (name position, concept) pairs padded to one length
  (one compilation): lists of (P,) int32 arrays."""
  order = np.argsort(pair_name, kind="stable")
  pn, pc = np.asarray(pair_name)[order], np.asarray(pair_concept)[order]
  cuts = np.searchsorted(pn, [store.bounds(i)[0] for i in
                              range(store.num_shards)] + [store.num_names])
  width = max(1, int(np.max(np.diff(cuts)))) if len(cuts) > 1 else 1
  out = []
  for i in range(store.num_shards):
    a, b = cuts[i], cuts[i + 1]
    names = np.zeros(width, np.int32)
    concepts = np.full(width, num_concepts, np.int32)  # padding column
    names[:b - a] = pn[a:b] - store.bounds(i)[0]
    concepts[:b - a] = pc[a:b]
    out.append((names, concepts))
  return out


def _padded_shard(store: NameStore, i: int) -> np.ndarray:
  v = store.read(i)
  if len(v) < store.shard_rows:  # the last shard: one shape for every call
    v = np.concatenate([v, np.zeros((store.shard_rows - len(v), store.dim),
                                    v.dtype)])
  return v


def gold_ranks(queries: np.ndarray, store: NameStore, pair_name,
               pair_concept, gold: list[tuple[int, ...]], num_concepts: int,
               budget: int, k: int = 5):
  """(greater, ties, top-k concepts) per query, as `linking.gold_ranks`,
  streaming the store once per query block within `budget` bytes."""
  p = plan(budget, store.num_names, num_concepts, len(pair_name),
           store.dim, store.dtype, len(queries), store.shard_rows)
  g = linking.gold_array(gold)
  pairs = _shard_pairs(store, pair_name, pair_concept, num_concepts)
  outs = []
  for s in range(0, len(queries), p.query_block):
    qb, gb = queries[s:s + p.query_block], g[s:s + p.query_block]
    n = len(qb)
    qb = linking.pad_rows(np.asarray(qb, np.float32), p.query_block)
    gb = linking.pad_rows(gb, p.query_block)
    running = jnp.full((num_concepts + 1, p.query_block), -jnp.inf)
    q = jnp.asarray(qb)
    for i in range(store.num_shards):
      running = _add_shard(running, q, _padded_shard(store, i), *pairs[i])
      # one shard in flight: asynchronous dispatch would otherwise read
      # (and keep mapped) every shard before the first is added
      running.block_until_ready()
    out = linking.rank_concepts(running[:num_concepts].T, jnp.asarray(gb),
                                k=k)
    outs.append([np.asarray(o)[:n] for o in out])
  if not outs:
    z = np.zeros(0, np.int64)
    return z, z, np.zeros((0, k), np.int64)
  return tuple(np.concatenate(x) for x in zip(*outs))


def _barrier():
  from jax.experimental import multihost_utils
  multihost_utils.sync_global_devices("bali_jax name store written")


def build_store(directory: str, names: list[str], encode, dim: int,
                num_concepts: int, num_pairs: int, budget: int,
                dtype: str = "float32", num_queries: int = MAX_BLOCK):
  """Writes the dictionary's name vectors in shards sized to `budget`
  (each process its slice, then a global barrier); (store, encoding
  stats, plan)."""
  p = plan(budget, len(names), num_concepts, num_pairs, dim, dtype,
           num_queries)
  procs = jax.process_count()
  store, stats = name_store.write(
      directory, names, encode, dim, p.shard_rows, dtype,
      jax.process_index(), procs, _barrier if procs > 1 else None)
  return store, stats, p


def rank_queries(queries: np.ndarray, store: NameStore, pair_name,
                 pair_concept, gold: list[tuple[int, ...]],
                 num_concepts: int, budget: int, k: int = 5):
  """`gold_ranks` with the queries split over the processes (each streams
  the whole store for its slice), the results gathered to every process."""
  procs = jax.process_count()
  if procs == 1 or not gold:
    return gold_ranks(queries, store, pair_name, pair_concept, gold,
                      num_concepts, budget, k)
  from jax.experimental import multihost_utils
  m = -(-len(gold) // procs)
  lo = min(len(gold), jax.process_index() * m)
  hi = min(len(gold), lo + m)
  mine = gold_ranks(queries[lo:hi], store, pair_name, pair_concept,
                    gold[lo:hi], num_concepts, budget, k)
  padded = [linking.pad_rows(np.asarray(x, np.int32), m) for x in mine]
  every = multihost_utils.process_allgather(padded)  # [(P, m, ...)]
  return tuple(np.asarray(x).reshape((procs * m,) + x.shape[2:])[:len(gold)]
               for x in every)
