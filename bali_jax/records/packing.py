"""Packing sentence views into fixed-shape rows (the record schema).

First-fit over a few open rows, in the order sentences arrive
(`data_prep.records.views` shuffles them): a sentence joins the first open
row where its tokens, links, entities, nodes, edges and every concept name
(first-fit over the row's name rows) all fit; when none has room, the
fullest row is emitted and a new one opened. Rows never split a sentence or
a subgraph. A sentence too big for an empty row keeps its first entities
that fit (their subgraphs whole) and is counted.
`PackStats` measures padding waste, the packed distribution and how often
a row holds two sentences of one document (against what chance gives).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from bali_jax.features import Budgets, empty_record
from bali_jax.records.examples import SentenceView


def same_document_share(doc_codes, row_sizes) -> float:
  """Share of rows holding at least two sentences of one document."""
  sizes = np.asarray(row_sizes, np.int64)
  if not len(sizes):
    return 0.0
  row = np.repeat(np.arange(len(sizes)), sizes)
  key = np.lexsort((np.asarray(doc_codes, np.int64), row))
  r, d = row[key], np.asarray(doc_codes, np.int64)[key]
  dup = (r[1:] == r[:-1]) & (d[1:] == d[:-1])
  return float(len(np.unique(r[1:][dup])) / len(sizes))


def random_same_document_share(doc_codes, row_sizes, seed: int = 0,
                               trials: int = 5) -> float:
  """The same share if the sentences were dealt to rows of the same sizes at
  random (mean of a few seeded shuffles): what chance says."""
  rng = np.random.default_rng(seed)
  codes = np.asarray(doc_codes, np.int64)
  return float(np.mean([same_document_share(rng.permutation(codes),
                                            row_sizes)
                        for _ in range(trials)]))


@dataclasses.dataclass
class PackStats:
  rows: int = 0
  sentences: int = 0
  trimmed_sentences: int = 0
  dropped_sentences: int = 0
  tokens: int = 0
  name_tokens: int = 0
  lin_tokens: int = 0
  links: int = 0
  entities: int = 0
  nodes: int = 0
  edges: int = 0
  sentences_per_row: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  doc_codes: list = dataclasses.field(default_factory=list)  # per sentence
  row_sizes: list = dataclasses.field(default_factory=list)  # in row order

  def merge(self, o: "PackStats") -> None:
    """Adds the statistics of the rows packed after these (the next chunk
    of a view)."""
    for f in dataclasses.fields(self):
      a, b = getattr(self, f.name), getattr(o, f.name)
      if isinstance(a, collections.Counter):
        a.update(b)
      elif isinstance(a, list):
        a.extend(b)
      else:
        setattr(self, f.name, a + b)

  def to_dict(self, b: Budgets) -> dict:
    r = max(self.rows, 1)
    return {
        "rows": self.rows, "sentences": self.sentences,
        "trimmed_sentences": self.trimmed_sentences,
        "dropped_sentences": self.dropped_sentences,
        "pad_fraction_sentence_tokens": 1 - self.tokens / (r * b.seq_len),
        "pad_fraction_name_tokens":
            1 - self.name_tokens / (r * b.name_rows * b.name_len),
        **({"pad_fraction_linear_tokens":
                1 - self.lin_tokens / (r * b.lin_rows * b.lin_len)}
           if b.lin_rows else {}),
        "unused_link_slots": 1 - self.links / (r * b.max_links),
        "unused_entity_slots": 1 - self.entities / (r * b.max_entities),
        "unused_node_slots": 1 - self.nodes / (r * b.max_nodes),
        "unused_edge_slots": 1 - self.edges / (r * b.max_edges),
        "mean_sentences_per_row": self.sentences / r,
        "mean_entities_per_row": self.entities / r,
        "mean_nodes_per_row": self.nodes / r,
        "rows_with_two_sentences_of_one_document": same_document_share(
            self.doc_codes, self.row_sizes),
        "same_document_rows_if_random": random_same_document_share(
            self.doc_codes, self.row_sizes),
        "sentences_per_row": dict(sorted(self.sentences_per_row.items())),
    }


def _place(fill: list[int], sizes: list[int], row_len: int):
  """First-fit positions (row, col) for spans of `sizes` tokens; None if
  one does not fit."""
  fill = list(fill)
  out = []
  for n in sizes:
    for r, used in enumerate(fill):
      if used + n <= row_len:
        out.append((r, used))
        fill[r] += n
        break
    else:
      return None
  return out


def name_sizes(v: SentenceView) -> list[int]:
  """Tokens reserved per node name: a target's slot holds the longer of its
  name and its masked variant."""
  out = []
  for j, per in enumerate(v.names):
    for k, n in enumerate(per):
      alt = v.masked_names[j] if k == 0 and v.masked_names else n
      out.append(max(len(n), len(alt)))
  return out


def lin_sizes(v: SentenceView) -> list[int]:
  if v.lin is None:
    return []
  return [max(len(a), len(b)) for a, b in zip(v.lin, v.masked_lin)]


def _needs(v: SentenceView):
  return (len(v.ids), len(v.links), len(v.concepts),
          len(v.concepts) + sum(len(n) for n in v.neighbors),
          sum(len(n) for n in v.neighbors), name_sizes(v), lin_sizes(v))


class _Row:
  """One row being filled: the record and what each budget has used."""

  def __init__(self, b: Budgets):
    self.b = b
    self.rec = empty_record(b)
    self.n_sent = self.tok = self.link = self.ent = self.node = self.edge = 0
    self.name_tokens = self.lin_tokens = 0
    self.name_fill = [0] * b.name_rows
    self.lin_fill = [0] * b.lin_rows
    self.docs: list[int] = []

  def fits(self, v: SentenceView):
    """(name places, linear places) if `v` fits in this row, else None."""
    b = self.b
    if b.masked_variants and v.masked_names is None:
      raise ValueError("the budgets want masked variants; sample the view "
                       "with a Linearizer")
    if b.lin_rows and v.lin is None:
      raise ValueError("the budgets want linear rows; sample the view with "
                       "a Linearizer that writes them")
    tok, link, ent, node, edge, names, lins = _needs(v)
    if (self.tok + tok > b.seq_len or self.link + link > b.max_links
        or self.ent + ent > b.max_entities or self.node + node > b.max_nodes
        or self.edge + edge > b.max_edges):
      return None
    name_places = _place(self.name_fill, names, b.name_len)
    if name_places is None:
      return None
    if not b.lin_rows:
      return name_places, []
    lin_places = _place(self.lin_fill, lins, b.lin_len)
    return None if lin_places is None else (name_places, lin_places)

  def fill(self) -> float:
    """Share used of the budget that binds most (tokens, name tokens or
    linear tokens)."""
    b = self.b
    used = [self.tok / b.seq_len,
            sum(self.name_fill) / (b.name_rows * b.name_len)]
    if b.lin_rows:
      used.append(sum(self.lin_fill) / (b.lin_rows * b.lin_len))
    return max(used)

  def write(self, v: SentenceView, places, doc: int):
    places, lin_places = places
    r, s = self.rec, self.n_sent + 1
    t0, e0 = self.tok, self.ent
    r["input_ids"][t0:t0 + len(v.ids)] = v.ids
    r["segment_ids"][t0:t0 + len(v.ids)] = s
    for k, (t, e) in enumerate(v.links):
      r["mention_token"][self.link + k] = t0 + t
      r["mention_entity"][self.link + k] = e0 + e
      r["mention_mask"][self.link + k] = 1
    places = iter(places)
    for j, (c, nbrs, names) in enumerate(zip(v.concepts, v.neighbors,
                                             v.names)):
      target = self.node
      r["entity_concept"][e0 + j] = c
      r["entity_node"][e0 + j] = target
      r["entity_segment"][e0 + j] = s
      r["entity_mask"][e0 + j] = 1
      nodes = [(c, None)] + list(nbrs)
      for k, ((concept, rel), name) in enumerate(zip(nodes, names)):
        slot = self.node
        r["node_concept"][slot] = concept
        r["node_mask"][slot] = 1
        row, col = next(places)
        r["name_ids"][row, col:col + len(name)] = name
        r["name_segment_ids"][row, col:col + len(name)] = slot + 1
        size = len(name)
        if self.b.masked_variants:
          alt = v.masked_names[j] if k == 0 else name
          r["masked_name_ids"][row, col:col + len(alt)] = alt
          r["masked_name_segment_ids"][row, col:col + len(alt)] = slot + 1
          size = max(size, len(alt))
        self.name_fill[row] = max(self.name_fill[row], col + size)
        if rel is not None:
          r["edge_src"][self.edge] = slot
          r["edge_dst"][self.edge] = target
          r["edge_relation"][self.edge] = rel
          r["edge_mask"][self.edge] = 1
          self.edge += 1
        self.node += 1
        self.name_tokens += len(name)
      if self.b.lin_rows:
        row, col = lin_places[j]
        e = e0 + j
        r["entity_lin"][e] = row * self.b.lin_len + col
        plain = v.lin[j]
        r["lin_ids"][row, col:col + len(plain)] = plain
        r["lin_segment_ids"][row, col:col + len(plain)] = e + 1
        size = len(plain)
        if self.b.masked_variants:
          m = v.masked_lin[j]
          r["masked_lin_ids"][row, col:col + len(m)] = m
          r["masked_lin_segment_ids"][row, col:col + len(m)] = e + 1
          size = max(size, len(m))
        self.lin_fill[row] = max(self.lin_fill[row], col + size)
        self.lin_tokens += len(plain)
    self.n_sent += 1
    self.tok += len(v.ids)
    self.link += len(v.links)
    self.ent += len(v.concepts)
    self.docs.append(doc)


class RowPacker:
  """Packs sentence views into rows, keeping `open_rows` rows open.

  Each sentence goes to the first open row it fits in; when none has room
  and all are open, the fullest row is emitted and a new one opened. With
  one open row this is the plain greedy packer; a few open rows let short
  sentences fill the gaps long ones leave (padding falls from ~18% to a
  few percent on the open default) while rows stay random mixes of the
  shuffled input.
  """

  def __init__(self, budgets: Budgets, open_rows: int = 8):
    if open_rows < 1:
      raise ValueError(f"open_rows must be >= 1, got {open_rows}")
    self.b = budgets
    self.open_rows = open_rows
    self.stats = PackStats()
    self.rows: list[_Row] = []

  def _trim(self, v: SentenceView) -> SentenceView | None:
    for keep in range(len(v.concepts) - 1, 0, -1):
      t = v.head(keep)
      if _Row(self.b).fits(t) is not None:
        return t
    return None

  def add(self, v: SentenceView, doc: int = -1):
    """Adds a sentence of document `doc` (an integer code, for the
    statistics); yields the rows it completes (0 or 1)."""
    if _Row(self.b).fits(v) is None:
      v = self._trim(v)
      if v is None:
        self.stats.dropped_sentences += 1
        return
      self.stats.trimmed_sentences += 1
    for row in self.rows:
      places = row.fits(v)
      if places is not None:
        row.write(v, places, doc)
        return
    if len(self.rows) == self.open_rows:
      full = max(range(len(self.rows)), key=lambda i: self.rows[i].fill())
      yield self._emit(self.rows.pop(full))
    row = _Row(self.b)
    row.write(v, row.fits(v), doc)
    self.rows.append(row)

  def finish(self):
    """Yields the rows still open, in the order they were opened."""
    rows, self.rows = self.rows, []
    for row in rows:
      yield self._emit(row)

  def _emit(self, row: _Row) -> dict[str, np.ndarray]:
    rec = row.rec
    rec["num_sentences"][...] = row.n_sent
    st = self.stats
    st.rows += 1
    st.sentences += row.n_sent
    st.sentences_per_row[row.n_sent] += 1
    st.doc_codes += row.docs
    st.row_sizes.append(row.n_sent)
    st.tokens += row.tok
    st.name_tokens += row.name_tokens
    st.lin_tokens += row.lin_tokens
    st.links += row.link
    st.entities += row.ent
    st.nodes += row.node
    st.edges += row.edge
    return rec
