"""Ontology readers: OBO (hp.obo), cellxgene ontology JSON (MONDO, UBERON,
CL), and the HPO annotation files (disease-phenotype, gene-phenotype).

Hierarchy edges are added in both directions ("is_a" child -> parent,
"inverse_is_a" parent -> child), as MRREL stores PAR and CHD rows, so that
1-hop neighbourhoods look like the authors' UMLS graph.
"""

from __future__ import annotations

import json
import re

from bali_jax.readers.errors import BadRecords, read_lines
from bali_jax.readers.kg import KnowledgeGraph

_SYNONYM = re.compile(r'^"((?:[^"\\]|\\.)*)"\s+(EXACT|RELATED|BROAD|NARROW)')
# HPO subtrees of qualifiers rather than findings ("Severe", "Acute",
# "Left", "Autosomal dominant inheritance" ...): kept as graph nodes, never
# used by the dictionary linker.
HPO_NOT_LINKABLE_ROOTS = ("HP:0012823",  # Clinical modifier
                          "HP:0000005",  # Mode of inheritance
                          "HP:0040279",  # Frequency
                          "HP:0031797",  # Clinical course
                          "HP:0032443",  # Past medical history
                          "HP:0032223")  # Blood group
MONDO_NOT_LINKABLE_ROOTS = ("MONDO:0021125",)  # disease characteristic
# Single generic concepts (not their subtrees): the ontology roots.
NOT_LINKABLE_CONCEPTS = ("HP:0000001",  # All
                         "HP:0000118",  # Phenotypic abnormality
                         "MONDO:0000001",  # disease
                         "MONDO:0700096")  # human disease


ALL_SCOPES = ("EXACT", "RELATED", "BROAD", "NARROW")


def read_obo(path: str, kg: KnowledgeGraph, bad: BadRecords,
             synonym_scopes=("EXACT",), not_linkable=(),
             link_scopes=("EXACT",)) -> str:
  """Reads [Term] stanzas of an OBO file into `kg`; returns data-version.

  Obsolete terms are skipped (their `replaced_by`, like the `alt_id`s of
  live terms, become aliases, so a corpus citing an old id still resolves);
  names are the label and the synonyms of `synonym_scopes`, of which only
  those of `link_scopes` may link text (`kg.link_excluded`); `is_a` gives
  hierarchy edges.
  """
  version = "unknown"
  terms, cur, start = [], None, 0
  for lineno, line in read_lines(path, bad):
    if line.startswith("data-version:") and cur is None:
      version = line.split(":", 1)[1].strip()
    if line.startswith("["):
      if cur is not None:
        terms.append((start, cur))
      cur = {"_type": line.strip(), "synonym": [], "is_a": [], "alt_id": []}
      start = lineno
      continue
    if cur is None or not line.strip() or line.startswith("!"):
      continue
    key, _, value = line.partition(":")
    value = value.strip()
    if key in ("synonym", "is_a", "alt_id"):
      cur[key].append(value)
    else:
      cur.setdefault(key, value)
  if cur is not None:
    terms.append((start, cur))
  parents, aliases = [], []
  for start, t in terms:
    if t["_type"] != "[Term]":
      continue
    if "id" not in t:
      bad.report("obo-stanza-without-id", f"{path}:{start}",
                 "[Term] stanza has no id")
      continue
    if t.get("is_obsolete") == "true":
      if t.get("replaced_by"):
        aliases.append((t["id"], t["replaced_by"]))
      continue
    aliases += [(a, t["id"]) for a in t["alt_id"]]
    names = [t["name"]] if "name" in t else []
    no_link, linked = set(), set()
    for syn in t["synonym"]:
      m = _SYNONYM.match(syn)
      if m and m.group(2) in synonym_scopes:
        names.append(m.group(1).replace('\\"', '"'))
        (no_link if m.group(2) not in link_scopes else linked).add(
            names[-1])
    if not names:
      bad.report("obo-term-without-name", f"{path}:{start}",
                 f"term {t['id']} has no name")
      continue
    kg.exclude_from_linking(kg.add_concept(t["id"], names), no_link, linked)
    parents += [(t["id"], p.split("!")[0].strip()) for p in t["is_a"]]
  finish(kg, parents, aliases, not_linkable)
  return version


def finish(kg: KnowledgeGraph, parents, aliases, not_linkable) -> None:
  """Hierarchy edges both ways, aliases, then the not-linkable subtrees
  (after the edges: they are found through inverse_is_a)."""
  for child, parent in parents:
    if parent in kg.index:
      kg.add_edge(kg.index[child], kg.index[parent], "is_a")
      kg.add_edge(kg.index[parent], kg.index[child], "inverse_is_a")
  for alias, target in aliases:
    if target in kg.index:
      kg.add_alias(alias, kg.index[target])
  mark_not_linkable(kg, not_linkable)


def mark_not_linkable(kg: KnowledgeGraph, roots) -> None:
  """Marks the roots and all their descendants as not linkable, and the
  generic root concepts (alone)."""
  for c in NOT_LINKABLE_CONCEPTS:
    if c in kg.index:
      kg.linkable[kg.index[c]] = False
  inv = kg._rel_index.get("inverse_is_a")
  stack = [kg.index[r] for r in roots if r in kg.index]
  seen = set()
  while stack:
    i = stack.pop()
    if i in seen:
      continue
    seen.add(i)
    kg.linkable[i] = False
    stack += [n for n, r in kg.adjacency[i] if r == inv]


def read_cellxgene_json(path: str, kg: KnowledgeGraph, bad: BadRecords,
                        prefix: str = "MONDO:", not_linkable=()) -> None:
  """Reads a cellxgene-ontology-guide `*.json.zst` ontology into `kg`."""
  import zstandard
  try:
    with open(path, "rb") as f:
      raw = zstandard.ZstdDecompressor().stream_reader(f).read()
    data = json.loads(raw)
  except (zstandard.ZstdError, ValueError, OSError) as e:
    bad.report("unreadable-file", path, f"not a zstd-compressed JSON "
               f"ontology: {e}")
    return
  parents, aliases = [], []
  for cid, term in data.items():
    if not cid.startswith(prefix):
      continue
    if term.get("deprecated"):
      if term.get("replaced_by"):
        aliases.append((cid, term["replaced_by"]))
      continue
    label = term.get("label")
    if not label:
      bad.report("json-term-without-label", f"{path}: record {cid}",
                 "term has no label")
      continue
    kg.add_concept(cid, [label] + list(term.get("synonyms") or []))
    parents += [(cid, a) for a, dist in (term.get("ancestors") or {}).items()
                if dist == 1]
  finish(kg, parents, aliases, not_linkable)


def _name_index(kg: KnowledgeGraph, prefix: str) -> dict[str, int]:
  out = {}
  for i, (cid, names) in enumerate(zip(kg.concept_ids, kg.names)):
    if cid.startswith(prefix):
      for n in names:
        out.setdefault(n.lower(), i)
  return out


_ASPECTS = {"P": "has_phenotype", "I": "has_inheritance", "C": "has_onset"}
_INVERSE = {"has_phenotype": "phenotype_of", "has_inheritance":
            "inheritance_of", "has_onset": "onset_of",
            "gene_has_phenotype": "phenotype_of_gene",
            "gene_associated_with_disease": "disease_associated_with_gene"}


def _disease(kg, by_name, db_id, name):
  """A HPOA disease: the MONDO concept with the same name, else its own."""
  i = by_name.get(name.lower())
  if i is not None:
    kg.add_alias(db_id, i)  # genes_to_phenotype and corpora use db ids
    return i, True
  return kg.add_concept(db_id, [name]), False


def _tsv_rows(path: str, bad: BadRecords):
  """Rows of a tab-separated file with a header line, as dicts; '#' lines
  before the header are comments."""
  header = None
  for lineno, line in read_lines(path, bad):
    if not line.strip() or (header is None and line.startswith("#")):
      continue
    cols = line.split("\t")
    if header is None:
      header = cols
      continue
    if len(cols) != len(header):
      bad.report("wrong-column-count", f"{path}:{lineno}",
                 f"{len(cols)} columns, expected {len(header)}")
      continue
    yield dict(zip(header, cols))


def read_hpoa(path: str, kg: KnowledgeGraph, bad: BadRecords) -> dict:
  """phenotype.hpoa: disease -> phenotype/inheritance/onset edges.

  Diseases join MONDO by exact (case-insensitive) label/synonym match;
  unmatched ones become concepts of their own (OMIM:/ORPHA:/DECIPHER:).
  Rows qualified NOT are skipped. Returns join statistics.
  """
  by_name = _name_index(kg, "MONDO:")
  joined, own = set(), set()
  for row in _tsv_rows(path, bad):
    rel = _ASPECTS.get(row["aspect"])
    if rel is None or row["qualifier"] == "NOT":
      continue
    if row["hpo_id"] not in kg.index:
      continue
    d, matched = _disease(kg, by_name, row["database_id"], row["disease_name"])
    (joined if matched else own).add(row["database_id"])
    p = kg.index[row["hpo_id"]]
    kg.add_edge(d, p, rel)
    kg.add_edge(p, d, _INVERSE[rel])
  return {"diseases_joined_to_mondo": len(joined),
          "diseases_kept_separate": len(own)}


def read_genes_to_phenotype(path: str, kg: KnowledgeGraph,
                            bad: BadRecords) -> int:
  """genes_to_phenotype.txt: gene -> phenotype and gene -> disease edges.

  Gene symbols are short and ambiguous in text ("CAT", "MAX"), so genes are
  graph nodes only: never linked by the dictionary linker.
  """
  genes = set()
  for row in _tsv_rows(path, bad):
    if row["hpo_id"] not in kg.index:
      continue
    g = kg.add_concept(f"NCBIGene:{row['ncbi_gene_id']}", [row["gene_symbol"]],
                       linkable=False)
    genes.add(g)
    p = kg.index[row["hpo_id"]]
    kg.add_edge(g, p, "gene_has_phenotype")
    kg.add_edge(p, g, "phenotype_of_gene")
    d = kg.index.get(row.get("disease_id", ""))
    if d is not None:
      kg.add_edge(g, d, "gene_associated_with_disease")
      kg.add_edge(d, g, "disease_associated_with_gene")
  return len(genes)
