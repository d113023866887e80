"""Dictionary name vectors on disk, in shards: what `evaluate` searches.

A UMLS-size dictionary has ~10M unique names; at 768 dimensions their
float32 vectors take 30 GB, more than a host should hold next to a model.
So the vectors are written once, in fixed-size shards (`shard-00000.npy`,
...), float32 or bfloat16 (stored as its raw 16 bits), and the search
(`search.py`) streams them back a shard at a time (memory-mapped when
local).

With several processes, process p encodes shards p, p + P, p + 2P, ...
(its slice of the dictionary), into a directory they all see (a shared
file system or a bucket, as for checkpoints). Every file is written
atomically; `index.json`, written last by process 0 after every shard
exists, says what the directory holds.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time

import ml_dtypes
import numpy as np

from bali_jax import storage

DTYPES = {"float32": 4, "bfloat16": 2}  # bytes per stored value


@dataclasses.dataclass(frozen=True)
class NameStore:
  """A directory of name-vector shards (unit vectors, in name order).

  Attributes:
    directory: where the shards are.
    num_names, dim: the vectors' shape, all shards together.
    shard_rows: names per shard (the last shard holds the rest).
    dtype: "float32" or "bfloat16", as stored.
  """
  directory: str
  num_names: int
  dim: int
  shard_rows: int
  dtype: str

  @property
  def num_shards(self) -> int:
    return -(-self.num_names // self.shard_rows)

  def bounds(self, i: int) -> tuple[int, int]:
    """[lo, hi) of the names in shard i."""
    lo = i * self.shard_rows
    return lo, min(lo + self.shard_rows, self.num_names)

  def path(self, i: int) -> str:
    return storage.join(self.directory, f"shard-{i:05d}.npy")

  def read(self, i: int) -> np.ndarray:
    """Shard i as stored, float32 or bfloat16 (an ml_dtypes view of the
    raw bits: the search casts it on the device, 10x faster than NumPy),
    (rows, dim); memory-mapped where the directory is local."""
    if storage.is_url(self.directory):
      with storage.open_file(self.path(i), "rb") as f:
        raw = np.load(io.BytesIO(f.read()))
    else:
      raw = np.load(self.path(i), mmap_mode="r")
    lo, hi = self.bounds(i)
    if raw.shape != (hi - lo, self.dim):
      raise ValueError(f"{storage.display(self.path(i))}: shape {raw.shape},"
                       f" expected {(hi - lo, self.dim)}")
    if self.dtype == "bfloat16":
      return raw.view(ml_dtypes.bfloat16)
    return raw

  def to_dict(self) -> dict:
    return {"num_names": self.num_names, "dim": self.dim,
            "shard_rows": self.shard_rows, "dtype": self.dtype,
            "num_shards": self.num_shards}


def _save(path: str, array: np.ndarray) -> None:
  """np.save, atomically, without a second copy of the shard in memory."""
  with storage.atomic_write(path) as f:
    np.save(f, array, allow_pickle=False)


def _stored(vectors: np.ndarray, dtype: str) -> np.ndarray:
  if dtype == "bfloat16":  # round to nearest even, kept as raw bits
    return np.asarray(vectors, np.float32).astype(
        ml_dtypes.bfloat16).view(np.uint16)
  return np.asarray(vectors, np.float32)


def write(directory: str, names: list[str], encode, dim: int,
          shard_rows: int, dtype: str = "float32", process_index: int = 0,
          process_count: int = 1, barrier=None) -> tuple[NameStore, dict]:
  """Encodes this process's shards of `names` and writes them.

  Args:
    encode: list of strings -> (n, dim) unit vectors (an `Encoder`'s
      `encode_strings`, which encodes a shard in bounded chunks).
    barrier: called once every shard of this process is written (with
      several processes: a global barrier, so that all shards exist before
      anyone reads them or `index.json` is written).

  Returns:
    The store, and timings {"names": this process's names, "seconds":
    encoding and writing, "names_per_s"}.
  """
  if dtype not in DTYPES:
    raise ValueError(f"vector dtype {dtype!r}; expected one of "
                     f"{sorted(DTYPES)}")
  store = NameStore(directory, len(names), dim, max(1, shard_rows), dtype)
  storage.makedirs(directory)
  t0, mine = time.perf_counter(), 0
  for i in range(process_index, store.num_shards, process_count):
    lo, hi = store.bounds(i)
    # the encoder bounds its own working memory (encoder.ENCODE_CHUNK);
    # the shard's vectors are what the budget sized
    _save(store.path(i), _stored(encode(names[lo:hi]), dtype))
    mine += hi - lo
  seconds = time.perf_counter() - t0
  if barrier is not None:
    barrier()
  if process_index == 0:
    storage.write_text(storage.join(directory, "index.json"),
                       json.dumps(store.to_dict(), indent=1))
  return store, {"names": mine, "seconds": round(seconds, 3),
                 "names_per_s": round(mine / max(seconds, 1e-9), 1)}


def load(directory: str) -> NameStore | None:
  """The complete store in `directory` (its `index.json`, written last),
  or None: absent or unfinished."""
  index = storage.join(directory, "index.json")
  if not storage.exists(index):
    return None
  meta = json.loads(storage.read_text(index))
  return NameStore(directory, meta["num_names"], meta["dim"],
                   meta["shard_rows"], meta["dtype"])


def from_array(directory: str, vectors: np.ndarray, shard_rows: int,
               dtype: str = "float32") -> NameStore:
  """A store of vectors already computed (tests, benchmarks)."""
  # the "names" are their own row numbers: a shard's slice of them is a
  # range, and its "encoding" the same rows of `vectors`
  store, _ = write(directory, range(len(vectors)),
                   lambda rows: vectors[rows.start:rows.stop],
                   vectors.shape[1], shard_rows, dtype)
  return store
