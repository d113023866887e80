"""A user's own graph and corpus for `python -m data_prep kg`.

Graph: any number of ontologies, OBO (`.obo`) or OBO-graph JSON (`.json`,
the obographs format OBO Foundry publishes beside each `.obo`), optionally
gzip-compressed, plus extra edges as a (head, relation, tail) TSV. Every
synonym scope feeds the concept's names (what nodes are sampled with);
only labels and EXACT synonyms link text (the dictionary linker's scope
rule).

Corpus: PubMed XML, BERN2 JSON lines or PubTator (pre-linked: their ids
must name graph concepts or their aliases), or plain UTF-8 text (`text`: a
file whose documents are separated by blank lines, or a directory of such
files), linked by our dictionary linker.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib

from bali_jax.readers import ontologies
from bali_jax.readers.corpus import (Document, read_bern2_jsonl, read_pubmed_xml,
                              read_pubtator)
from bali_jax.readers.errors import BadInputError, BadRecords, read_lines
from bali_jax.readers.kg import KnowledgeGraph, Source

CORPUS_FORMATS = ("pubmed-xml", "text", "pubtator", "bern2")
_OBO_URI = re.compile(r"^https?://purl\.obolibrary\.org/obo/([A-Za-z]+)_(.+)$")
_SCOPES = {"hasExactSynonym": "EXACT", "hasRelatedSynonym": "RELATED",
           "hasBroadSynonym": "BROAD", "hasNarrowSynonym": "NARROW"}


def curie(uri: str) -> str:
  """http://purl.obolibrary.org/obo/HP_0000118 -> HP:0000118."""
  m = _OBO_URI.match(uri)
  return f"{m.group(1)}:{m.group(2)}" if m else uri


def _short(pred: str) -> str:
  return curie(pred).rsplit("#", 1)[-1].rsplit("/", 1)[-1]


def read_obograph_json(path: str, kg: KnowledgeGraph, bad: BadRecords,
                       link_scopes=("EXACT",)) -> str:
  """Reads an OBO-graph JSON ontology; returns its version (or "unknown").

  Classes with a label become concepts (unlabelled class nodes are
  references to other ontologies: counted, not read); deprecated ones
  become aliases of their replacement; `is_a` edges become hierarchy edges
  both ways and any other predicate an edge named by its short id, with an
  `inverse_` edge back.
  """
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = json.loads(f.read().decode("utf-8"))
  except json.JSONDecodeError as e:
    bad.report("unreadable-file", f"{path}:{e.lineno}", f"not JSON: {e.msg}")
    return "unknown"
  except (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile,
          OSError) as e:
    bad.report("unreadable-file", path, f"{type(e).__name__}: {e}")
    return "unknown"
  graphs = data.get("graphs") if isinstance(data, dict) else None
  if not isinstance(graphs, list):
    bad.report("unreadable-file", path, 'not an OBO-graph JSON file (no '
               '"graphs" list)')
    return "unknown"
  version, parents, aliases, other, unlabelled = "unknown", [], [], [], 0
  for g_i, g in enumerate(graphs):
    version = (g.get("meta") or {}).get("version", version)
    for n_i, node in enumerate(g.get("nodes") or []):
      where = f"{path}: graphs[{g_i}].nodes[{n_i}]"
      if not node.get("id"):
        bad.report("json-node-without-id", where, "node has no id")
        continue
      if node.get("type", "CLASS") != "CLASS":
        continue
      cid, meta = curie(node["id"]), node.get("meta") or {}
      props = {p.get("pred", "").rsplit("#", 1)[-1].rsplit("/", 1)[-1]:
               p.get("val") for p in meta.get("basicPropertyValues") or []}
      if meta.get("deprecated"):
        if props.get("IAO_0100001"):  # term replaced by
          aliases.append((cid, curie(props["IAO_0100001"])))
        continue
      if not node.get("lbl"):
        unlabelled += 1
        continue
      names, no_link, linked = [node["lbl"]], [], []
      for syn in meta.get("synonyms") or []:
        scope = _SCOPES.get(syn.get("pred"))
        if scope and syn.get("val"):
          names.append(syn["val"])
          (linked if scope in link_scopes else no_link).append(syn["val"])
      kg.exclude_from_linking(kg.add_concept(cid, names), no_link, linked)
      if props.get("hasAlternativeId"):
        aliases.append((props["hasAlternativeId"], cid))
    for e in g.get("edges") or []:
      sub, obj, pred = (curie(e.get("sub", "")), curie(e.get("obj", "")),
                        e.get("pred", ""))
      (parents if pred == "is_a" else other).append((sub, _short(pred), obj))
  ontologies.finish(kg, [(s, o) for s, _, o in parents], aliases, ())
  for sub, rel, obj in other:
    if sub in kg.index and obj in kg.index:
      kg.add_edge(kg.index[sub], kg.index[obj], rel)
      kg.add_edge(kg.index[obj], kg.index[sub], f"inverse_{rel}")
  kg.notes["unlabelled_json_nodes"] = (kg.notes.get("unlabelled_json_nodes",
                                                    0) + unlabelled)
  return version


def read_edges_tsv(path: str, kg: KnowledgeGraph, bad: BadRecords) -> int:
  """Extra edges, one `head<TAB>relation<TAB>tail` per line ('#' lines and
  blank lines skipped; a header line `head relation tail` too). Edges whose
  ends are not graph concepts are counted, not added. Returns edges added."""
  added = unknown = 0
  for lineno, line in read_lines(path, bad):
    if not line.strip() or line.startswith("#"):
      continue
    cols = line.split("\t")
    if len(cols) != 3 or not all(c.strip() for c in cols):
      bad.report("wrong-column-count", f"{path}:{lineno}",
                 f"expected head<TAB>relation<TAB>tail, got {len(cols)} "
                 "column(s)" + ("" if len(cols) != 3 else " with an empty one"))
      continue
    head, rel, tail = (c.strip() for c in cols)
    if (head, rel, tail) == ("head", "relation", "tail"):
      continue
    if head in kg.index and tail in kg.index:
      kg.add_edge(kg.index[head], kg.index[tail], rel)
      added += 1
    else:
      unknown += 1
  kg.notes["user_edges_with_unknown_concept"] = (
      kg.notes.get("user_edges_with_unknown_concept", 0) + unknown)
  return added


def user_graph(ontology_files, edge_files, bad: BadRecords) -> KnowledgeGraph:
  kg = KnowledgeGraph()
  for path in ontology_files:
    if not os.path.exists(path):
      raise FileNotFoundError(f"--ontology {path}: no such file")
    base = path[:-3] if path.endswith(".gz") else path
    if base.endswith(".obo"):
      version = ontologies.read_obo(path, kg, bad,
                                    synonym_scopes=ontologies.ALL_SCOPES)
    elif base.endswith(".json"):
      version = read_obograph_json(path, kg, bad)
    else:
      raise BadInputError(f"--ontology {path}: expected .obo or .json "
                       "(optionally .gz)")
    kg.sources.append(Source(os.path.basename(path), version,
                             "user-supplied", path))
  for path in edge_files:
    kg.notes.setdefault("user_edges", 0)
    kg.notes["user_edges"] += read_edges_tsv(path, kg, bad)
    kg.sources.append(Source(os.path.basename(path), "user-supplied",
                             "user-supplied", path))
  return kg


def read_text_corpus(path: str, bad: BadRecords):
  """Documents of a plain-text file (separated by blank lines) or of every
  file of a directory (sorted); ids are `file:first line`."""
  files = ([os.path.join(dp, f) for dp, _, fs in sorted(os.walk(path))
            for f in sorted(fs) if not f.startswith(".")]
           if os.path.isdir(path) else [path])
  for f in files:
    name = os.path.relpath(f, path) if os.path.isdir(path) else \
        os.path.basename(f)
    lines, start = [], 0
    for lineno, line in read_lines(f, bad):
      if line.strip():
        if not lines:
          start = lineno
        lines.append(line.strip())
      elif lines:
        yield Document(f"{name}:{start}", " ".join(lines))
        lines = []
    if lines:
      yield Document(f"{name}:{start}", " ".join(lines))


def user_documents(path: str, fmt: str, bad: BadRecords, stats: dict):
  if not os.path.exists(path):
    raise FileNotFoundError(f"--corpus {path}: no such file or directory")
  if fmt == "pubmed-xml":
    files = ([os.path.join(path, f) for f in sorted(os.listdir(path))
              if f.endswith((".xml", ".xml.gz"))]
             if os.path.isdir(path) else [path])
    for f in files:
      yield from read_pubmed_xml(f, bad, stats)
  elif fmt == "text":
    yield from read_text_corpus(path, bad)
  elif fmt == "pubtator":
    yield from read_pubtator(path, bad)
  elif fmt == "bern2":
    yield from read_bern2_jsonl(path, bad)
  else:
    raise ValueError(f"--corpus-format {fmt!r}; expected {CORPUS_FORMATS}")
