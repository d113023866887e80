"""A small, consistent BALI batch built by hand (the data_prep stand-in for
model tests): packed sentences with linked mentions, star subgraphs, packed
concept names, MLM selections."""

from __future__ import annotations

import numpy as np


def synthetic_batch(vocab: int, seed: int = 0, b: int = 2, length: int = 32,
                    k: int = 6, p: int = 10, e: int = 4, r: int = 3,
                    ln: int = 12, n: int = 12, em: int = 8,
                    num_concepts: int = 5) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  z = lambda *s: np.zeros(s, np.int32)
  bt = dict(input_ids=z(b, length), segment_ids=z(b, length),
            mlm_positions=z(b, k), mlm_labels=z(b, k), mlm_weights=z(b, k),
            mention_token=z(b, p), mention_entity=z(b, p), mention_mask=z(b, p),
            entity_concept=z(b, e), entity_node=z(b, e), entity_mask=z(b, e),
            name_ids=z(b, r, ln), name_segment_ids=z(b, r, ln),
            node_mask=z(b, n), edge_src=z(b, em), edge_dst=z(b, em),
            edge_mask=z(b, em))
  for row in range(b):
    # two sentences of 10 and 8 tokens packed into the row
    start = 0
    sent_spans = []
    for sid, sl in enumerate((10, 8)):
      bt["input_ids"][row, start:start + sl] = rng.integers(5, vocab, sl)
      bt["segment_ids"][row, start:start + sl] = sid + 1
      sent_spans.append((start, start + sl))
      start += sl
    n_ent = 3 if row == 0 else 2
    link = node = 0
    names_row, names_col = 0, 0
    edges = 0
    for ent in range(n_ent):
      s0, s1 = sent_spans[ent % 2]
      toks = rng.choice(np.arange(s0 + 1, s1 - 1), size=2, replace=False)
      for t in toks:
        bt["mention_token"][row, link] = t
        bt["mention_entity"][row, link] = ent
        bt["mention_mask"][row, link] = 1
        link += 1
      bt["entity_concept"][row, ent] = rng.integers(0, num_concepts)
      bt["entity_mask"][row, ent] = 1
      target = node
      bt["entity_node"][row, ent] = target
      for j in range(1 + ent % 3):  # target + 0..2 neighbours
        name_len = int(rng.integers(3, 6))
        if names_col + name_len > ln:
          names_row, names_col = names_row + 1, 0
        sl = slice(names_col, names_col + name_len)
        bt["name_ids"][row, names_row, sl] = rng.integers(5, vocab, name_len)
        bt["name_segment_ids"][row, names_row, sl] = node + 1
        names_col += name_len
        bt["node_mask"][row, node] = 1
        if j:
          bt["edge_src"][row, edges] = node
          bt["edge_dst"][row, edges] = target
          bt["edge_mask"][row, edges] = 1
          edges += 1
        node += 1
    real = np.nonzero(bt["segment_ids"][row])[0]
    pos = rng.choice(real, size=k - 1, replace=False)
    bt["mlm_positions"][row, :k - 1] = pos
    bt["mlm_labels"][row, :k - 1] = bt["input_ids"][row, pos]
    bt["mlm_weights"][row, :k - 1] = 1
  return bt
