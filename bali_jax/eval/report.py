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
from bali_jax.eval import linking, queries as queries_lib, search
from bali_jax.eval.encoder import Encoder

DEFAULT_BUDGET = "4GiB"


@dataclasses.dataclass(frozen=True)
class SearchOptions:
  """Where the dictionary's name vectors go and how they are searched
  (search.py): `directory` None is a temporary local directory (one
  process); `budget` in bytes; `dtype` float32 or bfloat16."""
  directory: str | None = None
  budget: int = search.parse_bytes(DEFAULT_BUDGET)
  dtype: str = "float32"


def load_dictionary(data_dir: str | None, kg: str | None,
                    restrict: str | None):
  if bool(data_dir) == bool(kg):
    raise ValueError("give exactly one of --data DIR (a built dataset) or "
                     "--kg open-default|FILE.obo|FILE.json.zst")
  d = dictionary_lib.from_dataset(data_dir) if data_dir else \
      dictionary_lib.from_kg(kg)
  return d.restrict(restrict) if restrict else d


NOTHING_TO_EVALUATE = ("nothing to evaluate: give --data DIR (held-out "
                       "synonyms, test mentions) and/or --corpus FILE")


def _check_queries(data_dir, corpus, corpus_format) -> None:
  if corpus and corpus_format not in ("pubtator", "bern2"):
    raise ValueError("--corpus needs --corpus-format pubtator|bern2")
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


@contextlib.contextmanager
def dictionary_store(enc: Encoder, d, opts: SearchOptions,
                     num_queries: int):
  """Encodes every unique dictionary name into shards (each process its
  slice); yields (store, info for the report). A temporary directory is
  removed afterwards."""
  directory, tmp = opts.directory, None
  if directory is None:
    if jax.process_count() > 1:
      raise ValueError("with several processes the name vectors need a "
                       "directory every process sees (--vectors-dir)")
    directory = tmp = tempfile.mkdtemp(prefix="bali-name-vectors-")
  try:
    store, stats, p = search.build_store(
        directory, d.names, lambda s: enc.encode_strings(
            s, desc="dictionary names"), enc.dim, d.num_concepts,
        len(d.pair_name), opts.budget, opts.dtype, num_queries)
    yield store, {"vectors": {**store.to_dict(), "directory": None if tmp
                              else directory},
                  "encoding": stats, "memory_budget": p.budget,
                  "query_block": p.query_block,
                  "memory_estimate": p.estimate}
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)


def _ranks(store, d, opts, qv, gold):
  return search.rank_queries(qv, store, d.pair_name, d.pair_concept, gold,
                             d.num_concepts, opts.budget)[:2]


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
                 "seconds": round(time.perf_counter() - t0, 2)})
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
           "seconds": round(time.perf_counter() - t0, 2)}
    if (~ok).any():
      row["truncated_out"] = int((~ok).sum())
    rows.append(row)
  return rows


def _model_options(opts: SearchOptions, label: str) -> SearchOptions:
  """Each model's vectors in their own subdirectory of --vectors-dir."""
  if opts.directory is None:
    return opts
  return dataclasses.replace(opts, directory=storage.join(
      opts.directory, re.sub(r"[^A-Za-z0-9_.@-]+", "_", label)))


def evaluate(models: list[str], *, data_dir=None, kg=None, corpus=None,
             corpus_format=None, restrict=None, limit=None, strict=False,
             out=None, progress=True,
             search_options: SearchOptions = SearchOptions()) -> dict:
  """Evaluates each model; returns the report (and writes it)."""
  from bali_jax.eval.models import check_source, load
  t0 = time.time()
  _check_queries(data_dir, corpus, corpus_format)  # before the slow parts
  for src in models:
    check_source(src)
  d = load_dictionary(data_dir, kg, restrict)
  sets = load_queries(d, data_dir, corpus, corpus_format, limit=limit,
                      strict=strict)
  report = {"dictionary": d.stats(),
            "query_sets": [qs.summary() for qs in sets],
            "tie_breaking": "expected value under uniform random ties",
            "models": [], "results": []}
  for src in models:
    t1 = time.time()
    m = load(src)
    enc = Encoder(m.config, m.params, m.tokenizer, pooling=m.pooling,
                  max_name_tokens=m.max_name_tokens, seq_len=m.seq_len,
                  progress=progress)
    opts = _model_options(search_options, m.label)
    with dictionary_store(enc, d, opts, max(len(qs.queries)
                                            for qs in sets)) as (store, si):
      rows = score_model(enc, d, sets, store, opts)
    info = {"label": m.label, "source": m.source, "step": m.step,
            "pooling": m.pooling, "seconds": round(time.time() - t1, 1),
            "search": si}
    report["models"].append(info)
    report["results"] += [{"model": m.label, **r} for r in rows]
    if m.run_dir:
      _write_json(os.path.join(m.run_dir, "eval_el.json"),
                  {**report, "models": [info],
                   "results": [{"model": m.label, **r} for r in rows]})
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
  lines += ["", "| queries | repr. | model | n | acc@1 | Δacc@1 | acc@5 | "
            "MRR | hard n | hard acc@1 | hard acc@5 | hard MRR |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  keys = list(dict.fromkeys((r["queries"], r["representation"])
                            for r in report["results"]))
  for key in keys:
    rows = [r for r in report["results"]
            if (r["queries"], r["representation"]) == key]
    for j, r in enumerate(rows):
      delta = f"{100 * (r['acc@1'] - rows[0]['acc@1']):+.1f}" if j else ""
      lines.append(
          f"| {r['queries']} | {r['representation']} | {r['model']} | "
          f"{r['n']} | {_pct(r['acc@1'])} | {delta} | {_pct(r['acc@5'])} | "
          f"{_frac(r['mrr'])} | {r['hard_n']} | {_pct(r['hard_acc@1'])} | "
          f"{_pct(r['hard_acc@5'])} | {_frac(r['hard_mrr'])} |")
  lines += ["", "acc@k in %, MRR as a fraction; Δ in points vs the first model; ties "
            "count in expectation (uniform random tie-breaking)."]
  return "\n".join(lines)
