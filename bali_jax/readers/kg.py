"""One in-memory knowledge-graph format for every source (UMLS, OBO, JSON).

Concepts get dense node ids in insertion order; each keeps all its English
names (the preferred name first, (concept, name) pairs deduplicated) and a
typed adjacency list. Relations are named; ids follow first appearance. Aliases (alt_id,
replaced_by, database ids joined to a concept) resolve through `index`.

Edges are held as flat arrays, never as per-edge Python objects: a graph of
UMLS size has tens of millions of MRREL rows, and a dict of (node,
relation) tuples per concept cost about 140 bytes an edge (175 MiB for the
open default's 1.2M edges). `add_edge` appends to three int32 columns;
the first read compacts them into CSR form (`edge_arrays`): per source,
the unique (neighbour, relation) pairs in the order first seen, exactly
the order the dict kept, so sampling and records are unchanged.

Held-out synonyms (`reserve_synonyms`): a seeded sample of synonyms is taken
out of `names` before anything reads them, so no sampled node name and no
linker entry ever uses them; they are the clean zero-shot queries of
`python -m bali_jax evaluate`.
Neighbour sampling (method spec 1.4) reads `neighbors`: the adjacency of a
concept, deduplicated on (neighbour, relation), stored as MRREL rows are
(direction as given; ontology readers add both directions, as UMLS does).
"""

from __future__ import annotations

import array
import dataclasses
import os
import re

import numpy as np

from bali_jax.readers.errors import BadInputError
from bali_jax.readers.graph_edges import Adjacency, CsrEdges

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize_name(text: str) -> str:
  """Lower-case, punctuation to spaces, whitespace collapsed: the string
  matching of SapBERT/BioSyn-style evaluation."""
  return " ".join(_NON_ALNUM.sub(" ", text.lower()).split())


# a concept's names are deduplicated by scanning its list below this many
# names, by a set from there on (most concepts have a few names; a set per
# concept cost more than the names)
_NAME_SET_FROM = 16


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
    self._name_sets: dict[int, set[str]] = {}  # only for long name lists
    self.relations: list[str] = []
    # relation -> the readable name linearised subgraphs write (spec 1.5)
    self.relation_names: dict[str, str] = {}
    self._rel_index: dict[str, int] = {}
    # edges added since the last compaction: (src, dst, relation) columns
    self._pending = tuple(array.array("i") for _ in range(3))
    self._csr: CsrEdges | None = None
    self.linkable: list[bool] = []  # may the dictionary linker use it?
    # node -> names that are concept names but never link text (OBO
    # synonyms of a scope other than EXACT)
    self.link_excluded: dict[int, set[str]] = {}
    self.sources: list[Source] = []
    self.notes: dict = {}  # reader statistics for the data card
    self.heldout: list[tuple[int, str]] | None = None  # (node, synonym)
    # set by `map_to`: pickles carry this directory, not the large parts
    self._mapped: tuple[str, tuple] | None = None

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
      self.linkable.append(linkable)
    for n in names:
      self.add_name(i, n)
    return i

  def add_name(self, i: int, name: str) -> None:
    name = " ".join(name.split())
    names = self.names[i]
    if not name:
      return
    if len(names) < _NAME_SET_FROM:  # short lists: a scan is cheaper
      if name not in names:
        names.append(name)
      return
    seen = self._name_sets.get(i)
    if seen is None:
      seen = self._name_sets[i] = set(names)
    if name not in seen:
      seen.add(name)
      names.append(name)

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
    # normalised name -> its one owner, or -1 when several concepts have
    # it (an int per name: a set per name cost 3 GiB at UMLS size)
    owner: dict[str, int] = {}
    for i, names in enumerate(self.names):
      for n in names:
        k = normalize_name(n)
        o = owner.setdefault(k, i)
        if o != i and o != -1:
          owner[k] = -1
    eligible, total = [], 0
    for i, names in enumerate(self.names):
      if len(names) < 2:
        continue
      total += len(names) - 1
      cands = [n for n in names[1:] if owner[normalize_name(n)] == i]
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
    self.add_edge_id(src, dst, self.relation_id(rel))

  def add_edge_id(self, src: int, dst: int, rel: int) -> None:
    """An edge by relation id; a repeated (src, dst, rel) counts once."""
    s, d, r = self._pending
    s.append(src)
    d.append(dst)
    r.append(rel)

  # ------------------------------------------------------ worker copies
  def map_to(self, directory: str) -> None:
    """Writes the concept index, names and edges as flat files under
    `directory` (`graph_files`); from then on a pickle of this graph
    carries the directory, and unpickling maps the files. What Beam
    workers receive instead of the graph as Python objects."""
    from bali_jax.readers import graph_files
    graph_files.save(self, directory)
    self._mapped = (directory, self._shape())

  def _shape(self) -> tuple:
    return len(self), self.num_names(), self.num_edges(), len(self.index)

  def __getstate__(self):
    state = self.__dict__.copy()
    if self._mapped is not None:
      from bali_jax.readers import graph_files
      if self._shape() != self._mapped[1]:
        raise ValueError("the graph changed after map_to: its files at "
                         f"{self._mapped[0]} are stale")
      for f in graph_files.mapped_fields():
        state.pop(f)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    if self._mapped is not None:
      from bali_jax.readers import graph_files
      m = graph_files.load(self._mapped[0])
      self.concept_ids, self.index = m["concept_ids"], m["index"]
      self.names, self.linkable = m["names"], m["linkable"]
      self._csr = CsrEdges(**m["edges"])
      self._pending = tuple(array.array("i") for _ in range(3))
      self._name_sets = {}

  # ---------------------------------------------------------------- read
  def edge_arrays(self) -> CsrEdges:
    """The adjacency in CSR form (compacting edges added since)."""
    if self._csr is None or len(self._pending[0]) or \
        len(self._csr.ptr) != len(self) + 1:
      self._csr = CsrEdges.build(self._csr, self._pending, len(self),
                                 max(len(self.relations), 1))
      self._pending = tuple(array.array("i") for _ in range(3))
    return self._csr

  @property
  def adjacency(self) -> Adjacency:
    """adjacency[i]: concept i's (neighbour, relation) pairs, unique, in
    the order first added."""
    return Adjacency(self.edge_arrays())

  def neighbors(self, i: int) -> list[tuple[int, int]]:
    """Unique neighbours of concept i with the first relation seen for each
    (relation types are ignored when sampling, as in the authors' default;
    the relation id is kept as an edge feature)."""
    dst, rel = self.neighbor_arrays(i)
    return list(zip(dst.tolist(), rel.tolist()))

  def neighbor_arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    """`neighbors(i)` as two int32 arrays (neighbour, relation): what the
    sampler indexes, with no per-neighbour object for hub concepts."""
    e = self.edge_arrays()
    a, b = e.nbr_ptr[i], e.nbr_ptr[i + 1]
    return e.nbr_dst[a:b], e.nbr_rel[a:b]

  def num_edges(self) -> int:
    return len(self.edge_arrays().dst)

  def edges_by_relation(self) -> dict[str, int]:
    counts = np.bincount(self.edge_arrays().rel,
                         minlength=len(self.relations))
    c = {self.relations[r]: int(n) for r, n in enumerate(counts) if n}
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
      e = self.edge_arrays()
      src = np.repeat(np.arange(len(self)), np.diff(e.ptr))
      for a in range(0, len(src), 1 << 20):  # bounded text per write
        b = a + (1 << 20)
        f.writelines(f"{i}\t{r}\t{j}\n" for i, r, j in zip(
            src[a:b].tolist(), e.rel[a:b].tolist(), e.dst[a:b].tolist()))
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
    kg.add_edge_id(int(src), int(dst), int(rel))
  aliases = os.path.join(data_dir, "aliases.tsv")
  if os.path.exists(aliases):
    for alias, node in _tsv(aliases):
      kg.add_alias(alias, int(node))
  held = os.path.join(data_dir, "heldout_synonyms.tsv")
  kg.heldout = ([(int(n), syn) for n, _, syn in _tsv(held)]
                if os.path.exists(held) else [])
  return kg
