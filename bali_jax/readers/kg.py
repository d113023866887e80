"""One in-memory knowledge-graph format for every source (UMLS, OBO, JSON).

Concepts get dense node ids in insertion order; each keeps all its English
names (the preferred name first, (concept, name) pairs deduplicated) and a
typed adjacency list. Relations are named; ids follow first appearance. Aliases (alt_id,
replaced_by, database ids joined to a concept) resolve through `index`.

Held-out synonyms (`reserve_synonyms`): a seeded sample of synonyms is taken
out of `names` before anything reads them, so no sampled node name and no
linker entry ever uses them; they are the clean zero-shot queries of
`python -m bali_jax evaluate`.
Neighbour sampling (method spec 1.4) reads `neighbors`: the adjacency of a
concept, deduplicated on (neighbour, relation), stored as MRREL rows are
(direction as given; ontology readers add both directions, as UMLS does).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re

import numpy as np

from bali_jax.readers.errors import BadInputError

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize_name(text: str) -> str:
  """Lower-case, punctuation to spaces, whitespace collapsed: the string
  matching of SapBERT/BioSyn-style evaluation."""
  return " ".join(_NON_ALNUM.sub(" ", text.lower()).split())


@dataclasses.dataclass
class Source:
  """Provenance of one input, printed in the data card."""
  name: str
  version: str
  licence: str
  path: str
  credit: str = ""


class KnowledgeGraph:
  def __init__(self):
    self.concept_ids: list[str] = []
    self.index: dict[str, int] = {}  # concept id (or an alias) -> node
    self.names: list[list[str]] = []
    self._name_sets: list[set[str]] = []
    self.relations: list[str] = []
    # relation -> the readable name linearised subgraphs write (spec 1.5)
    self.relation_names: dict[str, str] = {}
    self._rel_index: dict[str, int] = {}
    self.adjacency: list[dict[tuple[int, int], None]] = []
    self.linkable: list[bool] = []  # may the dictionary linker use it?
    # node -> names that are concept names but never link text (OBO
    # synonyms of a scope other than EXACT)
    self.link_excluded: dict[int, set[str]] = {}
    self.sources: list[Source] = []
    self.notes: dict = {}  # reader statistics for the data card
    self.heldout: list[tuple[int, str]] | None = None  # (node, synonym)

  def __len__(self) -> int:
    return len(self.concept_ids)

  # ---------------------------------------------------------------- build
  def add_concept(self, cid: str, names=(), linkable: bool = True) -> int:
    i = self.index.get(cid)
    if i is None:
      i = len(self.concept_ids)
      self.index[cid] = i
      self.concept_ids.append(cid)
      self.names.append([])
      self._name_sets.append(set())
      self.adjacency.append({})
      self.linkable.append(linkable)
    for n in names:
      self.add_name(i, n)
    return i

  def add_name(self, i: int, name: str) -> None:
    name = " ".join(name.split())
    if name and name not in self._name_sets[i]:
      self._name_sets[i].add(name)
      self.names[i].append(name)

  def exclude_from_linking(self, i: int, no_link, linked=()) -> None:
    """Marks names of concept i as names only, never linked text (OBO
    synonyms of a non-EXACT scope); a name also given in a linking scope,
    and the preferred label, stay linkable."""
    norm = lambda names: {" ".join(n.split()) for n in names}
    out = norm(no_link) - norm(linked) - {self.names[i][0]}
    if out:
      self.link_excluded.setdefault(i, set()).update(out)

  def add_alias(self, alias: str, i: int) -> None:
    """Another id of concept i (alt_id, replaced_by, a joined db id)."""
    self.index.setdefault(alias, i)

  def reserve_synonyms(self, fraction: float, seed: int) -> int:
    """Takes a seeded `fraction` of all synonyms (of concepts with >= 2
    names) out of the graph, at most one per concept, never the preferred
    name, never a name that (normalised) also names another concept.
    Returns how many were held out; they are in `self.heldout`."""
    if self.heldout is not None:
      raise ValueError("synonyms were already reserved for this graph")
    self.heldout = []
    if fraction <= 0:
      return 0
    owners = collections.defaultdict(set)
    for i, names in enumerate(self.names):
      for n in names:
        owners[normalize_name(n)].add(i)
    eligible, total = [], 0
    for i, names in enumerate(self.names):
      if len(names) < 2:
        continue
      total += len(names) - 1
      cands = [n for n in names[1:] if owners[normalize_name(n)] == {i}]
      if cands:
        eligible.append((i, cands))
    rng = np.random.default_rng([seed, 7])
    want = min(len(eligible), int(round(fraction * total)))
    for j in sorted(rng.choice(len(eligible), size=want, replace=False)):
      i, cands = eligible[j]
      name = cands[int(rng.integers(len(cands)))]
      self.names[i].remove(name)
      self.heldout.append((i, name))
    self.notes["heldout_synonyms"] = len(self.heldout)
    return len(self.heldout)

  def relation_id(self, rel: str) -> int:
    r = self._rel_index.get(rel)
    if r is None:
      r = self._rel_index[rel] = len(self.relations)
      self.relations.append(rel)
    return r

  def display_relations(self) -> list[str]:
    """Readable relation names, by relation id: those set by
    `name_relations`, else the name with underscores as spaces (ontology
    relations such as is_a and has_phenotype read as words already)."""
    return [self.relation_names.get(r, r.replace("_", " "))
            for r in self.relations]

  def name_relations(self, path: str) -> None:
    """Readable names from a TSV of `code<TAB>name` lines (UMLS RELA codes,
    as the authors' rela2rela_name file); every relation of the graph
    must be named."""
    names = {}
    with open(path, encoding="utf-8") as f:
      for n, line in enumerate(f, 1):
        if not line.strip() or line.startswith("#"):
          continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2 or not parts[1].strip():
          raise BadInputError(f"{path}:{n}: expected 'code<TAB>name', got "
                              f"{line.rstrip()!r}")
        names[parts[0].strip()] = " ".join(parts[1].split())
    missing = [r for r in self.relations if r not in names]
    if missing:
      raise BadInputError(
          f"{path}: no readable name for {len(missing)} relation(s) of the "
          f"graph: {', '.join(missing[:20])}"
          f"{' ...' if len(missing) > 20 else ''}")
    self.relation_names = {r: names[r] for r in self.relations}

  def add_edge(self, src: int, dst: int, rel: str) -> None:
    self.adjacency[src][(dst, self.relation_id(rel))] = None

  # ---------------------------------------------------------------- read
  def neighbors(self, i: int) -> list[tuple[int, int]]:
    """Unique neighbours of concept i with the first relation seen for each
    (relation types are ignored when sampling, as in the authors' default;
    the relation id is kept as an edge feature)."""
    seen = {}
    for nbr, rel in self.adjacency[i]:
      seen.setdefault(nbr, rel)
    return list(seen.items())

  def num_edges(self) -> int:
    return sum(len(a) for a in self.adjacency)

  def edges_by_relation(self) -> dict[str, int]:
    c = collections.Counter()
    for a in self.adjacency:
      for _, r in a:
        c[self.relations[r]] += 1
    return dict(sorted(c.items(), key=lambda kv: -kv[1]))

  def num_names(self) -> int:
    return sum(len(n) for n in self.names)

  def stats(self) -> dict:
    return {"concepts": len(self), "names": self.num_names(),
            "edges": self.num_edges(),
            "edges_by_relation": self.edges_by_relation(),
            "linkable_concepts": int(sum(self.linkable)), **self.notes}

  def write_tsv(self, out_dir: str) -> None:
    """concepts.tsv (node id, concept id, preferred name), relations.tsv,
    names.tsv (every name a node may be sampled with: the evaluation
    dictionary), edges.tsv (the adjacency, in sampling order), aliases.tsv
    (other ids -> node), heldout_synonyms.tsv. `read_tsv` reads them back
    into the graph the views were sampled from."""
    with open(os.path.join(out_dir, "concepts.tsv"), "w",
              encoding="utf-8") as f:
      f.write("node_id\tconcept_id\tname\n")
      for i, (cid, names) in enumerate(zip(self.concept_ids, self.names)):
        f.write(f"{i}\t{cid}\t{names[0] if names else ''}\n")
    with open(os.path.join(out_dir, "relations.tsv"), "w",
              encoding="utf-8") as f:
      f.write("relation_id\trelation\tdisplay_name\n")
      for i, (r, shown) in enumerate(zip(self.relations,
                                         self.display_relations())):
        f.write(f"{i}\t{r}\t{shown}\n")
    with open(os.path.join(out_dir, "names.tsv"), "w", encoding="utf-8") as f:
      f.write("node_id\tname\n")
      for i, names in enumerate(self.names):
        f.writelines(f"{i}\t{n}\n" for n in names)
    with open(os.path.join(out_dir, "edges.tsv"), "w", encoding="utf-8") as f:
      f.write("src_node\trelation_id\tdst_node\n")
      for i, adj in enumerate(self.adjacency):
        f.writelines(f"{i}\t{r}\t{j}\n" for j, r in adj)
    with open(os.path.join(out_dir, "aliases.tsv"), "w",
              encoding="utf-8") as f:
      f.write("alias\tnode_id\n")
      for alias, i in self.index.items():
        if alias != self.concept_ids[i]:
          f.write(f"{alias}\t{i}\n")
    with open(os.path.join(out_dir, "heldout_synonyms.tsv"), "w",
              encoding="utf-8") as f:
      f.write("node_id\tconcept_id\tsynonym\n")
      for i, n in self.heldout or []:
        f.write(f"{i}\t{self.concept_ids[i]}\t{n}\n")


def _tsv(path: str):
  """Rows (lists of fields) of one of our own TSV files, header skipped."""
  with open(path, encoding="utf-8") as f:
    next(f)
    for line in f:
      yield line.rstrip("\n").split("\t")


def read_tsv(data_dir: str) -> KnowledgeGraph:
  """The graph a dataset was built from, as `write_tsv` wrote it: concepts,
  names (held-out synonyms already out), relations, edges in sampling
  order, aliases. Linkability is not stored (nothing samples with it)."""
  need = ("concepts.tsv", "names.tsv", "relations.tsv", "edges.tsv")
  missing = [n for n in need if not os.path.exists(os.path.join(data_dir,
                                                                n))]
  if missing:
    raise FileNotFoundError(
        f"{data_dir}: no {', '.join(missing)} (built by an older data_prep);"
        " rebuild the dataset to add views to it")
  kg = KnowledgeGraph()
  for node, cid, _ in _tsv(os.path.join(data_dir, "concepts.tsv")):
    if kg.add_concept(cid) != int(node):
      raise BadInputError(f"{data_dir}/concepts.tsv: node ids out of order at "
                       f"{cid}")
  for node, name in _tsv(os.path.join(data_dir, "names.tsv")):
    kg.add_name(int(node), name)
  for _, rel, *shown in _tsv(os.path.join(data_dir, "relations.tsv")):
    kg.relation_id(rel)
    if shown:  # older datasets: the default display names
      kg.relation_names[rel] = shown[0]
  for src, rel, dst in _tsv(os.path.join(data_dir, "edges.tsv")):
    kg.adjacency[int(src)][(int(dst), int(rel))] = None
  aliases = os.path.join(data_dir, "aliases.tsv")
  if os.path.exists(aliases):
    for alias, node in _tsv(aliases):
      kg.add_alias(alias, int(node))
  held = os.path.join(data_dir, "heldout_synonyms.tsv")
  kg.heldout = ([(int(n), syn) for n, _, syn in _tsv(held)]
                if os.path.exists(held) else [])
  return kg
