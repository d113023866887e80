"""Linearised subgraphs and concept-name masking variants (spec 1.4, 1.5,
1.8) against NumPy references written from the spec text."""

import collections

import numpy as np
import pytest

from bali_jax.open_data import starter_model_dir
from bali_jax.hf.tokenizer import load_tokenizer
from bali_jax.readers.errors import BadInputError
from bali_jax.records.examples import NameTokens
from bali_jax.readers.kg import KnowledgeGraph
from bali_jax.records.linearize import Linearizer, draw_synonyms

CLS, SEP, MASK = 101, 102, 103


@pytest.fixture(scope="module")
def tok():
  return load_tokenizer(starter_model_dir())


def ref_linear(fmt, v, nbrs, max_len, mask_v=False, masked_len=None):
  """The spec's formats, token for token. v and the neighbour names are
  interior tokens (no [CLS]/[SEP]); nbrs = [(name(u), rela_name(r))].
  mask_v: every occurrence of name(v) is [MASK]s (masked_len of them, the
  drawn synonym's interior length, where the spec masks the opening)."""
  occ = np.full(masked_len if masked_len is not None else len(v), MASK) \
      if mask_v else np.asarray(v)
  parts = [np.array([CLS]), occ, np.array([SEP])] if fmt == "v1" else \
      [np.array([CLS])]
  for u, r in nbrs:
    if fmt == "v1":  # name(u) rela_name(r) name(v) [SEP]
      parts += [np.asarray(u), np.asarray(r), occ, np.array([SEP])]
    else:  # name(u) rela_name(r) [SEP] name(v) [SEP] [SEP]
      parts += [np.asarray(u), np.asarray(r), np.array([SEP]), occ,
                np.array([SEP, SEP])]
  return np.concatenate(parts)[:max_len].tolist()


def _subgraph():
  v = [9001, 9002, 9003]
  nbrs = [([3001, 3002], "is a"), ([4001], "has phenotype"),
          ([5001, 5002, 5003, 5004], "part of")]
  return v, nbrs


@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize("max_len", [128, 23, 9])
def test_linear_sequences_match_the_spec_formats(tok, fmt, max_len):
  v, nbrs = _subgraph()
  rels = ["is a", "has phenotype", "part of"]
  lin = Linearizer(tok, rels, fmt, max_len)
  rel_tok = {r: tok(r, add_special_tokens=False)["input_ids"] for r in rels}
  names = [[CLS] + v + [SEP]] + [[CLS] + u + [SEP] for u, _ in nbrs]
  neighbors = [(10 + i, i) for i in range(3)]
  syn = [CLS, 7, 7, 7, 7, 7, SEP]  # a 5-token synonym for the mask length
  (masked, plain, mplain), = lin.sentence([names], [neighbors], [syn])
  want = ref_linear(fmt, v, [(u, rel_tok[r]) for u, r in nbrs], max_len)
  assert plain == want
  assert len(plain) == min(max_len, len(ref_linear(fmt, v, [
      (u, rel_tok[r]) for u, r in nbrs], 10_000)))
  # concept-name masking: the opening takes the synonym's length, every
  # occurrence of name(v) is [MASK]s, nothing else changes
  assert masked == [CLS] + [MASK] * 5 + [SEP]
  assert mplain == ref_linear(fmt, v, [(u, rel_tok[r]) for u, r in nbrs],
                              max_len, mask_v=True, masked_len=5)
  assert not set(v) & set(mplain)


def test_sticky_switch_off_and_triples_masked_after_it(tok):
  """Targets with 3, 1, 3 sampled neighbours: the first is masked, the
  second switches masking off for itself and the third (the authors'
  sticky flag); inside the triples name(v) is masked for every target
  (their linearize_graph gets the sentence's flag), with the opening's
  length."""
  lin = Linearizer(tok, ["is a"], "v1", 128)
  names, neighbors = [], []
  for e, k in enumerate([3, 1, 3]):
    names.append([[CLS, 2000 + e, 2100 + e, SEP]]
                 + [[CLS, 3000 + e * 10 + j, SEP] for j in range(k)])
    neighbors.append([(100 + j, 0) for j in range(k)])
  syn = [[CLS] + [7] * 6 + [SEP]] * 3
  out = lin.sentence(names, neighbors, syn)
  assert out[0][0] == [CLS] + [MASK] * 6 + [SEP]
  assert out[1][0] == names[1][0] and out[2][0] == names[2][0]
  for e, (head, plain, masked) in enumerate(out):
    assert masked[:len(head)] == head  # v1 opens with the (masked) name
    assert 2000 + e not in masked[len(head):]  # triples: always [MASK]
    assert plain.count(2000 + e) == 1 + len(neighbors[e])
    n_mask = len(head) - 2
    assert masked.count(MASK) == (n_mask if e == 0 else 0) + \
        n_mask * len(neighbors[e])
  # zero neighbours: a one-node subgraph, never masked
  (head, plain, masked), = lin.sentence([[names[0][0]]], [[]], [syn[0]])
  assert head == plain == masked == names[0][0]


def test_mask_run_lengths_follow_the_synonym_lengths(tok):
  """Over many (sentence, view) draws the [MASK] run length of a target is
  the token length of a uniformly drawn synonym (minus [CLS]/[SEP])."""
  kg = KnowledgeGraph()
  syns = ["fever", "high body temperature", "pyrexia of unknown origin",
          "elevated temperature"]
  c = kg.add_concept("HP:1", syns)
  names = NameTokens(tok, kg, 32)
  lin = Linearizer(tok, [], "v1", 128, linear=False)
  lengths = [len(names.get(c, i)) - 2 for i in range(len(syns))]
  want = collections.Counter(lengths)
  draws = collections.Counter()
  n = 4000
  for serial in range(n // 4):
    for view in range(4):
      syn, = draw_synonyms(kg, names, [c], 29, view, serial)
      head = lin.masked_name(syn)
      draws[head.count(MASK)] += 1
  for length, k in want.items():
    p = k / len(syns)
    sd = np.sqrt(n * p * (1 - p))
    assert abs(draws[length] - n * p) < 4 * sd, (draws, want)
  assert set(draws) == set(want)


def test_relation_names_from_a_tsv_and_missing_codes_named(tmp_path):
  kg = KnowledgeGraph()
  a, b = kg.add_concept("C1", ["x"]), kg.add_concept("C2", ["y"])
  kg.add_edge(a, b, "isa")
  kg.add_edge(b, a, "may_treat")
  kg.add_edge(b, a, "RO")
  assert kg.display_relations() == ["isa", "may treat", "RO"]
  path = tmp_path / "rela.tsv"
  path.write_text("# code\tname\nisa\tis a\nmay_treat\tmay treat\n")
  with pytest.raises(BadInputError, match=r"rela.tsv: no readable name for "
                     r"1 relation\(s\) of the graph: RO"):
    kg.name_relations(str(path))
  path.write_text("isa\tis a\nmay_treat\tmay  treat\nRO\tother relation\n"
                  "unused\tnever seen\n")
  kg.name_relations(str(path))
  assert kg.display_relations() == ["is a", "may treat", "other relation"]
  path.write_text("isa\n")
  with pytest.raises(BadInputError, match=r"rela.tsv:1: expected"):
    kg.name_relations(str(path))
