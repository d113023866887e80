"""A cache of dictionary name vectors for models that do not change.

Every `evaluate` of a run against its starting BERT (the main job's
before/after table, an ablation's baseline, each seed of a sweep) encodes
the same dictionary with the same starting weights again: minutes for the
open default's 55k names or MeSH's, hours for UMLS. Those vectors are kept
under one directory, keyed by a hash of everything that determines them:
the weights (every parameter's path, dtype, shape and bytes), the
tokenizer, the pooling and truncation, the stored dtype, the shard size
and the names in order. Anything else changed is another key, so a stale
entry cannot be read; a run's own checkpoints are not cached (they change
with every step). An entry is complete when its `index.json` exists
(`name_store.write` writes it last), so an interrupted write is redone.

Location: $BALI_JAX_CACHE, else $XDG_CACHE_HOME/bali_jax, else
~/.cache/bali_jax; entries under `name_vectors/KEY/`. `evaluate --no-cache`
skips it; deleting the directory is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np

from bali_jax import storage

FORMAT = 1  # bumped when what a key covers changes


def cache_root() -> str:
  """The cache directory (see the module docstring)."""
  if os.environ.get("BALI_JAX_CACHE"):
    return os.environ["BALI_JAX_CACHE"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "bali_jax")


def _tokenizer_bytes(tokenizer) -> bytes:
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is not None:  # the whole fast tokenizer: vocab, rules
    return backend.to_str().encode()
  return json.dumps(sorted(tokenizer.get_vocab().items())).encode()


def key(enc, names: list[str], dtype: str, shard_rows: int) -> str:
  """The entry name of `enc`'s vectors of `names` (hex, 32 characters)."""
  h = hashlib.sha256()
  h.update(json.dumps({
      "format": FORMAT, "pooling": enc.pooling,
      "max_name_tokens": enc.max_name_tokens, "dim": enc.dim,
      "dtype": dtype, "shard_rows": shard_rows}, sort_keys=True).encode())
  leaves, _ = jax.tree_util.tree_flatten_with_path(enc.params)
  for path, leaf in leaves:
    x = np.asarray(jax.device_get(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{x.dtype}|{x.shape}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
  h.update(_tokenizer_bytes(enc.tokenizer))
  h.update(len(names).to_bytes(8, "little"))
  for name in names:
    h.update(name.encode())
    h.update(b"\0")
  return h.hexdigest()[:32]


def entry(root: str, k: str) -> str:
  return storage.join(root, "name_vectors", k)

