"""One of the two `jax.distributed` processes of search_test: encodes its
slice of the test dictionary into the shared store (the "encoder" looks the
vectors up), ranks its slice of the queries, gathers every result.

Usage: search_worker.py COORDINATOR PROCESS_ID VECTORS_DIR OUT_DIR
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402


def main(coordinator: str, pid: int, vectors: str, out: str) -> None:
  jax.distributed.initialize(coordinator, num_processes=2, process_id=pid)
  from bali_jax.eval import search
  from tests.search_test import CONCEPTS, DIM, dictionary
  names, pn, pc, q, gold = dictionary()
  encoded = []

  def encode(strings):  # the dictionary's name strings are "n<index>"
    idx = [int(s[1:]) for s in strings]
    encoded.extend(idx)
    return names[idx]
  budget = search.parse_bytes("6MiB")
  store, stats, _ = search.build_store(
      vectors, [f"n{i}" for i in range(len(names))], encode, DIM, CONCEPTS,
      len(pn), budget, num_queries=len(q))
  g, t, top = search.rank_queries(q, store, pn, pc, gold, CONCEPTS, budget)
  os.makedirs(out, exist_ok=True)
  np.savez(os.path.join(out, f"ranks{pid}.npz"), greater=g, ties=t, top=top)
  with open(os.path.join(out, f"stats{pid}.json"), "w") as f:
    json.dump({"encoded": len(encoded), **stats}, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
