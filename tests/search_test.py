"""The streamed name-vector search (`evaluate` at UMLS scale): the same
gold ranks, ties and top-5 as the in-memory ranking on a 50k-name
dictionary, with a memory budget that forces many shards and query blocks,
in bfloat16, and with the queries split over two `jax.distributed`
processes that each encode their slice of the dictionary."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bali_jax.eval import linking, name_store, search
from tests.cli_runs import subprocess_env

NAMES, CONCEPTS, DIM, QUERIES = 50_000, 20_000, 32, 300


def dictionary(seed: int = 0):
  """Unit name vectors, (name, concept) pairs (every concept named, 5% of
  the names shared by a second concept: honest ties), queries near a gold
  concept's name, with a second gold id for some (composite mentions)."""
  rng = np.random.default_rng(seed)
  names = rng.standard_normal((NAMES, DIM)).astype(np.float32)
  names /= np.linalg.norm(names, axis=1, keepdims=True)
  owner = np.concatenate([np.arange(CONCEPTS),
                          rng.integers(0, CONCEPTS, NAMES - CONCEPTS)])
  shared = rng.choice(NAMES, NAMES // 20, replace=False)
  pair_name = np.concatenate([np.arange(NAMES), shared]).astype(np.int32)
  pair_concept = np.concatenate(
      [owner, rng.integers(0, CONCEPTS, len(shared))]).astype(np.int32)
  pick = rng.integers(0, NAMES, QUERIES)
  noise = rng.uniform(0.0, 1.5, (QUERIES, 1)).astype(np.float32)
  q = names[pick] + noise * rng.standard_normal((QUERIES, DIM)).astype(
      np.float32) / np.sqrt(DIM)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  gold = [(int(owner[n]),) if i % 7 else (int(owner[n]), int(i))
          for i, n in enumerate(pick)]
  return names, pair_name, pair_concept, q, gold


def _same(a, b):
  for x, y, what in zip(a, b, ("greater", "ties", "top-5")):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                  err_msg=what)


@pytest.fixture(scope="module")
def in_memory():
  names, pn, pc, q, gold = dictionary()
  return linking.gold_ranks(q, names, pn, pc, gold, CONCEPTS)


def test_streamed_ranks_equal_in_memory_over_many_shards(tmp_path,
                                                         in_memory):
  names, pn, pc, q, gold = dictionary()
  budget = search.parse_bytes("6MiB")
  p = search.plan(budget, NAMES, CONCEPTS, len(pn), DIM)
  store = name_store.from_array(str(tmp_path / "f32"), names, p.shard_rows)
  assert store.num_shards >= 8 and 1 < p.query_block < QUERIES, p
  assert p.estimate <= budget
  got = search.gold_ranks(q, store, pn, pc, gold, CONCEPTS, budget)
  _same(got, in_memory)
  g, t, top = in_memory
  assert (g > 0).mean() > 0.1 and (g == 0).mean() > 0.3  # not all trivial
  assert (t > 0).any()  # shared names tie their concepts
  # bfloat16 vectors: the in-memory ranking of the same rounded vectors
  bf = name_store.from_array(str(tmp_path / "bf16"), names, p.shard_rows,
                             dtype="bfloat16")
  assert os.path.getsize(bf.path(0)) < 0.6 * os.path.getsize(store.path(0))
  rounded = np.concatenate([bf.read(i) for i in range(bf.num_shards)
                            ]).astype(np.float32)
  assert 0 < np.abs(rounded - names).max() < 1e-2
  _same(search.gold_ranks(q, bf, pn, pc, gold, CONCEPTS, budget),
        linking.gold_ranks(q, rounded, pn, pc, gold, CONCEPTS))


def test_a_budget_below_one_query_block_names_the_minimum(tmp_path):
  with pytest.raises(ValueError, match=r"memory budget 1\.0 MiB is too "
                     r"small for one query block: at least 1\.[0-9] MiB "
                     r"\(1,[0-9,]+ bytes\) is needed for 100,000 concepts"):
    search.plan(2 ** 20, NAMES, 100_000, NAMES, DIM)
  minimum = search.plan(64 * 2 ** 20, NAMES, 100_000, NAMES, DIM)
  assert minimum.query_block >= 1
  for bad in ("lots", "4 GB of RAM", ""):
    with pytest.raises(ValueError, match="expected a size such as 4GiB"):
      search.parse_bytes(bad)
  assert search.parse_bytes("4GiB") == search.parse_bytes("4G") == 4 << 30
  assert search.parse_bytes("512MiB") == 512 << 20
  assert search.parse_bytes("1000") == 1000


WORKER = os.path.join(os.path.dirname(__file__), "search_worker.py")


@pytest.mark.slow(seconds=15)
def test_two_processes_encode_their_slices_and_rank_as_one(tmp_path,
                                                           in_memory):
  port = 21000 + os.getpid() % 20000
  out = tmp_path / "out"
  procs = [subprocess.Popen(
      [sys.executable, WORKER, f"127.0.0.1:{port}", str(i),
       str(tmp_path / "vectors"), str(out)], env=subprocess_env(devices=1),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  stats = [json.load(open(out / f"stats{i}.json")) for i in range(2)]
  n = [s["encoded"] for s in stats]
  assert sum(n) == NAMES and min(n) > 0  # each its slice, all encoded
  index = json.load(open(tmp_path / "vectors" / "index.json"))
  assert index["num_shards"] >= 8 and index["num_names"] == NAMES
  for i in range(2):  # both processes hold every query's result
    r = np.load(out / f"ranks{i}.npz")
    _same((r["greater"], r["ties"], r["top"]), in_memory)
