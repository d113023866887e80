"""The entity-linking dictionary: every name of every concept of a KG.

Loaded from a built dataset (`names.tsv`, `concepts.tsv`, `aliases.tsv`
written by data_prep: the names nodes are sampled with, i.e. without the
held-out synonyms) or from a knowledge graph read the way data_prep reads
one (`open-default`, an `.obo` file, a cellxgene `.json.zst` ontology).

Identical name strings are encoded once: a unique name that belongs to
several concepts gives each of them exactly the same score (an honest tie,
see linking.py), and the encoder does less work.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

# lower case, punctuation to spaces, whitespace collapsed: the string
# matching of SapBERT/BioSyn evaluation (and of held-out synonym selection)
from bali_jax import storage
from bali_jax.readers.kg import normalize_name as normalize


@dataclasses.dataclass
class Dictionary:
  """Concepts (dense node ids) and their names, deduplicated.

  Attributes:
    concept_ids: node -> concept id ("HP:0001903").
    names: the unique name strings (what gets encoded).
    pair_name, pair_concept: (P,) one entry per (name, concept) pair.
    index: concept id or alias -> node.
    source: where it came from (for the report).
  """
  concept_ids: list[str]
  names: list[str]
  pair_name: np.ndarray
  pair_concept: np.ndarray
  index: dict[str, int]
  source: str

  @property
  def num_concepts(self) -> int:
    return len(self.concept_ids)

  def normalized_names(self) -> dict[int, set[str]]:
    """node -> its names, normalised (queries matching one are 'easy')."""
    out = collections.defaultdict(set)
    for n, c in zip(self.pair_name, self.pair_concept):
      out[int(c)].add(normalize(self.names[n]))
    return out

  def concepts_with_names(self) -> np.ndarray:
    has = np.zeros(self.num_concepts, bool)
    has[self.pair_concept] = True
    return has

  def restrict(self, prefix: str) -> "Dictionary":
    """Only the names of concepts whose id starts with `prefix` (per-
    ontology scores); node ids stay the same."""
    keep = np.array([self.concept_ids[c].startswith(prefix)
                     for c in self.pair_concept], bool)
    if not keep.any():
      raise ValueError(f"--restrict {prefix!r}: no concept of {self.source} "
                       "has an id with this prefix")
    used = np.unique(self.pair_name[keep])
    remap = -np.ones(len(self.names), np.int64)
    remap[used] = np.arange(len(used))
    return dataclasses.replace(
        self, names=[self.names[i] for i in used],
        pair_name=remap[self.pair_name[keep]],
        pair_concept=self.pair_concept[keep],
        source=f"{self.source} restricted to {prefix}*")

  def stats(self) -> dict:
    return {"source": self.source, "concepts": self.num_concepts,
            "concepts_with_names": int(self.concepts_with_names().sum()),
            "unique_names": len(self.names),
            "name_concept_pairs": int(len(self.pair_name))}


def from_names(concept_ids: list[str], names_per_concept: list[list[str]],
               index: dict[str, int], source: str) -> Dictionary:
  unique: dict[str, int] = {}
  pn, pc = [], []
  for c, names in enumerate(names_per_concept):
    for n in dict.fromkeys(" ".join(x.split()) for x in names):
      if not n:
        continue
      pn.append(unique.setdefault(n, len(unique)))
      pc.append(c)
  if not pn:
    raise ValueError(f"{source}: the dictionary is empty (no concept "
                     "names)")
  index = {**{cid: i for i, cid in enumerate(concept_ids)}, **index}
  return Dictionary(concept_ids, list(unique), np.asarray(pn, np.int64),
                    np.asarray(pc, np.int64), index, source)


def _tsv(path: str):
  """(line number, columns) of a tab-separated file after its header."""
  with storage.open_file(path) as f:
    next(f, None)
    for lineno, line in enumerate(f, 2):
      line = line.rstrip("\n")
      if line:
        yield lineno, line.split("\t")


def from_dataset(data_dir: str) -> Dictionary:
  """The dictionary of a built dataset (held-out synonyms excluded)."""
  need = [storage.join(data_dir, f) for f in ("concepts.tsv", "names.tsv")]
  for p in need:
    if not storage.exists(p):
      raise FileNotFoundError(
          f"{p}: missing; this dataset predates entity-linking evaluation, "
          "rebuild it with `python -m data_prep`")
  concept_ids = []
  for lineno, cols in _tsv(need[0]):
    if len(cols) < 2 or int(cols[0]) != len(concept_ids):
      raise ValueError(f"{need[0]}:{lineno}: expected node ids 0..N-1 in "
                       "order with a concept id")
    concept_ids.append(cols[1])
  names = [[] for _ in concept_ids]
  for lineno, cols in _tsv(need[1]):
    try:
      names[int(cols[0])].append(cols[1])
    except (IndexError, ValueError) as e:
      raise ValueError(f"{need[1]}:{lineno}: not `node_id<TAB>name` with "
                       f"a known node ({e})") from e
  index = {}
  alias_path = storage.join(data_dir, "aliases.tsv")
  if storage.exists(alias_path):
    index = {cols[0]: int(cols[1]) for _, cols in _tsv(alias_path)}
  return from_names(concept_ids, names, index, storage.display(data_dir))


def from_kg(spec: str) -> Dictionary:
  """`open-default`, a `.obo` file or a cellxgene `*.json.zst` ontology,
  read with data_prep's readers (same names, same aliases)."""
  from bali_jax.readers import ontologies, sources
  from bali_jax.readers.errors import BadRecords
  from bali_jax.readers.kg import KnowledgeGraph
  if spec != "open-default" and not os.path.exists(spec):  # a user file
    raise FileNotFoundError(f"--kg {spec}: no such file")
  bad = BadRecords(skip=True)
  if spec == "open-default":
    kg = sources.open_default_graph(bad)
  elif spec.endswith(".obo"):
    kg = KnowledgeGraph()
    ontologies.read_obo(spec, kg, bad)
  elif spec.endswith(".json.zst"):
    kg = KnowledgeGraph()
    prefix = os.path.basename(spec).split("-ontology", 1)[0] + ":"
    ontologies.read_cellxgene_json(spec, kg, bad, prefix=prefix)
  else:
    raise ValueError(f"--kg {spec}: expected open-default, a .obo file or "
                     "a cellxgene *-ontology-*.json.zst file")
  aliases = {a: i for a, i in kg.index.items() if kg.concept_ids[i] != a}
  return from_names(kg.concept_ids, kg.names, aliases, spec)
