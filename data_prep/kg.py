"""One in-memory knowledge-graph format for every source (UMLS, OBO, JSON).

Concepts get dense node ids in insertion order; each keeps all its English
names (the preferred name first, (concept, name) pairs deduplicated) and a
typed adjacency list. Relations are named; ids follow first appearance.
Neighbour sampling (method spec 1.4) reads `neighbors`: the adjacency of a
concept, deduplicated on (neighbour, relation), stored as MRREL rows are
(direction as given; ontology readers add both directions, as UMLS does).
"""

from __future__ import annotations

import collections
import dataclasses
import os


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
    self._rel_index: dict[str, int] = {}
    self.adjacency: list[dict[tuple[int, int], None]] = []
    self.linkable: list[bool] = []  # may the dictionary linker use it?
    self.sources: list[Source] = []
    self.notes: dict = {}  # reader statistics for the data card

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

  def relation_id(self, rel: str) -> int:
    r = self._rel_index.get(rel)
    if r is None:
      r = self._rel_index[rel] = len(self.relations)
      self.relations.append(rel)
    return r

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
    """concepts.tsv (node id, concept id, preferred name), relations.tsv."""
    with open(os.path.join(out_dir, "concepts.tsv"), "w",
              encoding="utf-8") as f:
      f.write("node_id\tconcept_id\tname\n")
      for i, (cid, names) in enumerate(zip(self.concept_ids, self.names)):
        f.write(f"{i}\t{cid}\t{names[0] if names else ''}\n")
    with open(os.path.join(out_dir, "relations.tsv"), "w",
              encoding="utf-8") as f:
      f.write("relation_id\trelation\n")
      for i, r in enumerate(self.relations):
        f.write(f"{i}\t{r}\n")
