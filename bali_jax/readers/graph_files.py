"""A knowledge graph as flat files that worker processes map, not unpickle.

Beam workers need the graph's concept index, names and adjacency. Pickled
as Python objects, a graph of UMLS size is gigabytes that every worker
context unpickles into its own heap. Written once here as .npy arrays
(`save`), it is read back by each worker with `np.load(mmap_mode="r")`
(`load`): the operating system shares the pages between the workers of a
machine, and a worker touches only the rows its shard samples.

Files (N concepts, M names, K index keys, E edges):
  concept_ids.npy   (N,) bytes, node order
  index_keys.npy    (K,) bytes, sorted; index_nodes.npy (K,) int32
  name_blob.npy     (bytes,) uint8: every name, UTF-8, one per line
  name_ends.npy     (M,) int64: end of each name in the blob
  name_ptr.npy      (N + 1,) int64: concept i's names are ptr[i]:ptr[i+1]
  linkable.npy      (N,) bool
  edges_*.npy       the CSR arrays (`graph_edges.CsrEdges`)
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from bali_jax import storage

_EDGE_FIELDS = ("ptr", "dst", "rel", "nbr_ptr", "nbr_dst", "nbr_rel")


class FlatNames:
  """`kg.names` read from the blob: names[i] is concept i's list."""

  def __init__(self, blob, ends, ptr):
    self.blob, self.ends, self.ptr = blob, ends, ptr

  def __len__(self) -> int:
    return len(self.ptr) - 1

  def __getitem__(self, i: int) -> list[str]:
    a, b = int(self.ptr[i]), int(self.ptr[i + 1])
    out = []
    start = int(self.ends[a - 1]) + 1 if a else 0
    for e in self.ends[a:b].tolist():
      out.append(self.blob[start:e].tobytes().decode("utf-8"))
      start = e + 1
    return out

  def __iter__(self):
    return (self[i] for i in range(len(self)))


class FlatIds:
  """`kg.concept_ids` from a bytes array."""

  def __init__(self, ids):
    self.ids = ids

  def __len__(self) -> int:
    return len(self.ids)

  def __getitem__(self, i: int) -> str:
    return self.ids[i].decode("utf-8")

  def __iter__(self):
    return (x.decode("utf-8") for x in self.ids)


class FlatIndex:
  """`kg.index` (concept id or alias -> node) by binary search."""

  def __init__(self, keys, nodes):
    self.keys, self.nodes = keys, nodes

  def get(self, key: str, default=None):
    k = key.encode("utf-8")
    if len(k) > self.keys.dtype.itemsize:
      return default
    j = int(np.searchsorted(self.keys, k))
    if j < len(self.keys) and self.keys[j] == k:
      return int(self.nodes[j])
    return default

  def __contains__(self, key: str) -> bool:
    return self.get(key) is not None

  def __getitem__(self, key: str) -> int:
    node = self.get(key)
    if node is None:
      raise KeyError(key)
    return node

  def __len__(self) -> int:
    return len(self.keys)


def _bytes_array(strings) -> np.ndarray:
  enc = [s.encode("utf-8") for s in strings]
  return np.array(enc, dtype=f"S{max((len(x) for x in enc), default=1)}")


def save(kg, directory: str) -> None:
  """Writes the graph's large parts under `directory` (local or URL)."""
  storage.makedirs(directory)
  flat = [n for names in kg.names for n in names]
  blob = np.frombuffer("\n".join(flat).encode("utf-8") + b"\n", np.uint8)
  ends = np.flatnonzero(blob == 10)
  ptr = np.zeros(len(kg) + 1, np.int64)
  np.cumsum([len(n) for n in kg.names], out=ptr[1:])
  keys = sorted(kg.index)
  e = kg.edge_arrays()
  arrays = {"concept_ids": _bytes_array(kg.concept_ids),
            "index_keys": _bytes_array(keys),
            "index_nodes": np.array([kg.index[k] for k in keys], np.int32),
            "name_blob": blob, "name_ends": ends, "name_ptr": ptr,
            "linkable": np.array(kg.linkable, bool),
            **{f"edges_{f}": getattr(e, f) for f in _EDGE_FIELDS}}
  for name, a in arrays.items():
    with tempfile.NamedTemporaryFile(suffix=".npy") as f:
      np.save(f, a)
      f.flush()
      storage.copy_file(f.name, storage.join(directory, f"{name}.npy"))


def load(directory: str) -> dict:
  """The saved arrays, memory-mapped (a URL is copied to local disk
  first: only local files map)."""
  if storage.is_url(directory):
    local = tempfile.mkdtemp(prefix="bali-graph-")
    storage.copy_tree(directory, local)
    directory = local
  arrays = {n[:-4]: np.load(os.path.join(directory, n), mmap_mode="r")
            for n in os.listdir(directory) if n.endswith(".npy")}
  return {"concept_ids": FlatIds(arrays["concept_ids"]),
          "index": FlatIndex(arrays["index_keys"], arrays["index_nodes"]),
          "names": FlatNames(arrays["name_blob"], arrays["name_ends"],
                             arrays["name_ptr"]),
          "linkable": arrays["linkable"],
          "edges": {f: arrays[f"edges_{f}"] for f in _EDGE_FIELDS}}


def mapped_fields() -> tuple[str, ...]:
  """The KnowledgeGraph attributes these files replace in a pickle."""
  return ("concept_ids", "index", "names", "linkable", "_csr", "_pending",
          "_name_sets")

