"""A knowledge graph's adjacency as flat arrays (CSR), not Python objects.

A graph of UMLS size has tens of millions of MRREL rows; as a dict of
(neighbour, relation) tuples per concept they cost about 140 bytes an edge,
as int32 CSR arrays about 12. `KnowledgeGraph` appends edges to three
columns and compacts them here once, keeping each source's pairs in the
order first added: the order the dict kept, so every sample is unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class CsrEdges:
  """The adjacency as flat int32 arrays, rows by source node.

  ptr (N + 1), dst, rel (E): source i's unique (neighbour, relation) pairs
  are dst/rel[ptr[i]:ptr[i + 1]], in the order first added.
  nbr_ptr, nbr_dst, nbr_rel: the same with one entry per neighbour (its
  first relation), what neighbour sampling draws from.
  """
  ptr: np.ndarray
  dst: np.ndarray
  rel: np.ndarray
  nbr_ptr: np.ndarray
  nbr_dst: np.ndarray
  nbr_rel: np.ndarray

  @classmethod
  def build(cls, old: "CsrEdges | None", pending, n: int,
            num_rel: int) -> "CsrEdges":
    """Compacts `old` plus the pending (src, dst, rel) columns: duplicates
    dropped (the first kept), rows stable-sorted by source, so each
    source's pairs stay in first-added order."""
    new = [np.frombuffer(c, dtype=np.int32) if len(c) else
           np.zeros(0, np.int32) for c in pending]
    if old is not None and len(old.dst):
      src0 = np.repeat(np.arange(len(old.ptr) - 1, dtype=np.int32),
                       np.diff(old.ptr))
      new = [np.concatenate([a, b]) for a, b in
             zip((src0, old.dst, old.rel), new)]
    src, dst, rel = new
    if len(src) and (max(src.max(), dst.max()) >= n or rel.max() >= num_rel):
      raise ValueError("an edge names a node or relation the graph lacks")
    key = (src.astype(np.int64) * n + dst) * num_rel + rel
    src, dst, rel = (a[_first_kept(key)] for a in (src, dst, rel))
    order = np.argsort(src, kind="stable")
    src, dst, rel = src[order], dst[order], rel[order]
    ptr = _row_ptr(src, n)
    once = _first_kept(src.astype(np.int64) * n + dst)  # one per neighbour
    return cls(ptr, dst.copy(), rel.copy(), _row_ptr(src[once], n),
               dst[once].copy(), rel[once].copy())


def _first_kept(key: np.ndarray) -> np.ndarray:
  """Positions of each key's first occurrence, in their original order."""
  _, first = np.unique(key, return_index=True)
  return np.sort(first)


def _row_ptr(src: np.ndarray, n: int) -> np.ndarray:
  ptr = np.zeros(n + 1, np.int64)
  np.cumsum(np.bincount(src, minlength=n), out=ptr[1:])
  return ptr


class Adjacency:
  """Read-only `kg.adjacency[i]` over the CSR arrays."""

  def __init__(self, e: CsrEdges):
    self.e = e

  def __len__(self) -> int:
    return len(self.e.ptr) - 1

  def __getitem__(self, i: int) -> list[tuple[int, int]]:
    a, b = self.e.ptr[i], self.e.ptr[i + 1]
    return list(zip(self.e.dst[a:b].tolist(), self.e.rel[a:b].tolist()))
