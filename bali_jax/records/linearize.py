"""Linearised subgraphs and concept-name masking variants (spec 1.4, 1.5).

The linearised-graph kind of BALI has no GNN: the shared BERT reads each
target concept's sampled star subgraph written out as text, and g_v is its
[CLS] state. The authors' `linearize_graph` (offsets_dataset.py) writes,
with names stripped of their [CLS]/[SEP] except the v1 opening:

  v1: [CLS] name(v) [SEP] name(u1) rel(r1) name(v) [SEP] name(u2) ...
  v2: [CLS] name(u1) rel(r1) [SEP] name(v) [SEP] [SEP] name(u2) ...

cut to `max_lin_tokens`. Relation names are tokenized without special
tokens, at most 16 tokens (their rela2rela_name file; ours comes from the
dataset's relation display names).

Concept-name masking, when a sentence draws it (`sample_masking_flag`):
  * a target's name becomes [CLS] [MASK]*(n-2) [SEP], n the token length of
    a synonym drawn at random, as long as every target so far in the
    sentence has >= 2 sampled neighbours (the authors' sticky switch-off:
    the first target with fewer turns masking off for it and all later
    targets of that sentence);
  * in the linear kind every occurrence of name(v) inside the triples is
    [MASK]s as long as the (masked or plain) opening name, whether or not
    the switch-off fired: the authors pass the sentence's flag, not the
    switched-off one, to `linearize_graph`; we do the same.
The draw of the mask length happens here, per view; whether a sentence
masks is drawn on the device every step, so records carry both variants.
"""

from __future__ import annotations

import numpy as np

FORMATS = ("v1", "v2")
MAX_RELATION_TOKENS = 16


def linearize(fmt: str, head: list[int], target: list[int],
              neighbours: list[tuple[list[int], list[int]]], cls: int,
              sep: int, max_tokens: int) -> list[int]:
  """One linearised subgraph.

  Args:
    fmt: "v1" or "v2".
    head: the target's name with [CLS]/[SEP] (v1 opens with it).
    target: name(v) as it appears inside the triples (no [CLS]/[SEP]).
    neighbours: (name(u) with [CLS]/[SEP], rel(r) tokens) per sampled
      neighbour, in sampling order.
  """
  if fmt not in FORMATS:
    raise ValueError(f"linear format {fmt!r}; expected {FORMATS}")
  seq = list(head) if fmt == "v1" else [cls]
  for name, rel in neighbours:
    u = list(name[1:-1])
    if fmt == "v1":
      seq += u + list(rel) + list(target) + [sep]
    else:
      seq += u + list(rel) + [sep] + list(target) + [sep, sep]
  return seq[:max_tokens]


class Linearizer:
  """Tokens the record needs for the linear kind and for name masking."""

  def __init__(self, tokenizer, relation_names: list[str], fmt: str = "v1",
               max_tokens: int = 128, linear: bool = True):
    if fmt not in FORMATS:
      raise ValueError(f"linear format {fmt!r}; expected {FORMATS}")
    self.fmt, self.max_tokens, self.linear = fmt, max_tokens, linear
    self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    self.mask = tokenizer.mask_token_id
    self.rel = [tokenizer(n, add_special_tokens=False, truncation=True,
                          max_length=MAX_RELATION_TOKENS)["input_ids"]
                for n in relation_names]

  def masked_name(self, synonym: list[int]) -> list[int]:
    """[CLS] [MASK]*(len(synonym)-2) [SEP]."""
    return [self.cls] + [self.mask] * (len(synonym) - 2) + [self.sep]

  def sentence(self, names, neighbors, synonyms):
    """Per entity of one sentence: (masked target name, plain linear
    sequence, masked linear sequence); the sequences are None when
    linear rows are not written.

    names: entity -> [target name, neighbour names...] (with specials);
    neighbors: entity -> [(concept, relation)]; synonyms: entity -> the
    drawn synonym whose length the masked name takes.
    """
    out, on = [], True
    for per, nbrs, syn in zip(names, neighbors, synonyms):
      on = on and len(nbrs) >= 2  # sticky switch-off
      masked = self.masked_name(syn) if on else list(per[0])
      lin = mlin = None
      if self.linear:
        pairs = [(n, self.rel[r]) for n, (_, r) in zip(per[1:], nbrs)]
        lin = linearize(self.fmt, per[0], per[0][1:-1], pairs, self.cls,
                        self.sep, self.max_tokens)
        mlin = linearize(self.fmt, masked, [self.mask] * (len(masked) - 2),
                         pairs, self.cls, self.sep, self.max_tokens)
      out.append((masked, lin, mlin))
    return out


def draw_synonyms(kg, names, concepts, seed: int, view: int, serial: int):
  """Per target, the tokenized synonym whose length a masked name takes:
  uniform over the concept's names, fresh per (sentence, view)."""
  rng = np.random.default_rng([seed, serial, view, 0x4D41534B])
  return [names.get(c, int(rng.integers(len(kg.names[c]))))
          for c in concepts]
