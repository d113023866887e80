"""On-device corruption: MLM selection and replacement, mention masking,
concept-name masking (spec 1.7, 1.8)."""

import functools

import jax
import numpy as np

from bali_jax.train.masking import corrupt
from tests.bali_batch import synthetic_batch

MASK, CLS, SEP, PAD = 4, 2, 3, 0
SPECIAL = (PAD, 1, CLS, SEP, MASK)
VOCAB = 1000


def _batch(b=2, seed=0):
  bt = synthetic_batch(VOCAB, seed=seed, b=b)
  for k in ("mlm_positions", "mlm_labels", "mlm_weights"):
    bt.pop(k)
  # [CLS] ... [SEP] around each packed sentence, as the records have
  seg = bt["segment_ids"]
  for r in range(seg.shape[0]):
    for s in set(seg[r][seg[r] > 0]):
      idx = np.nonzero(seg[r] == s)[0]
      bt["input_ids"][r, idx[0]], bt["input_ids"][r, idx[-1]] = CLS, SEP
  bt["entity_segment"] = np.zeros_like(bt["entity_mask"])
  for r in range(seg.shape[0]):
    for e in range(bt["entity_mask"].shape[1]):
      if bt["entity_mask"][r, e]:
        tok = bt["mention_token"][r][(bt["mention_entity"][r] == e)
                                     & (bt["mention_mask"][r] > 0)][0]
        bt["entity_segment"][r, e] = seg[r, tok]
  return bt


@functools.lru_cache(maxsize=None)
def _jitted(**kw):
  args = dict(mask_id=MASK, special_ids=SPECIAL, vocab_size=VOCAB,
              mlm_probability=0.15, max_predictions=12)
  args.update(kw)
  return jax.jit(lambda b, r: corrupt(b, r, **args))


def _run(bt, seed, **kw):
  f = _jitted(**kw)
  return jax.tree.map(np.asarray, f(bt, jax.random.key(seed)))


def test_mlm_selects_only_real_non_special_tokens_at_the_right_rate():
  bt = _batch(b=8)
  sel = 0
  counts = {"mask": 0, "random_or_same": 0}
  cand_total = 0
  for seed in range(60):
    out = _run(bt, seed, max_predictions=32)
    w = out["mlm_weights"].astype(bool)
    pos = out["mlm_positions"]
    rows = np.nonzero(w)[0]
    orig = bt["input_ids"][rows, pos[w]]
    assert (bt["segment_ids"][rows, pos[w]] > 0).all()
    assert not np.isin(orig, SPECIAL).any()
    np.testing.assert_array_equal(out["mlm_labels"][w], orig)
    new = out["input_ids"][rows, pos[w]]
    counts["mask"] += int((new == MASK).sum())
    counts["random_or_same"] += int((new != MASK).sum())
    sel += int(w.sum())
    cand_total += int(((bt["segment_ids"] > 0)
                       & ~np.isin(bt["input_ids"], SPECIAL)).sum())
    # unselected tokens are untouched
    changed = out["input_ids"] != bt["input_ids"]
    sel_mask = np.zeros_like(changed)
    sel_mask[np.nonzero(w)[0], pos[w]] = True
    assert not (changed & ~sel_mask).any()
  assert 0.13 < sel / cand_total < 0.17, sel / cand_total
  assert 0.76 < counts["mask"] / sel < 0.84


def test_mention_masking_masks_all_mention_tokens_and_excludes_them():
  bt = _batch()
  out = _run(bt, 0, mention_masking_prob=1.0, mlm_probability=0.5)
  for r in range(bt["input_ids"].shape[0]):
    toks = bt["mention_token"][r][bt["mention_mask"][r] > 0]
    assert (out["input_ids"][r, toks] == MASK).all()
    chosen = out["mlm_positions"][r][out["mlm_weights"][r] > 0]
    assert not np.isin(chosen, toks).any()
  none = _run(bt, 0, mention_masking_prob=0.0, mlm_probability=0.0)
  np.testing.assert_array_equal(none["input_ids"], bt["input_ids"])
  assert none["mlm_weights"].sum() == 0


def test_concept_name_masking_targets_with_two_neighbours_only():
  bt = _batch()
  out = _run(bt, 0, name_masking_prob=1.0)
  n_nbrs = np.zeros(bt["node_mask"].shape, int)
  for r in range(n_nbrs.shape[0]):
    for d, m in zip(bt["edge_dst"][r], bt["edge_mask"][r]):
      n_nbrs[r, d] += m
  for r in range(n_nbrs.shape[0]):
    targets = set(bt["entity_node"][r][bt["entity_mask"][r] > 0])
    for node in range(bt["node_mask"].shape[1]):
      where = bt["name_segment_ids"][r] == node + 1
      if not where.any():
        continue
      before, after = bt["name_ids"][r][where], out["name_ids"][r][where]
      if node in targets and n_nbrs[r, node] >= 2:
        assert after[0] == before[0] and after[-1] == before[-1]
        assert (after[1:-1] == MASK).all()
      else:
        np.testing.assert_array_equal(after, before)
  assert (out["name_ids"] != bt["name_ids"]).any()
