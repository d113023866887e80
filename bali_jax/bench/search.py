"""`python -m bali_jax bench-search`: `evaluate`'s name-vector search at
scale, and its agreement with the in-memory ranking.

Two modes:
  --random N    N unit random name vectors (--dim, --concepts, --queries),
                written shard by shard (never all in memory), then the
                streamed exact search timed within --memory-budget: the
                search alone, at UMLS's 10M names.
  --data DIR    a dataset's dictionary encoded with --model through the
                store (names/s), its held-out synonyms ranked streamed and
                in memory (every vector loaded back): how many queries get
                the same gold rank, ties and top-5, and for the others
                whether the scores differ by float32 round-off only.
Each reports wall seconds, peak RSS and bytes on disk (JSON with --out).
"""

from __future__ import annotations

import json
import resource
import shutil
import tempfile
import time

import numpy as np

from bali_jax import storage
from bali_jax.eval import linking, name_store, search


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _disk_bytes(directory: str) -> int:
  return sum(storage.file_size(storage.join(directory, f))
             for f in storage.listdir(directory))


def random_store(directory: str, n: int, dim: int, shard_rows: int,
                 dtype: str, seed: int = 0) -> name_store.NameStore:
  """n unit random vectors, generated and written one shard at a time."""
  rng = np.random.default_rng(seed)

  def encode(idx):
    v = rng.standard_normal((len(idx), dim), np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v
  store, _ = name_store.write(directory, range(n), encode, dim, shard_rows,
                              dtype)
  return store


def bench_random(args, directory: str) -> dict:
  rng = np.random.default_rng(1)
  n, c = args.random, args.concepts or max(1, args.random * 10 // 29)
  pair_concept = np.concatenate([np.arange(min(c, n)), rng.integers(
      0, c, max(0, n - c))]).astype(np.int32)
  pair_name = np.arange(n, dtype=np.int32)
  p = search.plan(args.budget, n, c, n, args.dim, args.vector_dtype,
                  args.queries)
  t0 = time.perf_counter()
  store = random_store(directory, n, args.dim, p.shard_rows,
                       args.vector_dtype)
  write_s = time.perf_counter() - t0
  rss_write = _peak_rss_mib()
  q = rng.standard_normal((args.queries, args.dim), np.float32)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  gold = [(int(g),) for g in rng.integers(0, c, args.queries)]
  t0 = time.perf_counter()
  g, _, _ = search.gold_ranks(q, store, pair_name, pair_concept, gold, c,
                              args.budget)
  search_s = time.perf_counter() - t0
  return {"mode": "random", "names": n, "concepts": c, "dim": args.dim,
          "queries": args.queries, "plan": p.__dict__,
          "store": store.to_dict(), "disk_bytes": _disk_bytes(directory),
          "write_s": round(write_s, 1), "search_s": round(search_s, 1),
          "peak_rss_mib_after_write": round(rss_write),
          "passes_over_store": -(-args.queries // p.query_block),
          "query_name_pairs_per_s": round(args.queries * n / search_s),
          "median_rank": float(np.median(g) + 1)}


def _compare(a, b, q, names, d, gold, tol: float = 1e-6) -> dict:
  """Queries whose (greater, ties, top-5) differ between two rankings, and
  whether float32 round-off explains each: its concept scores recomputed
  in float64, the top-5 lists differ only between concepts within `tol`
  of each other and the gold rank only by concepts within `tol` of the
  gold score."""
  diff = np.flatnonzero((a[0] != b[0]) | (a[1] != b[1]) |
                        np.any(a[2] != b[2], axis=1))
  worst, unexplained = 0.0, []
  for i in diff:
    sim = names.astype(np.float64) @ q[i].astype(np.float64)
    score = np.full(d.num_concepts, -np.inf)
    np.maximum.at(score, d.pair_concept, sim[d.pair_name])
    top_gap = float(np.max(np.abs(score[a[2][i]] - score[b[2][i]])))
    golds = [g for g in gold[i] if g >= 0]
    best = np.max(score[golds])
    other = np.ones(d.num_concepts, bool)
    other[golds] = False
    near = int(np.sum(other & (np.abs(score - best) <= tol)))
    shift = max(abs(int(a[0][i]) - int(b[0][i])),
                abs(int(a[1][i]) - int(b[1][i])))
    worst = max(worst, top_gap)
    if top_gap > tol or shift > near:
      unexplained.append(int(i))
  return {"queries": len(q), "identical": int(len(q) - len(diff)),
          "differing": int(len(diff)), "tolerance": tol,
          "differing_beyond_round_off": len(unexplained),
          "first_beyond_round_off": unexplained[:10],
          "max_top5_score_gap_among_differing": worst}


def bench_data(args, directory: str) -> dict:
  from bali_jax.eval import dictionary as dictionary_lib
  from bali_jax.eval import queries as queries_lib
  from bali_jax.eval.models import load
  from bali_jax.eval.report import model_encoder
  torch_dir = _torch_model_dir(args.model) if args.compare_torch else None
  d = dictionary_lib.from_dataset(args.data)
  qs = queries_lib.heldout_synonyms(args.data, d, args.queries or None)
  m = load(args.model)
  enc = model_encoder(m)
  store, stats, p = search.build_store(
      directory, d.names, enc.encode_strings, enc.dim, d.num_concepts,
      len(d.pair_name), args.budget, args.vector_dtype, len(qs.queries))
  q = enc.encode_strings([x.text for x in qs.queries], desc="queries")
  gold = [x.gold for x in qs.queries]
  t0 = time.perf_counter()
  streamed = search.gold_ranks(q, store, d.pair_name, d.pair_concept, gold,
                               d.num_concepts, args.budget)
  search_s = time.perf_counter() - t0
  out = {"mode": "data", "data": args.data, "model": m.label,
         "names": len(d.names), "concepts": d.num_concepts,
         "queries": len(q), "plan": p.__dict__, "store": store.to_dict(),
         "disk_bytes": _disk_bytes(directory), "encoding": stats,
         "search_s": round(search_s, 2)}
  if args.compare or args.compare_torch:
    names = np.concatenate([store.read(i) for i in range(
        store.num_shards)]).astype(np.float32)
  if args.compare:
    mem = linking.gold_ranks(q, names, d.pair_name, d.pair_concept, gold,
                             d.num_concepts)
    out["in_memory_agreement"] = _compare(streamed, mem, q, names, d, gold)
  if args.compare_torch:
    out["torch_encoding"] = _torch_encoding(torch_dir, m, enc, d.names,
                                            names)
  return out


def _torch_model_dir(source: str) -> str:
  from bali_jax import open_data
  from bali_jax.eval.models import is_hf_dir
  model_dir = open_data.resolve_model_dir(source)
  if not is_hf_dir(model_dir):
    raise ValueError(f"--compare-torch needs --model as a Hugging Face "
                     f"directory or `starter` ({source} is not: export it "
                     "with export-hf first)")
  return model_dir


def _torch_encoding(model_dir: str, m, enc, strings, ours) -> dict:
  """The dictionary encoded by PyTorch transformers as ours is encoded
  (bench/torch_names.py): its names/s and how far its vectors are."""
  from bali_jax.bench.torch_names import encode_names
  # the tokens of one of our name batches
  budget = enc.rows_per_call(enc.name_shape) * enc.name_shape.row_len
  theirs, stats = encode_names(model_dir, strings, m.pooling,
                               m.max_name_tokens, budget)
  return {**stats, "tokens_per_batch": budget,
          "max_abs_diff_vs_ours": float(np.abs(theirs - ours).max())}


def main(args) -> int:
  if bool(args.random) == bool(args.data):
    raise ValueError("bench-search: give --random N or --data DIR (one)")
  args.budget = search.parse_bytes(args.memory_budget)
  start_rss = _peak_rss_mib()  # the interpreter, jax and the CLI
  directory = args.vectors_dir or tempfile.mkdtemp(prefix="bali-bench-")
  t0 = time.perf_counter()
  try:
    r = bench_random(args, directory) if args.random else \
        bench_data(args, directory)
  finally:
    if not args.vectors_dir:
      shutil.rmtree(directory, ignore_errors=True)
  r.update(wall_s=round(time.perf_counter() - t0, 1),
           rss_mib_at_start=round(start_rss),
           peak_rss_mib=round(_peak_rss_mib()),
           memory_budget=args.memory_budget)
  text = json.dumps(r, indent=1)
  print(text)
  if args.out:
    storage.write_text(args.out, text)
  return 0
