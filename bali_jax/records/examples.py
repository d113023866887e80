"""Example building (method spec 1.4, 1.8, 2.2).

Two stages:
1. `tokenize_document`: view-independent. Tokenize each sentence with the
   target model's tokenizer (cut to `seq_len`), map mention character spans
   to subtoken positions (a subtoken belongs to a mention when its character
   span lies inside the mention's), and collect the unique concepts of the
   sentence with their (token, entity) links. Sentences left with no link
   are dropped, as the authors drop them.
2. `sample_view`: per epoch view. For each concept a star subgraph of up to K
   neighbours sampled without replacement, and one name sampled per node
   (synonym sampling); fresh in every view and, across views, without
   replacement (see its docstring). Seeded by (seed, sentence number) and
   the view, so every view is reproducible and independent of worker
   count.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bali_jax.readers.corpus import Sentence
from bali_jax.readers.errors import BadRecords
from bali_jax.readers.kg import KnowledgeGraph


def tokenize_document(sentences: list[Sentence], tokenizer, kg: KnowledgeGraph,
                      seq_len: int, bad: BadRecords) -> list[dict]:
  """Tokenized, linked sentences as compact dicts (JSON-serialisable)."""
  if not sentences:
    return []
  enc = tokenizer([s.text for s in sentences], truncation=True,
                  max_length=seq_len, return_offsets_mapping=True)
  out = []
  for s, ids, offsets in zip(sentences, enc["input_ids"],
                             enc["offset_mapping"]):
    concepts: list[int] = []
    links: dict[tuple[int, int], None] = {}
    spans = []  # (start, end, nodes) of the mentions that were kept
    for m in s.mentions:
      nodes = []
      for cid in m.concepts:
        node = kg.index.get(cid)
        if node is None:
          bad.report("concept-not-in-graph",
                     f"{s.doc_id} sentence {s.index}",
                     f"mention {s.text[m.start:m.end]!r} links to {cid}, "
                     "which is not in the graph")
          continue
        nodes.append(node)
      toks = [t for t, (a, b) in enumerate(offsets)
              if b > a and a >= m.start and b <= m.end]
      if not toks or not nodes:
        continue  # cut off by truncation, or no known concept
      spans.append([m.start, m.end, nodes])
      for node in nodes:
        if node not in concepts:
          concepts.append(node)
        e = concepts.index(node)
        for t in toks:
          links[(t, e)] = None
    if links:
      out.append({"doc": s.doc_id, "sent": s.index, "ids": list(ids),
                  "concepts": concepts, "links": [list(l) for l in links],
                  "text": s.text, "mentions": spans})
  return out


@dataclasses.dataclass
class SentenceView:
  """A sentence with its sampled subgraphs and names, ready to pack."""
  ids: list[int]
  links: list[tuple[int, int]]  # (token, entity)
  concepts: list[int]  # entity -> concept node id
  neighbors: list[list[tuple[int, int]]]  # entity -> [(concept, relation)]
  names: list[list[list[int]]]  # entity -> [target name, neighbour names..]
  # with concept-name masking variants (bali_jax.records.linearize): entity -> the
  # target's masked-variant name; entity -> linearised subgraph, plain and
  # masked (None: not written)
  masked_names: list[list[int]] | None = None
  lin: list[list[int]] | None = None
  masked_lin: list[list[int]] | None = None

  def head(self, keep: int) -> "SentenceView":
    """The first `keep` entities and their links (for rows too small)."""
    cut = lambda x: None if x is None else x[:keep]
    return SentenceView(self.ids, [l for l in self.links if l[1] < keep],
                        self.concepts[:keep], self.neighbors[:keep],
                        self.names[:keep], cut(self.masked_names),
                        cut(self.lin), cut(self.masked_lin))


class NameTokens:
  """Tokenized concept names, cut to `max_tokens` incl. [CLS]/[SEP]; cached
  per (concept, name) so repeated samples are tokenized once."""

  def __init__(self, tokenizer, kg: KnowledgeGraph, max_tokens: int):
    self.tokenizer, self.kg, self.max_tokens = tokenizer, kg, max_tokens
    self.cache: dict[tuple[int, int], list[int]] = {}

  def get(self, concept: int, name_idx: int) -> list[int]:
    key = (concept, name_idx)
    if key not in self.cache:
      self.cache[key] = self.tokenizer(
          self.kg.names[concept][name_idx], truncation=True,
          max_length=self.max_tokens)["input_ids"]
    return self.cache[key]


def _coprime_step(n: int, k: int) -> int:
  """The smallest step >= k that is coprime with n: windows starting at
  v * step (mod n) visit every start before one repeats."""
  step = max(k, 1)
  while math.gcd(step, n) != 1:
    step += 1
  return step


def sample_view(sent: dict, kg: KnowledgeGraph, names: NameTokens,
                max_neighbors: int, seed: int, view: int,
                serial: int, linearizer=None) -> SentenceView:
  """Neighbours and synonyms of one sentence in one view.

  Within a view each draw is uniform, as the authors' (K neighbours without
  replacement, one name per node). Across views the draws are without
  replacement: from a view-independent RNG seeded by (seed, sentence
  number), each entity gets a random cyclic order of its neighbours and a
  random name offset per node; view v takes the K neighbours starting at
  v * step in that order (step coprime with their number) and name
  (offset + v) mod names. So an entity sees every neighbour window and
  every name once before any repeats, and a sentence's sample repeats only
  when every part of it has run out of alternatives.

  With a `linearize.Linearizer`, the view also carries the concept-name
  masking variants (a synonym drawn per target and view for the mask
  length, from an RNG of its own so the samples above are unchanged) and,
  if it writes them, the linearised subgraphs.
  """
  rng = np.random.default_rng([seed, serial])
  neighbors, name_ids = [], []
  for c in sent["concepts"]:
    nbr_dst, nbr_rel = kg.neighbor_arrays(c)  # arrays: none per neighbour
    n = len(nbr_dst)
    order = rng.permutation(n)
    offsets = rng.integers(0, 2 ** 31, size=n)
    own = int(rng.integers(0, 2 ** 31))
    if n <= max_neighbors:
      positions = list(range(n))
    else:
      start = view * _coprime_step(n, max_neighbors)
      positions = [(start + i) % n for i in range(max_neighbors)]
    picked = [(int(nbr_dst[order[p]]), int(nbr_rel[order[p]]))
              for p in positions]
    neighbors.append(picked)
    ids = [names.get(c, (own + view) % len(kg.names[c]))]
    for p, (u, _) in zip(positions, picked):
      ids.append(names.get(u, int(offsets[p] + view) % len(kg.names[u])))
    name_ids.append(ids)
  view_ = SentenceView(sent["ids"], [tuple(l) for l in sent["links"]],
                       sent["concepts"], neighbors, name_ids)
  if linearizer is not None:
    from bali_jax.records.linearize import draw_synonyms
    syn = draw_synonyms(kg, names, sent["concepts"], seed, view, serial)
    parts = linearizer.sentence(name_ids, neighbors, syn)
    view_.masked_names = [m for m, _, _ in parts]
    if linearizer.linear:
      view_.lin = [l for _, l, _ in parts]
      view_.masked_lin = [m for _, _, m in parts]
  return view_
