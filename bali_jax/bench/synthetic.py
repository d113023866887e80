"""Synthetic records with the statistics of a data card, for any preset.

A benchmark of BERT-base or -large should not need a built corpus. These
sentences are random token ids, but their sizes follow a data card's
measured statistics (tokens per sentence, entities per sentence, sampled
nodes per entity, name tokens per node, linked tokens per entity), and they
go through the real packer (`bali_jax.records.packing.RowPacker`) into records of
the real schema, so padding, sentences per row and shapes are what a real
dataset of that kind gives.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bali_jax.features import Budgets

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103  # BERT uncased layout
FIRST_WORD = 999


@dataclasses.dataclass(frozen=True)
class CorpusStats:
  """Per-sentence sizes. Defaults: the open default's train view 0
  (4,000 PubMed abstracts linked to MONDO/HPO, 3 neighbours per concept)."""
  tokens_per_sentence: float = 36.9
  entities_per_sentence: float = 1.63
  nodes_per_entity: float = 3.82  # target + sampled neighbours
  name_tokens_per_node: float = 7.8  # incl. [CLS]/[SEP]
  links_per_entity: float = 3.96  # linked subtokens per entity
  source: str = "open default (built-in)"


def stats_from_card(card: dict, split: str = "train_view0") -> CorpusStats:
  """The statistics of a `data_card.json`."""
  p, b = card["packing"][split], card["options"]["budgets"]
  s, e, n = (p["mean_sentences_per_row"], p["mean_entities_per_row"],
             p["mean_nodes_per_row"])
  return CorpusStats(
      tokens_per_sentence=b["seq_len"] * (1 - p["pad_fraction_sentence_tokens"])
      / s,
      entities_per_sentence=e / s, nodes_per_entity=n / e,
      name_tokens_per_node=b["name_rows"] * b["name_len"]
      * (1 - p["pad_fraction_name_tokens"]) / n,
      links_per_entity=b["max_links"] * (1 - p["unused_link_slots"]) / e,
      source="data card")


def sized_budgets(stats: CorpusStats, base: Budgets = Budgets()) -> Budgets:
  """`base` with its name rows sized as data_prep sizes them; the GNN
  kind's keys only (no linear rows, no concept-name masking variants)."""
  ratio = (stats.entities_per_sentence * stats.nodes_per_entity
           * stats.name_tokens_per_node / stats.tokens_per_sentence)
  rows = max(1, math.ceil(ratio * base.seq_len / base.name_len))
  return dataclasses.replace(base, name_rows=rows, lin_rows=0,
                             masked_variants=False)


def _count(rng, mean: float, lo: int, hi: int) -> int:
  """An integer >= lo with about the given mean (shifted Poisson)."""
  return int(min(hi, lo + rng.poisson(max(mean - lo, 0.0))))


def _sentence(rng, st: CorpusStats, b: Budgets, vocab: int,
              num_concepts: int, num_relations: int):
  from bali_jax.records.examples import SentenceView
  n = _count(rng, st.tokens_per_sentence, 8, b.seq_len)
  ids = [CLS] + rng.integers(FIRST_WORD, vocab, n - 2).tolist() + [SEP]
  ents = _count(rng, st.entities_per_sentence, 1, max(1, (n - 2) // 2))
  per = max(1, (n - 2) // ents)  # one span per slot of the content
  links, concepts, neighbors, names = [], [], [], []
  for e in range(ents):
    span = _count(rng, st.links_per_entity, 1, per)
    start = 1 + e * per + int(rng.integers(0, per - span + 1))
    links += [(t, e) for t in range(start, start + span)]
    concepts.append(int(rng.integers(0, num_concepts)))
    k = _count(rng, st.nodes_per_entity - 1, 0, b.max_neighbors)
    k = min(k, b.max_neighbors)
    neighbors.append([(int(rng.integers(0, num_concepts)),
                       int(rng.integers(0, num_relations)))
                      for _ in range(k)])
    node_names = []
    for _ in range(k + 1):
      m = _count(rng, st.name_tokens_per_node, 3, b.max_name_tokens)
      node_names.append([CLS] + rng.integers(FIRST_WORD, vocab,
                                             m - 2).tolist() + [SEP])
    names.append(node_names)
  return SentenceView(ids, links, concepts, neighbors, names)


def synthetic_spec(budgets: Budgets, vocab_size: int,
                   num_concepts: int = 100_000, num_relations: int = 12,
                   row_means: dict | None = None) -> dict:
  """A `bali_dataset.json`-like spec for records made here."""
  return {"dataset": "synthetic", "budgets": budgets.to_dict(), "views": 1,
          "splits": {}, "vocab_size": vocab_size,
          "num_concepts": num_concepts, "num_relations": num_relations,
          "special_token_ids": [PAD, UNK, CLS, SEP, MASK],
          "mask_token_id": MASK, "pad_token_id": PAD,
          "train_row_means": row_means or {}}


def synthetic_rows(budgets: Budgets, stats: CorpusStats, rows: int,
                   vocab_size: int, seed: int = 0, num_concepts: int = 100_000,
                   num_relations: int = 12, open_rows: int = 8):
  """At least `rows` packed records (dicts of the schema's arrays) and the
  packer's statistics."""
  from bali_jax.records.packing import RowPacker
  if vocab_size <= FIRST_WORD:
    raise ValueError(f"vocab_size={vocab_size}: synthetic ids start at "
                     f"{FIRST_WORD}")
  rng = np.random.default_rng(seed)
  packer = RowPacker(budgets, open_rows)
  out = []
  while len(out) < rows:
    v = _sentence(rng, stats, budgets, vocab_size, num_concepts,
                  num_relations)
    out += list(packer.add(v))
  for i, rec in enumerate(out):
    rec["example_id"][...] = i
  return out[:rows], packer.stats


def stack(records: list[dict], drop=()) -> dict[str, np.ndarray]:
  return {k: np.stack([r[k] for r in records]) for k in records[0]
          if k not in drop}
