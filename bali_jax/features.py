"""The record schema: one module that data_prep writes and training reads.

Every record is one packed *row*: several whole sentences with their linked
mentions, the star subgraphs of their concepts, and the packed concept names
of every subgraph node. All sizes are fixed by `Budgets`, so the train step
compiles once. Index conventions (all within the row):

  input_ids, segment_ids (L)     sentence s occupies the tokens with segment
                                 id s+1 ([CLS] ... [SEP]); 0 is padding.
  mention_token, mention_entity  one (token position, entity slot) pair per
  mention_mask (P)               link; a token linked to two concepts appears
                                 twice.
  entity_concept (E)             global concept id of each entity slot (the
  entity_node, entity_segment,   unique concepts of each sentence); its target
  entity_mask (E)                node; its sentence's segment id; validity.
  node_concept, node_mask (N)    concept id of each node slot; validity.
  name_ids, name_segment_ids     concept names packed several per name row;
  (R, Ln)                        the segment id of a name is its node slot + 1.
  masked_name_ids,               the same rows with concept-name masking
  masked_name_segment_ids        applied to every eligible target (spec 1.4:
  (R, Ln)                        [CLS] [MASK]*(len(synonym)-2) [SEP], the
                                 synonym drawn per view, the sentence's
                                 sticky switch-off applied); each name slot
                                 is reserved for the longer of the two, so
                                 the device picks either per sentence.
  lin_ids, lin_segment_ids       linearised subgraphs (spec 1.5, format v1 or
  (Rl, Ll)                       v2, cut to max_lin_tokens), one per entity,
                                 packed; segment id = entity slot + 1.
  masked_lin_ids,                the same with concept-name masking (every
  masked_lin_segment_ids         occurrence of name(v)); same reservation.
  entity_lin (E)                 flat position (row * Ll + column) of each
                                 entity's sequence start ([CLS]).
  edge_src, edge_dst, edge_mask  star edges neighbour -> target;
  edge_relation (Em)             relation id (see the dataset's relations).
  example_id ()                  stable id of the row (order of writing).
  num_sentences ()               sentences packed in the row.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Budgets:
  """Fixed per-row sizes. Defaults suit 128-token rows of PubMed sentences.

  Sized from the open default (3.1 sentences and ~5 entities per row on
  average, with 3 neighbours per concept; its names bring ~1.3 name tokens
  per sentence token, so 3 x 64 name tokens match 128 sentence tokens).
  The packer fills a row until a budget binds, so larger values only add
  padding; data_prep sizes `name_rows` from the data by default.

  Attributes:
    seq_len: L, tokens per sentence row (a sentence is cut to this length).
    max_links: P, (token, entity) links per row.
    max_entities: E, entity slots per row.
    max_nodes: N, subgraph node slots per row.
    max_edges: Em, subgraph edges per row.
    name_rows: R, concept-name rows per row.
    name_len: Ln, tokens per concept-name row.
    max_name_tokens: a single concept name is cut to this many tokens
      (incl. [CLS]/[SEP]); must be <= name_len.
    max_neighbors: K, neighbours sampled per concept.
    lin_rows: Rl, linearised-subgraph rows per row (0: none written).
    lin_len: Ll, tokens per linearised-subgraph row.
    max_lin_tokens: a linearised subgraph is cut to this many tokens (the
      authors' lin_graph_max_length, 128 in their debug config).
    masked_variants: the record carries the concept-name-masked variants
      (masked_name_*, masked_lin_*); datasets built before they existed
      read as False.
  """
  seq_len: int = 128
  max_links: int = 48
  max_entities: int = 12
  max_nodes: int = 48
  max_edges: int = 36
  name_rows: int = 3
  name_len: int = 64
  max_name_tokens: int = 32
  max_neighbors: int = 3
  lin_rows: int = 3
  lin_len: int = 128
  max_lin_tokens: int = 128
  masked_variants: bool = True

  def __post_init__(self):
    if self.max_name_tokens > self.name_len:
      raise ValueError(f"max_name_tokens={self.max_name_tokens} > "
                       f"name_len={self.name_len}")
    if self.max_lin_tokens > self.lin_len:
      raise ValueError(f"max_lin_tokens={self.max_lin_tokens} > "
                       f"lin_len={self.lin_len}")
    if self.max_nodes < self.max_entities:
      raise ValueError("max_nodes must be >= max_entities (one target each)")
    for f in dataclasses.fields(self):
      if f.name in ("lin_rows", "masked_variants"):
        continue
      if getattr(self, f.name) < 1:
        raise ValueError(f"budget {f.name} must be >= 1")
    if self.lin_rows < 0:
      raise ValueError("budget lin_rows must be >= 0 (0: no linear rows)")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


# what a spec written before a field existed means by it
_LEGACY = {"lin_rows": 0, "masked_variants": False}


def spec_budgets(spec: dict) -> Budgets:
  """The budgets of a dataset spec (`bali_dataset.json`), older ones too."""
  return Budgets(**{**_LEGACY, **spec["budgets"]})


def tiny_budgets(**kw) -> Budgets:
  d = dict(seq_len=48, max_links=24, max_entities=8, max_nodes=24,
           max_edges=16, name_rows=6, name_len=24, max_name_tokens=12,
           max_neighbors=2, lin_rows=4, lin_len=48, max_lin_tokens=48)
  d.update(kw)
  return Budgets(**d)


def feature_shapes(b: Budgets) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """Name -> (shape, dtype) of every feature of a record."""
  i32, i64 = np.dtype(np.int32), np.dtype(np.int64)
  out = {
      "example_id": ((), i64),
      "num_sentences": ((), i32),
      "input_ids": ((b.seq_len,), i32),
      "segment_ids": ((b.seq_len,), i32),
      "mention_token": ((b.max_links,), i32),
      "mention_entity": ((b.max_links,), i32),
      "mention_mask": ((b.max_links,), i32),
      "entity_concept": ((b.max_entities,), i32),
      "entity_node": ((b.max_entities,), i32),
      "entity_segment": ((b.max_entities,), i32),
      "entity_mask": ((b.max_entities,), i32),
      "node_concept": ((b.max_nodes,), i32),
      "node_mask": ((b.max_nodes,), i32),
      "name_ids": ((b.name_rows, b.name_len), i32),
      "name_segment_ids": ((b.name_rows, b.name_len), i32),
      "edge_src": ((b.max_edges,), i32),
      "edge_dst": ((b.max_edges,), i32),
      "edge_mask": ((b.max_edges,), i32),
      "edge_relation": ((b.max_edges,), i32),
  }
  names = (b.name_rows, b.name_len)
  lin = (b.lin_rows, b.lin_len)
  if b.masked_variants:
    out.update(masked_name_ids=(names, i32),
               masked_name_segment_ids=(names, i32))
  if b.lin_rows:
    out.update(lin_ids=(lin, i32), lin_segment_ids=(lin, i32),
               entity_lin=((b.max_entities,), i32))
    if b.masked_variants:
      out.update(masked_lin_ids=(lin, i32),
                 masked_lin_segment_ids=(lin, i32))
  return out


def empty_record(b: Budgets) -> dict[str, np.ndarray]:
  return {k: np.zeros(shape, dtype) for k, (shape, dtype)
          in feature_shapes(b).items()}


def tfds_features(b: Budgets):
  """The tensorflow-datasets FeaturesDict of a record."""
  from bali_jax.tf_host import host_tfds
  tfds = host_tfds()  # heavy: only where records are built
  return tfds.features.FeaturesDict({
      k: tfds.features.Tensor(shape=shape, dtype=dtype)
      for k, (shape, dtype) in feature_shapes(b).items()})


def validate_record(rec: dict[str, np.ndarray], b: Budgets,
                    num_concepts: int | None = None,
                    vocab_size: int | None = None) -> list[str]:
  """Structural checks of one record; returns the problems found."""
  problems = []
  for k, (shape, dtype) in feature_shapes(b).items():
    if k not in rec:
      problems.append(f"missing feature {k}")
    elif rec[k].shape != shape or rec[k].dtype != dtype:
      problems.append(f"{k}: {rec[k].shape} {rec[k].dtype}, expected "
                      f"{shape} {dtype}")
  if problems:
    return problems
  seg = rec["segment_ids"]
  m = rec["mention_mask"].astype(bool)
  ent = rec["mention_entity"][m]
  tok = rec["mention_token"][m]
  emask = rec["entity_mask"].astype(bool)
  if (ent >= b.max_entities).any() or not emask[ent].all():
    problems.append("a link points at an unused entity slot")
  if (seg[tok] == 0).any():
    problems.append("a link points at a padding token")
  elif (seg[tok] != rec["entity_segment"][ent]).any():
    problems.append("a link points at an entity of another sentence")
  nmask = rec["node_mask"].astype(bool)
  if not nmask[rec["entity_node"][emask]].all():
    problems.append("an entity's target node is unused")
  em = rec["edge_mask"].astype(bool)
  src, dst = rec["edge_src"][em], rec["edge_dst"][em]
  if not (nmask[src].all() and nmask[dst].all()):
    problems.append("an edge points at an unused node")
  # nodes of a subgraph are contiguous: its target, then its neighbours
  targets = np.sort(rec["entity_node"][emask])
  owner = targets[np.searchsorted(targets, src, side="right") - 1] \
      if len(targets) else src
  if not np.isin(dst, targets).all() or (owner != dst).any() or (
      src == dst).any():
    problems.append("an edge leaves its own subgraph")
  for n in np.nonzero(nmask)[0]:
    if not (rec["name_segment_ids"] == n + 1).any():
      problems.append(f"node {n} has no name tokens")
      break
  if b.masked_variants:
    plain, masked = rec["name_segment_ids"], rec["masked_name_segment_ids"]
    if ((plain > 0) & (masked > 0) & (plain != masked)).any():
      problems.append("a masked name overlaps another node's name")
  if b.lin_rows:
    lseg = rec["lin_segment_ids"].reshape(-1)
    for e in np.nonzero(emask)[0]:
      p = rec["entity_lin"][e]
      if lseg[p] != e + 1 or (p and lseg[p - 1] == e + 1):
        problems.append(f"entity {e}: entity_lin is not the start of its "
                        "linearised subgraph")
        break
    if ((lseg > 0) & ~np.isin(lseg - 1, np.nonzero(emask)[0])).any():
      problems.append("a linearised subgraph of an unused entity slot")
  if num_concepts is not None:
    if (rec["entity_concept"][emask] >= num_concepts).any() or (
        rec["node_concept"][nmask] >= num_concepts).any():
      problems.append("a concept id is out of range")
  if vocab_size is not None and (rec["input_ids"] >= vocab_size).any():
    problems.append("a token id is out of range")
  return problems
