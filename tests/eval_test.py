"""Entity-linking evaluation: metrics known by construction, parity with a
transformers + NumPy reference, held-out synonyms never reach the records,
bad corpora, the CLI and the in-training curve."""

import dataclasses
import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bali_jax.eval import dictionary as dlib
from bali_jax.eval import linking, queries as qlib, report
from tests import eval_fixtures as efx
from tests.compiles import compilations
from tests.cli_runs import SHARED_STEP, subprocess_env


def _dict(names_per_concept):
  ids = [f"X:{i}" for i in range(len(names_per_concept))]
  return dlib.from_names(ids, names_per_concept, {}, "test")


# ------------------------------------------------------------ by construction
def test_orthogonal_names_link_perfectly_and_hard_subset_is_exact():
  d = _dict([["alpha one", "Alpha-One"], ["beta two"], ["gamma three"],
             ["delta four", "delta 4"]])
  # one orthogonal axis per concept: every name of concept c is e_c
  names = np.zeros((len(d.names), 8), np.float32)
  for n, c in zip(d.pair_name, d.pair_concept):
    names[n, c] = 1.0
  texts = ["ALPHA ONE", "beta-two", "gamma 3", "delta four!", "the alpha"]
  gold = [(0,), (1,), (2,), (3,), (0,)]
  qs = qlib.finish(qlib.QuerySet("q", [qlib.Query(t, g) for t, g in
                                       zip(texts, gold)], "test"), d)
  hard = [q.hard for q in qs.queries]
  # normalised: "alpha one", "beta two", "delta four" are names -> easy
  assert hard == [False, False, True, False, True]
  q = np.zeros((len(texts), 8), np.float32)
  for i, (g,) in enumerate(gold):
    q[i, g] = 1.0
  g, t, top = linking.gold_ranks(q, names, d.pair_name, d.pair_concept, gold,
                                 d.num_concepts)
  m = linking.metrics(g, t, hard)
  assert (g == 0).all() and (t == 0).all()
  assert list(top[:, 0]) == [0, 1, 2, 3, 0]
  assert m["acc@1"] == 1.0 and m["mrr"] == 1.0 and m["n"] == 5
  assert m["hard_n"] == 2 and m["hard_acc@1"] == 1.0


def test_constant_model_and_shuffled_dictionary_give_chance():
  c = 50
  d = _dict([[f"name {i}"] for i in range(c)])
  gold = [(i % c,) for i in range(400)]
  # a constant model ties every concept: exactly chance, in expectation
  ones = np.ones((len(d.names), 4), np.float32) / 2
  g, t, _ = linking.gold_ranks(np.ones((400, 4), np.float32) / 2, ones,
                               d.pair_name, d.pair_concept, gold, c)
  m = linking.metrics(g, t, np.zeros(400, bool))
  assert abs(m["acc@1"] - 1 / c) < 1e-12
  assert abs(m["acc@5"] - 5 / c) < 1e-12
  assert abs(m["mrr"] - sum(1 / k for k in range(1, c + 1)) / c) < 1e-9
  # a perfect model on a dictionary whose concept labels were shuffled
  rng = np.random.default_rng(0)
  names = rng.standard_normal((c, 16)).astype(np.float32)
  names /= np.linalg.norm(names, axis=1, keepdims=True)
  queries = names[[g[0] for g in gold]]
  g, t, _ = linking.gold_ranks(queries, names, d.pair_name, d.pair_concept,
                               gold, c)
  assert linking.metrics(g, t, np.zeros(400, bool))["acc@1"] == 1.0
  shuffled = rng.permutation(d.pair_concept)
  g, t, _ = linking.gold_ranks(queries, names, d.pair_name, shuffled, gold,
                               c)
  acc = linking.metrics(g, t, np.zeros(400, bool))["acc@1"]
  assert acc <= 0.06  # chance is 0.02; only fixed points of the shuffle hit


def test_tie_between_concepts_counts_half():
  d = _dict([["iron overload"], ["iron overload", "other"], ["x y"]])
  names = np.eye(3, dtype=np.float32)[:len(d.names)]
  g, t, _ = linking.gold_ranks(names[:1], names, d.pair_name, d.pair_concept,
                               [(0,)], 3)
  assert (g[0], t[0]) == (0, 1)
  m = linking.metrics(g, t, np.zeros(1, bool))
  assert m["acc@1"] == 0.5 and m["acc@5"] == 1.0 and m["mrr"] == 0.75


# ------------------------------------------------------------ reference
def _reference(starter_dir, d, qsets):
  """The protocol written again with transformers (PyTorch) and NumPy."""
  import torch
  import transformers
  tok = transformers.AutoTokenizer.from_pretrained(starter_dir)
  model = transformers.BertModel.from_pretrained(
      starter_dir, attn_implementation="eager").eval()

  def embed_strings(strings):
    out = []
    for s in strings:
      enc = tok(s, truncation=True, max_length=32, return_tensors="pt")
      with torch.no_grad():
        h = model(**enc).last_hidden_state[0].numpy()
      v = h.mean(0)
      out.append(v / np.linalg.norm(v))
    return np.stack(out)

  def embed_mention(sentence, span):
    enc = tok(sentence, truncation=True, max_length=128,
              return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
      h = model(**enc).last_hidden_state[0].numpy()
    toks = [i for i, (a, b) in enumerate(offsets)
            if b > a and a >= span[0] and b <= span[1]]
    v = h[toks].mean(0)
    return v / np.linalg.norm(v)

  names = embed_strings(d.names)

  def ranks(qv, gold):
    sim = qv @ names.T
    concept = np.full((len(qv), d.num_concepts), -np.inf)
    for n, c in zip(d.pair_name, d.pair_concept):
      concept[:, c] = np.maximum(concept[:, c], sim[:, n])
    g, t = [], []
    for i, gs in enumerate(gold):
      best = max(concept[i, x] for x in gs)
      other = np.ones(d.num_concepts, bool)
      other[list(gs)] = False
      g.append(int(np.sum(other & (concept[i] > best))))
      t.append(int(np.sum(other & (concept[i] == best))))
    return np.array(g), np.array(t)

  out = {}
  for qs in qsets:
    gold = [q.gold for q in qs.queries]
    out[(qs.name, "string")] = ranks(
        embed_strings([q.text for q in qs.queries]), gold)
    sent = [q for q in qs.queries if q.sentence]
    if sent:
      out[(qs.name, "sentence")] = ranks(
          np.stack([embed_mention(q.sentence, q.span) for q in sent]),
          [q.gold for q in sent])
  return out, names


def test_scores_match_transformers_numpy_reference(tmp_path, starter_dir,
                                                   monkeypatch):
  from bali_jax.eval import encoder as elib
  from bali_jax.eval.encoder import Encoder, PackShape
  from bali_jax.eval.models import load
  data = efx.write_eval_dataset(str(tmp_path / "ds"))
  rep = report.evaluate(["starter"], data_dir=data, progress=False,
                        out=str(tmp_path / "r.json"))
  d = report.load_dictionary(data, None, None)
  sets = report.load_queries(d, data)
  assert [s.name for s in sets] == ["heldout_synonyms", "test_mentions"]
  assert sum(q.hard for q in sets[0].queries) == 9  # 2 easy by design
  ref, ref_names = _reference(starter_dir, d, sets)
  m = load("starter")
  # one row per device: a call pads to 8 rows here, not the default 64
  enc = Encoder(m.config, m.params, m.tokenizer, progress=False,
                shape=PackShape(rows_per_device=1))
  ours_names = enc.encode_strings(d.names)
  np.testing.assert_allclose(ours_names, ref_names, atol=1e-4)
  rows = {(r["queries"], r["representation"]): r for r in rep["results"]}
  assert set(rows) == set(ref)
  for key, (g, t) in ref.items():
    qs = next(s for s in sets if s.name == key[0])
    hard = np.array([q.hard for q in qs.queries
                     if key[1] == "string" or q.sentence])
    want = linking.metrics(g, t, hard)
    for k, v in want.items():
      assert (v is None and rows[key][k] is None) or abs(
          rows[key][k] - v) <= 1e-6, (key, k)
  # the ranks themselves, query by query
  qs = sets[0]
  qv = enc.encode_strings([q.text for q in qs.queries])
  g, t, _ = linking.gold_ranks(qv, ours_names, d.pair_name, d.pair_concept,
                               [q.gold for q in qs.queries], d.num_concepts)
  np.testing.assert_array_equal(g, ref[("heldout_synonyms", "string")][0])
  np.testing.assert_array_equal(t, ref[("heldout_synonyms", "string")][1])
  # inputs go through tokenizing, packing and the model ENCODE_CHUNK at a
  # time (a million queries at once cost ~10 GB), with the same vectors
  packed, pack = [], elib.pack
  monkeypatch.setattr(elib, "pack", lambda items, shape: (
      packed.append(len(items)), pack(items, shape))[1])
  monkeypatch.setattr(elib, "ENCODE_CHUNK", 4)
  np.testing.assert_allclose(enc.encode_strings(d.names), ours_names,
                             atol=1e-6)
  assert max(packed) == 4 and sum(packed) == len(d.names)
  sent = [q for q in sets[1].queries if q.sentence]
  args = ([q.sentence for q in sent], [[q.span] for q in sent])
  packed.clear()
  chunked, ok4 = enc.encode_mentions(*args)
  assert max(packed) == 4 and sum(packed) == len(sent) > 4
  monkeypatch.setattr(elib, "ENCODE_CHUNK", 10 ** 6)
  whole, ok = enc.encode_mentions(*args)
  np.testing.assert_allclose(chunked, whole, atol=1e-6)
  np.testing.assert_array_equal(ok4, ok)
  # "iron overload" names two concepts: a tie, half a hit at most
  assert rows[("test_mentions", "string")]["acc@1"] < 1.0
  saved = json.load(open(tmp_path / "r.json"))
  assert saved["results"] == rep["results"]
  assert "| heldout_synonyms | string | starter |" in report.to_markdown(rep)


# ------------------------------------------------------------ held-out
def test_heldout_synonyms_never_reach_records_or_linker(tmp_path):
  from bali_jax.features import tiny_budgets
  from bali_jax.open_data import starter_model_dir
  from bali_jax.hf.tokenizer import load_tokenizer
  from bali_jax.readers import ontologies
  from data_prep.pipelines.build import BuildOptions, build_dataset
  from bali_jax.readers.errors import BadRecords
  from bali_jax.readers.kg import KnowledgeGraph
  from data_prep.linking.linker import DictionaryLinker
  from data_prep.records.tfds_builder import load_split
  obo = tmp_path / "syn.obo"
  obo.write_text(efx.synonym_obo())
  kg = KnowledgeGraph()
  ontologies.read_obo(str(obo), kg, BadRecords())
  all_names = [list(n) for n in kg.names]
  tok = load_tokenizer(starter_model_dir())
  out = str(tmp_path / "ds")
  linker = DictionaryLinker(kg)  # built too early on purpose: rebuilt
  build_dataset(efx.synonym_documents(all_names), kg, tok, out,
                BuildOptions(budgets=tiny_budgets(), views=2, seed=5,
                             workers=1, heldout_synonyms=0.3,
                             validation_percent=0, test_percent=30),
                BadRecords(), linker=linker)
  held = {}
  with open(os.path.join(out, "heldout_synonyms.tsv")) as f:
    next(f)
    for line in f:
      node, cid, syn = line.rstrip("\n").split("\t")
      assert syn in all_names[int(node)][1:]  # a synonym, never the label
      assert int(node) not in held  # at most one per concept
      held[int(node)] = syn
  n_syn = sum(len(n) - 1 for n in all_names if len(n) > 1)
  assert len(held) == round(0.3 * n_syn)
  # not in the graph's names, not in the dictionary the evaluation uses
  d = dlib.from_dataset(out)
  for node, syn in held.items():
    assert syn not in kg.names[node]
    assert not any(d.names[n] == syn for n, c in
                   zip(d.pair_name, d.pair_concept) if c == node)
  # not in the linker: the held-out strings link nothing any more
  fresh = DictionaryLinker(kg)
  for node, syn in held.items():
    assert all(kg.concept_ids[node] not in m.concepts
               for m in fresh.link(f"The patient had {syn} at birth."))
  # no sampled node name in any record equals a held-out synonym of its
  # concept (decoded from the packed name rows of every split and view)
  held_ids = {n: tok(s, truncation=True, max_length=12)["input_ids"]
              for n, s in held.items()}
  spec = json.load(open(os.path.join(out, "bali_dataset.json")))
  checked = 0
  for split in spec["splits"]:
    for rec in load_split(out, split).as_numpy_iterator():
      ids, seg = rec["name_ids"].ravel(), rec["name_segment_ids"].ravel()
      for slot in np.nonzero(rec["node_mask"])[0]:
        name = ids[seg == slot + 1].tolist()
        concept = int(rec["node_concept"][slot])
        assert name != held_ids.get(concept), (split, concept)
        checked += 1
  assert checked > 100
  # and no test mention was linked through one
  with open(os.path.join(out, "test_mentions.jsonl")) as f:
    for line in f:
      s = json.loads(line)
      for a, b, nodes in s["mentions"]:
        assert all(held.get(n) != s["text"][a:b] for n in nodes)


# ------------------------------------------------------------ bad input
PUBTATOR = """901|t|Anemia and fever.
901|a|Headache with iron overload; seizure too.
901\t0\t6\tAnemia\tDisease\tHP:0001903
901\t11\t16\tfever\tDisease\thp_0001945
901\t18\t26\tHeadache\tDisease\tHP:9999999
901\t32\t45\tiron overload\tDisease\tOMIM:235200
901\t47\t54\tseizure\tDisease\t-

902|t|Cough.
902|a|
902\t0\t5\tCough\tDisease\tHP:0012735
"""


def _corpus(tmp_path, extra=""):
  p = tmp_path / "gold.pubtator"
  p.write_text(PUBTATOR + extra)
  return str(p)


def test_corpus_ids_mapped_and_bad_mentions_counted(tmp_path):
  from bali_jax.readers.errors import BadInputError
  d = dlib.from_dataset(efx.write_eval_dataset(str(tmp_path / "ds")))
  qs = qlib.corpus(_corpus(tmp_path), "pubtator", d)
  texts = [q.text for q in qs.queries]
  # HP_ spelling and the OMIM alias resolve; the empty abstract is valid
  assert texts == ["Anemia", "fever", "iron overload", "Cough"]
  assert qs.documents == 2
  assert qs.skipped["id-not-in-kg"]["count"] == 1
  assert "gold.pubtator:5" in qs.skipped["id-not-in-kg"]["first"]
  assert qs.skipped["mention-without-id"]["count"] == 1
  bad = ("903|t|Short.\n903|a|Text.\n"
         "903\t3\t3\tx\tDisease\tHP:0001903\n"
         "903\t0\t99\tShort\tDisease\tHP:0001903\n"
         "903\t0\t5\tShart\tDisease\tHP:0001903\n")
  path = _corpus(tmp_path, bad)
  qs = qlib.corpus(path, "pubtator", d)
  for reason in ("empty-mention", "offsets-outside-text",
                 "mention-text-mismatch"):
    assert qs.skipped[reason]["count"] == 1, reason
  assert f"{path}:14" in qs.skipped["empty-mention"]["first"]
  with pytest.raises(BadInputError, match=r"gold.pubtator:14: .*empty"):
    qlib.corpus(path, "pubtator", d, strict=True)
  rep_sets = report.load_queries(d, corpus=path, corpus_format="pubtator")
  summary = rep_sets[0].summary()
  assert summary["skipped"]["id-not-in-kg"]["count"] == 1


def test_empty_dictionary_and_unknown_prefix_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="dictionary is empty"):
    dlib.from_names(["A:1"], [[]], {}, "empty.tsv")
  d = dlib.from_dataset(efx.write_eval_dataset(str(tmp_path / "ds")))
  assert d.restrict("MONDO:").stats()["concepts_with_names"] == 5
  with pytest.raises(ValueError, match="no concept .* prefix"):
    d.restrict("CHEBI:")
  os.remove(tmp_path / "ds" / "names.tsv")
  with pytest.raises(FileNotFoundError, match="names.tsv"):
    dlib.from_dataset(str(tmp_path / "ds"))


# ------------------------------------------------------------ CLI
@pytest.mark.slow(seconds=20)
def test_evaluate_cli_two_models_table_and_json(tmp_path, starter_dir):
  data = efx.write_eval_dataset(str(tmp_path / "ds"))
  out = tmp_path / "report.json"
  env = subprocess_env(devices=2, optimized=True)
  r = subprocess.run(
      [sys.executable, "-m", "bali_jax", "evaluate", "--model", "starter",
       "--model", starter_dir, "--data", data, "--corpus",
       _corpus(tmp_path), "--corpus-format", "pubtator", "--out", str(out)],
      capture_output=True, text=True, env=env, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "| heldout_synonyms | string | starter |" in r.stdout
  assert "corpus:gold.pubtator" in r.stdout
  assert "skipped 1 (id-not-in-kg); first:" in r.stderr
  rep = json.loads(out.read_text())
  by = {}
  for row in rep["results"]:
    by.setdefault((row["queries"], row["representation"]), []).append(row)
  # the same weights twice (alias and directory): identical figures, a
  # paired difference of exactly 0 and McNemar p = 1
  for rows in by.values():
    assert len(rows) == 2
    assert rows[0]["acc@1"] == rows[1]["acc@1"]
    lo, hi = rows[0]["acc@1_ci"]
    assert lo <= rows[0]["acc@1"] <= hi
    assert rows[1]["delta_acc@1"] == 0 and rows[1]["delta_acc@1_ci"] == [
        0, 0]
    assert rows[1]["mcnemar_acc@1"]["p_value"] == 1.0
  assert rep["intervals"]["resamples"] == 1000
  assert " n.s. | 1 |" in r.stdout  # Δ: no measurable change, p = 1
  r = subprocess.run([sys.executable, "-m", "bali_jax", "evaluate",
                      "--model", "starter", "--data", data, "--restrict",
                      "CHEBI:"], capture_output=True, text=True, env=env)
  assert r.returncode == 2 and "CHEBI" in r.stderr


# ------------------------------------------------------------ in training
@pytest.mark.slow(seconds=30)
def test_linking_curve_in_training_matches_evaluate(tiny_dataset, tmp_path):
  from bali_jax import configs
  from bali_jax.eval.in_training import evaluators
  from bali_jax.train.loop import train_and_evaluate
  cfg = configs.apply_overrides(
      configs.get_config("tiny").replace(data_dir=tiny_dataset),
      ["steps=4", "el_eval_every=2", "save_every=2"])
  run = str(tmp_path / "run")
  # as `train` passes them: the run directory bound
  train_and_evaluate(cfg, run, functools.partial(evaluators, workdir=run))
  # the dictionary's vectors went to shards in the run directory (where
  # several processes would each write their slice)
  index = json.load(open(os.path.join(run, "el_name_vectors",
                                      "index.json")))
  assert index["num_names"] >= 1 and index["dtype"] == "float32"
  rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
  el = {r["step"]: r for r in rows if "eval_el_acc@1" in r}
  assert sorted(el) == [2, 4]
  assert el[4]["eval_el_queries"] >= 1
  assert os.path.exists(os.path.join(run, "metrics.png"))
  cache = str(tmp_path / "cache")  # a run's weights change: never cached
  rep = report.evaluate([run], data_dir=tiny_dataset, progress=False,
                        search_options=report.SearchOptions(cache=cache))
  assert rep["models"][0]["search"]["cache"] is None
  assert not os.path.exists(cache)
  row = next(r for r in rep["results"] if r["queries"] ==
             "heldout_synonyms" and r["representation"] == "string")
  assert abs(row["acc@1"] - el[4]["eval_el_acc@1"]) < 1e-6
  assert abs(row["mrr"] - el[4]["eval_el_mrr"]) < 1e-6
  saved = json.load(open(os.path.join(run, "eval_el.json")))
  assert saved["models"][0]["step"] == 4
  # RUN@STEP: a kept earlier checkpoint reproduces the curve's point there,
  # and leaves the run's own (latest) report alone
  rep2 = report.evaluate([f"{run}@2"], data_dir=tiny_dataset,
                         progress=False)
  assert rep2["models"][0]["label"] == "run@2"
  assert rep2["models"][0]["step"] == 2
  row2 = next(r for r in rep2["results"] if r["queries"] ==
              "heldout_synonyms" and r["representation"] == "string")
  assert abs(row2["acc@1"] - el[2]["eval_el_acc@1"]) < 1e-6
  assert abs(row2["mrr"] - el[2]["eval_el_mrr"]) < 1e-6
  assert json.load(open(os.path.join(run, "eval_el.json"))) == saved
  with pytest.raises(ValueError, match=r"keeps steps \[2, 4\]"):
    report.evaluate([f"{run}@3"], data_dir=tiny_dataset, progress=False)
  _probe_geometry_of(run, str(tmp_path))
  # the export's model card carries that table, the data card, the config
  from bali_jax.cli import main
  from huggingface_hub import ModelCard
  import transformers
  hf = os.path.join(str(tmp_path), "hf")
  assert main(["export-hf", "--source", run, "--out", hf, "--no-verify",
               "--base-model", "org/base", "--license", "mit"]) == 0
  card = ModelCard.load(os.path.join(hf, "README.md"))
  data_card = json.load(open(os.path.join(tiny_dataset, "data_card.json")))
  assert card.data.base_model == "org/base" and card.data.license == "mit"
  assert card.data.library_name == "transformers"
  assert card.data.datasets == list(dict.fromkeys(  # once each
      s["name"] for s in data_card["sources"]))
  assert "4 steps" in card.text and '"el_eval_every": 2' in card.text
  ci = row["acc@1_ci"]
  assert f"{100 * row['acc@1']:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" \
      in card.text
  assert "graph_encoder.safetensors" in card.text
  transformers.AutoModel.from_pretrained(hf)  # the card is beside weights


def test_plot_curve_reads_steps_deltas_and_intervals(tmp_path, capsys):
  from bali_jax.cli import main
  from bali_jax.eval import curve
  def row(model, acc, delta=None, ci=None, queries="heldout_synonyms"):
    r = {"model": model, "queries": queries, "representation": "string",
         "acc@1": acc}
    if delta is not None:
      r.update({"delta_acc@1": delta, "delta_acc@1_ci": ci})
    return r
  rep = {"models": [{"label": "starter", "step": None},
                    {"label": "run@500", "step": 500},
                    {"label": "run@250", "step": 250},
                    {"label": "other-hf", "step": None}],
         "results": [row("starter", 0.50), row("run@500", 0.53, 0.03,
                                               [0.01, 0.05]),
                     row("run@250", 0.52, 0.02, [0.0, 0.04]),
                     row("other-hf", 0.9, 0.4, [0.3, 0.5]),
                     row("starter", 0.8, queries="test_mentions")]}
  pts = curve.curve_points(rep)
  # sorted by step, the baseline at 0; the HF model and a query set with
  # no stepped row are left out
  assert list(pts) == [("heldout_synonyms", "string")]
  assert pts[("heldout_synonyms", "string")] == [
      (0, 0.0, 0.0, 0.0, 0.50), (250, 0.02, 0.0, 0.04, 0.52),
      (500, 0.03, 0.01, 0.05, 0.53)]
  path = tmp_path / "rep.json"
  path.write_text(json.dumps(rep))
  png = str(tmp_path / "curve.png")
  assert main(["plot-curve", "--report", str(path), "--out", png]) == 0
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert "step 500 +3.0 [+1.0, +5.0]" in capsys.readouterr().out
  # one report per checkpoint: merged by step under one baseline
  late = {"models": [rep["models"][0], {"label": "run@750", "step": 750}],
          "results": [row("starter", 0.50), row("run@750", 0.55, 0.05,
                                                [0.03, 0.07])]}
  (tmp_path / "late.json").write_text(json.dumps(late))
  merged = curve.plot_curve([str(path), str(tmp_path / "late.json")], png)
  assert [p[0] for p in merged["heldout_synonyms / string"]] == \
      [0, 250, 500, 750]
  other = {**late, "models": [{"label": "biobert", "step": None},
                              late["models"][1]]}
  (tmp_path / "other.json").write_text(json.dumps(other))
  with pytest.raises(ValueError, match="a curve needs one baseline"):
    curve.plot_curve([str(path), str(tmp_path / "other.json")], png)
  flat = tmp_path / "flat.json"  # no checkpoint steps: a clear error
  flat.write_text(json.dumps({**rep, "models": rep["models"][:1]
                              + rep["models"][3:]}))
  with pytest.raises(ValueError, match="no model with a training step"):
    curve.plot_curve([str(flat)], png)


@pytest.mark.slow(seconds=100)
def test_ablation_runner_table(tiny_dataset, tmp_path, monkeypatch):
  from bali_jax.eval import ablation
  work = str(tmp_path / "abl")
  # the suite's shared step (tests/cli_runs.SHARED_STEP): both variants
  # load it from the session's compilation cache
  shared = [f"{k}={v}" for k, v in SHARED_STEP.items()
            if k.startswith("mesh_")]
  out = ablation.run_ablation(
      tiny_dataset, work, config="tiny", steps=int(SHARED_STEP["steps"]),
      variants={"authors": [], "seed_1": ["seed=1"]},
      extra=["eval_batches=1", *shared])
  md = open(os.path.join(work, "ablation.md")).read()
  assert "| authors |" in md and "| seed_1 |" in md
  v = out["variants"]
  assert v["seed_1"]["command"].endswith(" seed=1")
  # the override reached its run, and only its run
  seeds = {n: json.load(open(os.path.join(work, n, "config.json")))["seed"]
           for n in v}
  assert seeds == {"authors": 29, "seed_1": 1}  # the preset's, and 1
  assert v["seed_1"]["final_loss"] != v["authors"]["final_loss"]
  labels = [m["label"] for m in out["evaluate"]["models"]]
  assert labels == ["authors@10", "seed_1@10"]
  # finished runs are not trained again
  def train(cmd, log):
    raise AssertionError(f"trained again: {cmd}")
  monkeypatch.setattr(ablation, "_train", train)
  again = ablation.run_ablation(
      tiny_dataset, work, config="tiny", steps=int(SHARED_STEP["steps"]),
      variants={"authors": []}, extra=["eval_batches=1", *shared])
  assert again["variants"]["authors"]["final_loss"] == \
      out["variants"]["authors"]["final_loss"]


def test_dictionary_from_kg_with_alt_ids_and_replaced_terms(tmp_path):
  obo = tmp_path / "mini.obo"
  obo.write_text(
      "format-version: 1.2\n\n[Term]\nid: HP:0001903\nname: Anemia\n"
      'alt_id: HP:0004840\nsynonym: "Anaemia" EXACT []\n'
      'synonym: "Low blood" RELATED []\n\n'
      "[Term]\nid: HP:0001744\nname: Splenomegaly\n\n"
      "[Term]\nid: HP:0000001\nname: Old anemia term\nis_obsolete: true\n"
      "replaced_by: HP:0001903\n")
  d = dlib.from_kg(str(obo))
  assert d.num_concepts == 2 and sorted(d.names) == ["Anaemia", "Anemia",
                                                     "Splenomegaly"]
  node = d.index["HP:0001903"]
  for old in ("HP:0004840", "hp_0004840", "HP:0000001"):
    assert qlib.map_id(old, d) == node
  assert qlib.map_id("HP:1234567", d) is None
  with pytest.raises(FileNotFoundError, match="no such file"):
    dlib.from_kg(str(tmp_path / "missing.obo"))


# ------------------------------------------------------------ vector cache
def _tiny_hf_bert(out: str, seed: int) -> str:
  """A 2-layer BERT with the starter's tokenizer as an HF directory: a
  model that is not a run, encoded in a blink."""
  import jax
  from bali_jax.hf import export as hf_export
  from bali_jax.hf.tokenizer import load_tokenizer
  from bali_jax.model.bert import init_params
  from bali_jax.model.config import BertConfig
  from bali_jax.open_data import starter_model_dir
  cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=4, intermediate_size=64,
                   max_position_embeddings=64)
  hf_export.export_hf(cfg, init_params(cfg, jax.random.key(seed),
                                       mlm_head=False), out,
                      load_tokenizer(starter_model_dir()), progress=False)
  return out


def test_dictionary_vectors_cache_hits_and_invalidates(tmp_path,
                                                       monkeypatch):
  """Once encoded, a model's dictionary vectors are read back, not encoded
  again, with the same scores; other weights or another dictionary are
  other entries; a training run and --vectors-dir never touch the cache."""
  import shutil
  from bali_jax.eval import name_store
  data = efx.write_eval_dataset(str(tmp_path / "ds"))
  model = _tiny_hf_bert(str(tmp_path / "m0"), 0)
  opts = report.SearchOptions(cache=str(tmp_path / "cache"))
  run = lambda m=model, ds=data: report.evaluate(
      [m], data_dir=ds, progress=False, search_options=opts, resamples=0)
  first = run()
  cache = first["models"][0]["search"]["cache"]
  assert cache["hit"] is False
  assert os.path.exists(os.path.join(cache["directory"], "index.json"))

  def no_encoding(*a, **k):
    raise AssertionError("encoded again")
  monkeypatch.setattr(name_store, "write", no_encoding)
  again = run()
  assert again["models"][0]["search"]["cache"] == {**cache, "hit": True}
  assert again["models"][0]["search"]["encoding"]["names"] == 0
  scores = lambda rep: [{k: v for k, v in r.items() if k != "seconds"}
                        for r in rep["results"]]
  assert scores(again) == scores(first)
  monkeypatch.undo()
  # other weights, other names: other entries, encoded
  other = run(_tiny_hf_bert(str(tmp_path / "m1"), 1))["models"][0]
  more = str(tmp_path / "ds2")
  shutil.copytree(data, more)
  lines = open(os.path.join(more, "names.tsv")).read().splitlines()
  lines[-1] = lines[-1].split("\t")[0] + "\ta name spelled otherwise"
  with open(os.path.join(more, "names.tsv"), "w") as f:
    f.write("\n".join(lines) + "\n")  # as many names, one of them new
  grown = run(model, more)["models"][0]
  for m in (other, grown):
    assert m["search"]["cache"]["hit"] is False
  assert len({cache["directory"], other["search"]["cache"]["directory"],
              grown["search"]["cache"]["directory"]}) == 3
  # --vectors-dir: the vectors go there, not to the cache
  kept = str(tmp_path / "kept")
  rep = report.evaluate([model], data_dir=data, progress=False,
                        resamples=0, search_options=dataclasses.replace(
                            opts, directory=kept))
  assert rep["models"][0]["search"]["cache"] is None
  assert scores(rep) == scores(first)
  # what the cache holds is what encoding writes, bit for bit
  store = name_store.load(cache["directory"])
  fresh = rep["models"][0]["search"]["vectors"]["directory"]
  assert store.num_shards == len([f for f in os.listdir(fresh)
                                  if f.startswith("shard-")])
  for i in range(store.num_shards):
    np.testing.assert_array_equal(
        store.read(i), np.load(os.path.join(fresh, f"shard-{i:05d}.npy")))


# ------------------------------------------------------------ geometry probe
def _loop_geometry(emb, ids):
  """The probe's figures by explicit loops over pairs (the reference)."""
  u = {k: v / np.linalg.norm(v, axis=1, keepdims=True)
       for k, v in emb.items()}
  m = len(ids)
  cos = lambda a, b: float(np.dot(a, b))
  out = {"text_graph": np.mean([cos(u["text"][i], u["graph"][i])
                                for i in range(m)]),
         "text_name": np.mean([cos(u["text"][i], u["names"][i])
                               for i in range(m)])}
  for k, name in (("text", "text"), ("names", "name")):
    out[f"{name}_spread"] = np.mean([cos(u[k][i], u[k][j])
                                     for i in range(m) for j in range(m)
                                     if ids[i] != ids[j]])
  hits = 0
  for i in range(m):
    best = max(range(m), key=lambda j: cos(u["text"][i], u["names"][j]))
    hits += ids[best] == ids[i]
  out["text_name_top1"] = hits / m
  return out


def test_geometry_figures_match_loops_and_centering_reveals_a_shared_direction():
  from bali_jax.eval import geometry
  rng = np.random.default_rng(0)
  ids = np.repeat(np.arange(40), 2)  # two entities per concept
  signal = rng.normal(size=(40, 64))[ids]  # (80, 64) per concept
  emb = {"names": signal + 0.3 * rng.normal(size=signal.shape),
         "graph": rng.normal(size=signal.shape),
         "text": signal + 0.3 * rng.normal(size=signal.shape)}
  got = geometry.geometry(emb, ids)
  ref = _loop_geometry(emb, ids)
  for k, v in ref.items():
    assert abs(got[k] - v) < 1e-9, k
  assert got["text_name_top1"] > 0.95 and got["concepts"] == 40
  # a large direction shared by every mention hides the concepts from
  # cosine retrieval; removing each side's mean brings them back
  shared = 30 * rng.normal(size=64)
  rng2 = np.random.default_rng(1)
  emb2 = {**emb, "text": signal + shared + 0.3 * rng2.normal(
      size=signal.shape) + 4 * rng2.normal(size=(80, 1)) * shared / 30}
  got2 = geometry.geometry(emb2, ids)
  assert got2["text_spread"] > 0.9
  assert got2["text_name_top1"] < 0.5
  assert got2["text_name_top1_centered"] > 0.9
  with pytest.raises(ValueError, match="two concepts"):
    geometry.geometry(emb, np.zeros(80, int))


def _probe_geometry_of(run: str, tmp: str):
  """probe-geometry on a trained tiny run: step 0 (rebuilt), kept steps,
  a refused step, the CLI's JSON and plot; a linear run is refused."""
  from bali_jax import configs
  from bali_jax.cli import main
  from bali_jax.eval import geometry
  out, png = os.path.join(tmp, "geo.json"), os.path.join(tmp, "geo.png")
  with compilations() as compiled:
    assert main(["probe-geometry", "--run", run, "--batches", "1", "--out",
                 out, "--plot", png]) == 0
  rows = json.load(open(out))
  assert [r["step"] for r in rows] == [0, 2, 4]
  # the batches are read and the forward compiled once for all steps
  assert compiled.count("jit(embed)") == 1, compiled
  assert len({r["entities"] for r in rows}) == 1  # the same rows each step
  assert rows[0]["entities"] >= 2
  for r in rows:
    for c in geometry.COLUMNS:
      assert -1 - 1e-6 <= r[c] <= 1 + 1e-6
  # four steps of alignment pulled mentions towards their graph vectors
  assert rows[2]["text_graph"] > rows[0]["text_graph"] + 0.01
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match=r"keeps steps \[2, 4\]"):
    geometry.probe([run], [3], 1)
  cfg = configs.load_run_config(run)
  linear = cfg.replace(model=dataclasses.replace(cfg.model,
                                                 graph_encoder="linear"))
  with pytest.raises(ValueError, match="GNN graph encoder"):
    geometry.embed_fn(linear, {})
