"""`python -m bali_jax evaluate`: zero-shot entity linking, models side by side.

For each model: encode every unique dictionary name once, then each query
set in two representations:
  string    the mention string encoded alone (SapBERT protocol), pooled as
            training pools concept names;
  sentence  the mention pooled from its sentence's encoding (BALI's text
            side), where the sentence is known.
Names are always encoded alone. The report is a markdown table (stdout) and
a JSON file; a run directory also keeps its own rows in `eval_el.json`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import tempfile
import time

import jax
import numpy as np

from bali_jax import storage
from bali_jax.eval import dictionary as dictionary_lib
from bali_jax.eval import intervals, linking, queries as queries_lib, search
from bali_jax.eval import name_store, vector_cache
from bali_jax.eval.encoder import Encoder

DEFAULT_BUDGET = "4GiB"


@dataclasses.dataclass(frozen=True)
class SearchOptions:
  """Where the dictionary's name vectors go and how they are searched
  (search.py): `directory` None is a temporary local directory (one
  process), or the cache entry; `budget` in bytes; `dtype` float32 or
  bfloat16; `cache` the vector cache's root (vector_cache.py) for models
  that are not training runs, None for none."""
  directory: str | None = None
  budget: int = search.parse_bytes(DEFAULT_BUDGET)
  dtype: str = "float32"
  cache: str | None = None


def load_dictionary(data_dir: str | None, kg: str | None,
                    restrict: str | None):
  if bool(data_dir) == bool(kg):
    raise ValueError("give exactly one of --data DIR (a built dataset) or "
                     "--kg open-default|FILE.obo|FILE.json.zst")
  d = dictionary_lib.from_dataset(data_dir) if data_dir else \
      dictionary_lib.from_kg(kg)
  return d.restrict(restrict) if restrict else d


NOTHING_TO_EVALUATE = ("nothing to evaluate: give --data DIR (held-out "
                       "synonyms, test mentions) and/or --corpus FILE, or "
                       "--benchmark")


def _check_queries(data_dir, corpus, corpus_format) -> None:
  if corpus and corpus_format not in ("pubtator", "bern2", "bioc"):
    raise ValueError("--corpus needs --corpus-format pubtator|bern2|bioc")
  if not data_dir and not corpus:
    raise ValueError(NOTHING_TO_EVALUATE)


def load_queries(d, data_dir=None, corpus=None, corpus_format=None,
                 kinds=("heldout_synonyms", "test_mentions"),
                 limit: int | None = None, strict: bool = False):
  _check_queries(data_dir, corpus, corpus_format)
  sets = []
  if data_dir:
    if "heldout_synonyms" in kinds:
      sets.append(queries_lib.heldout_synonyms(data_dir, d, limit))
    if "test_mentions" in kinds and storage.exists(
        storage.join(data_dir, "test_mentions.jsonl")):
      sets.append(queries_lib.test_mentions(data_dir, d))
  if corpus:
    sets.append(queries_lib.corpus(corpus, corpus_format, d, strict))
  if not sets:
    raise ValueError(NOTHING_TO_EVALUATE)
  return sets


def model_encoder(m, progress: bool = True) -> Encoder:
  """The encoder of a loaded model (`models.load`), pooled and truncated
  as that model was trained."""
  return Encoder(m.config, m.params, m.tokenizer, pooling=m.pooling,
                 max_name_tokens=m.max_name_tokens, seq_len=m.seq_len,
                 progress=progress)


@contextlib.contextmanager
def dictionary_store(enc: Encoder, d, opts: SearchOptions,
                     num_queries: int):
  """Encodes every unique dictionary name into shards (each process its
  slice), or finds them in the cache; yields (store, info for the
  report). A temporary directory is removed afterwards."""
  p = search.plan(opts.budget, len(d.names), d.num_concepts,
                  len(d.pair_name), enc.dim, opts.dtype, num_queries)
  directory, tmp, cached = opts.directory, None, None
  if directory is None and opts.cache and jax.process_count() == 1:
    directory = vector_cache.entry(opts.cache, vector_cache.key(
        enc, d.names, opts.dtype, p.shard_rows))
    cached = name_store.load(directory)
  if directory is None:
    if jax.process_count() > 1:
      raise ValueError("with several processes the name vectors need a "
                       "directory every process sees (--vectors-dir)")
    directory = tmp = tempfile.mkdtemp(prefix="bali-name-vectors-")
  try:
    if cached is not None:  # the same weights, tokenizer and names
      store, stats = cached, {"names": 0, "seconds": 0.0, "cached": True}
    else:
      store, stats, _ = search.build_store(  # the plan `p` above
          directory, d.names, lambda s: enc.encode_strings(
              s, desc="dictionary names"), enc.dim, d.num_concepts,
          len(d.pair_name), opts.budget, opts.dtype, num_queries)
    yield store, {"vectors": {**store.to_dict(), "directory": None if tmp
                              else directory},
                  "encoding": stats, "memory_budget": p.budget,
                  "query_block": p.query_block,
                  "memory_estimate": p.estimate,
                  "cache": None if opts.directory or tmp else {
                      "directory": directory, "hit": cached is not None}}
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)


def _ranks(store, d, opts, qv, gold):
  return search.rank_queries(qv, store, d.pair_name, d.pair_concept, gold,
                             d.num_concepts, opts.budget)[:2]


PER_QUERY = "_per_query"  # a row's per-query ranks, until the intervals


def _per_query(qs, ids, greater, ties) -> dict:
  """What the intervals need of a row: which queries (indices into the
  set), their expected acc@k and reciprocal ranks, hard flags and
  bootstrap groups."""
  ids = np.asarray(ids, np.int64)
  return {"ids": ids, "values": linking.per_query(greater, ties),
          "hard": np.array([qs.queries[i].hard for i in ids], bool),
          "group": [qs.queries[i].group or f"query {i}" for i in ids]}


def add_intervals(results: list[dict], resamples: int, seed: int) -> None:
  """Paired bootstrap 95% intervals on every row's acc@k / MRR (hard too)
  and, against the first model of the same queries and representation, on
  the differences, with McNemar's exact p on acc@1 (intervals.py); drops
  the per-query arrays."""
  first = {}
  for r in results:
    pq = r.pop(PER_QUERY)
    if not resamples:
      continue
    vals = pq["values"]
    rs = intervals.Resampler(pq["group"], resamples, seed)
    for k, v in vals.items():
      r[f"{k}_ci"] = rs.interval(v)
      r[f"hard_{k}_ci"] = rs.interval(v, pq["hard"])
    key = (r["queries"], r["representation"])
    if key not in first:
      first[key] = (pq, vals)
      continue
    r.update(_paired(first[key], pq, vals, resamples, seed))


def _paired(base, pq, vals, resamples: int, seed: int) -> dict:
  """Δ vs the first model on the queries both ranked (a model with
  another tokenizer may cut other mentions off)."""
  bpq, bvals = base
  common, i, j = np.intersect1d(pq["ids"], bpq["ids"], return_indices=True)
  rs = intervals.Resampler([pq["group"][k] for k in i], resamples, seed)
  out = {"paired_n": int(len(common))}
  for k, v in vals.items():
    diff = v[i] - bvals[k][j]
    out[f"delta_{k}"] = float(diff.mean()) if len(diff) else None
    out[f"delta_{k}_ci"] = rs.interval(diff)
  ci = out["delta_acc@1_ci"]
  out["delta_acc@1_measurable"] = bool(ci and (ci[0] > 0 or ci[1] < 0))
  outcome = lambda v: intervals.top1_outcomes(v, seed)
  out["mcnemar_acc@1"] = intervals.mcnemar_exact(
      outcome(vals["acc@1"][i]), outcome(bvals["acc@1"][j]))
  return out


def aggregate_seeds(results: list[dict], label: str,
                    members: list[str]) -> list[dict]:
  """Rows for runs that differ only in seed (`--models-from`): per query
  set and representation, each metric's mean and sd over the runs, and
  the per-query values averaged over them, from which the pooled interval
  and the Δ to the first model come (`add_intervals`)."""
  out = []
  mine = [r for r in results if r["model"] in members]
  for key in dict.fromkeys((r["queries"], r["representation"])
                           for r in mine):
    rows = [r for r in mine if (r["queries"], r["representation"]) == key]
    common = functools.reduce(np.intersect1d,
                              [r[PER_QUERY]["ids"] for r in rows])
    picks = []
    for r in rows:
      pos = {int(i): k for k, i in enumerate(r[PER_QUERY]["ids"])}
      picks.append((r[PER_QUERY], np.array([pos[int(i)] for i in common],
                                           np.int64)))
    pq0, sel0 = picks[0]
    values = {k: np.mean([pq["values"][k][sel] for pq, sel in picks], 0)
              for k in pq0["values"]}
    row = {"model": f"{label} ({len(rows)} seeds)", "queries": key[0],
           "representation": key[1], "seeds": [r["model"] for r in rows],
           "n": int(len(common)), "hard_n": int(pq0["hard"][sel0].sum())}
    for k in ("acc@1", "acc@5", "mrr", "hard_acc@1", "hard_acc@5",
              "hard_mrr"):
      xs = [r[k] for r in rows if r[k] is not None]
      row[k] = float(np.mean(xs)) if xs else None
      row[f"{k}_sd"] = float(np.std(xs, ddof=1)) if len(xs) > 1 else None
    row[PER_QUERY] = {"ids": common, "values": values,
                      "hard": pq0["hard"][sel0],
                      "group": [pq0["group"][i] for i in sel0]}
    out.append(row)
  return out


def score_model(enc: Encoder, d, sets, store,
                opts: SearchOptions = SearchOptions()) -> list[dict]:
  """Rows of results for one encoder over every query set, ranked against
  the dictionary's name vectors in `store`."""
  rows = []
  for qs in sets:
    if not qs.queries:
      continue
    t0 = time.perf_counter()
    hard = np.array([q.hard for q in qs.queries])
    gold = [q.gold for q in qs.queries]
    uniq = list(dict.fromkeys(q.text for q in qs.queries))
    vecs = enc.encode_strings(uniq, desc=f"{qs.name} strings")
    pos = {t: i for i, t in enumerate(uniq)}
    qv = vecs[[pos[q.text] for q in qs.queries]]
    g, t = _ranks(store, d, opts, qv, gold)
    rows.append({"queries": qs.name, "representation": "string",
                 **linking.metrics(g, t, hard),
                 "seconds": round(time.perf_counter() - t0, 2),
                 PER_QUERY: _per_query(qs, np.arange(len(gold)), g, t)})
    with_sent = [i for i, q in enumerate(qs.queries) if q.sentence]
    if not with_sent:
      continue
    t0 = time.perf_counter()
    by_sentence = collections.defaultdict(list)
    for i in with_sent:
      by_sentence[qs.queries[i].sentence].append(i)
    sentences = list(by_sentence)
    order = [i for s in sentences for i in by_sentence[s]]
    vecs, ok = enc.encode_mentions(
        sentences, [[qs.queries[i].span for i in by_sentence[s]]
                    for s in sentences], desc=f"{qs.name} sentences")
    keep = np.asarray(order)[ok]
    g, t = _ranks(store, d, opts, vecs[ok], [gold[i] for i in keep])
    row = {"queries": qs.name, "representation": "sentence",
           **linking.metrics(g, t, hard[keep]),
           "seconds": round(time.perf_counter() - t0, 2),
           PER_QUERY: _per_query(qs, keep, g, t)}
    if (~ok).any():
      row["truncated_out"] = int((~ok).sum())
    rows.append(row)
  return rows


def _model_options(opts: SearchOptions, m) -> SearchOptions:
  """Each model's vectors in their own subdirectory of --vectors-dir; a
  training run's never in the cache (its weights change every step)."""
  if m.run_dir:
    opts = dataclasses.replace(opts, cache=None)
  if opts.directory is None:
    return opts
  label = m.label
  return dataclasses.replace(opts, directory=storage.join(
      opts.directory, re.sub(r"[^A-Za-z0-9_.@-]+", "_", label)))


def evaluate(models: list[str], *, data_dir=None, kg=None, corpus=None,
             corpus_format=None, restrict=None, limit=None, strict=False,
             out=None, progress=True,
             search_options: SearchOptions = SearchOptions(),
             resamples: int = intervals.DEFAULT_RESAMPLES,
             seed: int = 0, seed_groups: dict | None = None,
             benchmark: str | None = None, split: str = "test") -> dict:
  """Evaluates each model; returns the report (and writes it)."""
  from bali_jax.eval.models import check_source, load
  t0 = time.time()
  if benchmark and (data_dir or kg or corpus):
    raise ValueError("--benchmark brings its own dictionary and queries: "
                     "give it without --data, --kg or --corpus")
  if not benchmark:
    _check_queries(data_dir, corpus, corpus_format)  # before the slow parts
  seed_groups = seed_groups or {}
  models = list(models) + [s for g in seed_groups.values() for s in g]
  for src in models:
    check_source(src)
  if benchmark:
    from bali_jax.eval import benchmarks
    d, sets = benchmarks.load(benchmark, split, strict)
  else:
    d = load_dictionary(data_dir, kg, restrict)
    sets = load_queries(d, data_dir, corpus, corpus_format, limit=limit,
                        strict=strict)
  report = {"dictionary": d.stats(),
            "query_sets": [qs.summary() for qs in sets],
            "tie_breaking": "expected value under uniform random ties",
            "models": [], "results": []}
  label_of = {}
  for src in models:
    t1 = time.time()
    m = load(src)
    label_of[src] = m.label
    enc = model_encoder(m, progress)
    opts = _model_options(search_options, m)
    with dictionary_store(enc, d, opts, max(len(qs.queries)
                                            for qs in sets)) as (store, si):
      rows = score_model(enc, d, sets, store, opts)
    info = {"label": m.label, "source": m.source, "step": m.step,
            "pooling": m.pooling, "seconds": round(time.time() - t1, 1),
            "search": si}
    report["models"].append(info)
    report["results"] += [{"model": m.label, **r} for r in rows]
    if m.run_dir and m.latest:  # its own rows, with their intervals
      own = [{"model": m.label, **r} for r in rows]
      add_intervals(own, resamples, seed)
      _write_json(os.path.join(m.run_dir, "eval_el.json"),
                  {**report, "models": [info], "results": own})
  for label, srcs in seed_groups.items():
    report["results"] += aggregate_seeds(report["results"], label,
                                         [label_of[x] for x in srcs])
  add_intervals(report["results"], resamples, seed)
  report["intervals"] = {
      "resamples": resamples, "seed": seed, "level": 0.95,
      "unit": "documents for corpora and test mentions, queries for "
              "synonym sets (paired across models)",
      "test": "McNemar exact on acc@1 vs the first model"}
  report["seconds"] = round(time.time() - t0, 1)
  if out:
    _write_json(out, report)
  return report


def _write_json(path: str, obj) -> None:
  storage.write_text(path, json.dumps(obj, indent=2))


def _pct(x) -> str:
  return "-" if x is None else f"{100 * x:.1f}"


def _frac(x) -> str:
  return "-" if x is None else f"{x:.3f}"


def to_markdown(report: dict) -> str:
  d = report["dictionary"]
  lines = [f"Dictionary: {d['source']}: {d['concepts_with_names']:,} "
           f"concepts with names, {d['unique_names']:,} unique names.", ""]
  for qs in report["query_sets"]:
    skipped = ", ".join(f"{k} {v['count']}" for k, v in
                        qs["skipped"].items()) or "none"
    lines.append(f"- {qs['name']}: {qs['queries']:,} queries "
                 f"({qs['hard']:,} hard, {qs['with_sentence']:,} with a "
                 f"sentence); skipped: {skipped}")
  lines += ["", "| queries | repr. | model | n | acc@1 | Δacc@1 | p | "
            "acc@5 | MRR | hard n | hard acc@1 | hard acc@5 | hard MRR |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  keys = list(dict.fromkeys((r["queries"], r["representation"])
                            for r in report["results"]))
  for key in keys:
    rows = [r for r in report["results"]
            if (r["queries"], r["representation"]) == key]
    for r in rows:
      lines.append(
          f"| {r['queries']} | {r['representation']} | {r['model']} | "
          f"{r['n']} | {_ci(r, 'acc@1')} | {_delta(r)} | {_p(r)} | "
          f"{_ci(r, 'acc@5')} | {_frac(r['mrr'])} | {r['hard_n']} | "
          f"{_ci(r, 'hard_acc@1')} | {_pct(r['hard_acc@5'])} | "
          f"{_frac(r['hard_mrr'])} |")
  lines += ["", "acc@k in %, MRR as a fraction; [brackets]: 95% bootstrap "
            "interval; Δ in points vs the first model on the same queries "
            "(paired interval; \"n.s.\": it contains 0, no measurable "
            "change); p: McNemar exact on acc@1; ties count in expectation "
            "(uniform random tie-breaking)."]
  return "\n".join(lines)


def _ci(r: dict, key: str) -> str:
  ci, sd = r.get(f"{key}_ci"), r.get(f"{key}_sd")
  text = _pct(r[key])
  if r[key] is not None and sd is not None:  # runs over seeds: mean ± sd
    text += f" ± {100 * sd:.1f}"
  if r[key] is None or not ci:
    return text
  return f"{text} [{_pct(ci[0])}, {_pct(ci[1])}]"


def _delta(r: dict) -> str:
  if r.get("delta_acc@1") is None:
    return ""
  d, ci = 100 * r["delta_acc@1"], r.get("delta_acc@1_ci")
  if not ci:
    return f"{d:+.1f}"
  tag = "" if r["delta_acc@1_measurable"] else " n.s."
  return f"{d:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]{tag}"


def _p(r: dict) -> str:
  m = r.get("mcnemar_acc@1")
  return "" if not m else f"{m['p_value']:.3g}"
