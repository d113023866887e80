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
  counts = {"mask": 0, "random": 0, "same": 0}
  drawn = []  # the random replacements
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
    counts["same"] += int(((new != MASK) & (new == orig)).sum())
    counts["random"] += int(((new != MASK) & (new != orig)).sum())
    drawn.extend(new[(new != MASK) & (new != orig)].tolist())
    sel += int(w.sum())
    cand_total += int(((bt["segment_ids"] > 0)
                       & ~np.isin(bt["input_ids"], SPECIAL)).sum())
    # unselected tokens are untouched
    changed = out["input_ids"] != bt["input_ids"]
    sel_mask = np.zeros_like(changed)
    sel_mask[np.nonzero(w)[0], pos[w]] = True
    assert not (changed & ~sel_mask).any()
  assert 0.13 < sel / cand_total < 0.17, sel / cand_total
  # 80 / 10 / 10 (a random draw equal to the original, 1 in 1000, counts
  # as unchanged); bounds about 4 sd over ~1,000 selections
  assert sel > 800, sel
  assert 0.76 < counts["mask"] / sel < 0.84, counts
  assert 0.06 < counts["random"] / sel < 0.14, counts
  assert 0.06 < counts["same"] / sel < 0.14, counts
  # random tokens come from the whole vocabulary, not a few ids
  assert all(0 <= t < VOCAB for t in drawn)
  assert len(set(drawn)) > 0.8 * len(drawn)


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


def _records(tiny_dataset, n=24):
  from data_prep.records.tfds_builder import load_split
  from bali_jax.train.input_pipeline import load_spec
  spec = load_spec(tiny_dataset)
  rows = [{k: v.numpy() for k, v in r.items()}
          for r in load_split(tiny_dataset, "train_view0").take(n)]
  return spec, {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _corrupt_records(spec, bt, seed, prob, gmlm=0):
  f = jax.jit(lambda b, r: corrupt(
      b, r, mask_id=spec["mask_token_id"],
      special_ids=spec["special_token_ids"], vocab_size=spec["vocab_size"],
      mlm_probability=0.15, max_predictions=10, name_masking_prob=prob,
      graph_mlm_predictions=gmlm))
  return jax.tree.map(np.asarray, f(bt, jax.random.key(seed)))


def _span(ids, seg, slot):
  return ids[seg == slot]


def test_concept_name_masking_as_the_authors(tiny_dataset):
  """With q = 1 every sentence masks: targets before the sentence's first
  one with < 2 sampled neighbours become [CLS] [MASK]*n [SEP] (n + 2 the
  length of a drawn synonym, so not always the name's own length), that
  target and all later ones keep their names (sticky switch-off), no
  neighbour name changes; every linearised subgraph takes its masked
  variant (name(v) nowhere in its triples)."""
  spec, bt = _records(tiny_dataset)
  mask = spec["mask_token_id"]
  out = _corrupt_records(spec, bt, 0, 1.0)
  assert not any(k.startswith("masked_") for k in out)
  masked_n = switched = other_len = 0
  for r in range(bt["input_ids"].shape[0]):
    n_nbrs = np.bincount(bt["edge_dst"][r][bt["edge_mask"][r] > 0],
                         minlength=bt["node_mask"].shape[1])
    nseg, oseg = bt["name_segment_ids"][r], out["name_segment_ids"][r]
    targets = {}
    for e in np.nonzero(bt["entity_mask"][r])[0]:
      targets.setdefault(bt["entity_segment"][r, e], []).append(e)
    is_target = set(bt["entity_node"][r][bt["entity_mask"][r] > 0])
    for node in np.nonzero(bt["node_mask"][r])[0]:
      if node not in is_target:
        np.testing.assert_array_equal(
            _span(out["name_ids"][r], oseg, node + 1),
            _span(bt["name_ids"][r], nseg, node + 1))
    for ents in targets.values():
      on = True
      for e in ents:
        node = bt["entity_node"][r, e]
        on = on and n_nbrs[node] >= 2
        before = _span(bt["name_ids"][r], nseg, node + 1)
        after = _span(out["name_ids"][r], oseg, node + 1)
        if on:
          assert after[0] == before[0] and after[-1] == before[-1]
          assert (after[1:-1] == mask).all() and len(after) >= 3
          masked_n += 1
          other_len += len(after) != len(before)
        else:
          np.testing.assert_array_equal(after, before)
          switched += 1
        lin_before = _span(bt["lin_ids"][r], bt["lin_segment_ids"][r], e + 1)
        lin_after = _span(out["lin_ids"][r], out["lin_segment_ids"][r],
                          e + 1)
        np.testing.assert_array_equal(
            lin_after, _span(bt["masked_lin_ids"][r],
                             bt["masked_lin_segment_ids"][r], e + 1))
        assert lin_after[0] == lin_before[0]  # [CLS]
        if n_nbrs[node]:
          assert (lin_after == mask).sum() > 0
  assert masked_n > 5 and switched > 5 and other_len > 0
  # q = 0: nothing changes; q = 0.5: whole sentences, about half of them
  same = _corrupt_records(spec, bt, 0, 0.0)
  for k in ("name_ids", "name_segment_ids", "lin_ids", "lin_segment_ids"):
    np.testing.assert_array_equal(same[k], bt[k])
  fired = []
  for seed in range(6):
    half = _corrupt_records(spec, bt, seed, 0.5)
    for r in range(bt["input_ids"].shape[0]):
      for s in np.unique(bt["entity_segment"][r][bt["entity_mask"][r] > 0]):
        ents = np.nonzero((bt["entity_segment"][r] == s)
                          & (bt["entity_mask"][r] > 0))[0]
        took = [np.array_equal(
            _span(half["lin_ids"][r], half["lin_segment_ids"][r], e + 1),
            _span(bt["masked_lin_ids"][r], bt["masked_lin_segment_ids"][r],
                  e + 1)) and not np.array_equal(
            _span(bt["lin_ids"][r], bt["lin_segment_ids"][r], e + 1),
            _span(bt["masked_lin_ids"][r], bt["masked_lin_segment_ids"][r],
                  e + 1)) for e in ents]
        plain = [np.array_equal(
            _span(half["lin_ids"][r], half["lin_segment_ids"][r], e + 1),
            _span(bt["lin_ids"][r], bt["lin_segment_ids"][r], e + 1))
            for e in ents]
        assert all(t or p for t, p in zip(took, plain))
        if any(t for t in took):
          assert not any(p and not t for t, p in zip(took, plain))
          fired.append(1)
        elif not all(p and not t for t, p in zip(took, plain)):
          continue  # no entity of the sentence differs between variants
        else:
          fired.append(0)
  assert 0.35 < np.mean(fired) < 0.65, np.mean(fired)


def test_name_masking_without_the_variants_is_an_error():
  """A batch without the masked variants (old records, or a pipeline made
  for a run without masking) never silently trains unmasked."""
  import pytest
  with pytest.raises(ValueError, match="masked variants"):
    _run(_batch(), 0, name_masking_prob=0.15)


def test_graph_mlm_selects_real_non_special_linear_tokens(tiny_dataset):
  spec, bt = _records(tiny_dataset)
  out = _corrupt_records(spec, bt, 3, 0.0, gmlm=9)
  b, rl, ll = bt["lin_ids"].shape
  assert out["lin_mlm_positions"].shape == (b, rl, 9)
  w = out["lin_mlm_weights"] > 0
  pos = out["lin_mlm_positions"]
  seg = np.take_along_axis(bt["lin_segment_ids"], pos, axis=2)
  orig = np.take_along_axis(bt["lin_ids"], pos, axis=2)
  assert (seg[w] > 0).all()
  assert not np.isin(orig[w], spec["special_token_ids"]).any()
  np.testing.assert_array_equal(out["lin_mlm_labels"][w], orig[w])
  real = (bt["lin_segment_ids"] > 0) & ~np.isin(bt["lin_ids"],
                                               spec["special_token_ids"])
  rate = w.sum() / real.sum()
  assert 0.08 < rate < 0.2, rate
  changed = out["lin_ids"] != bt["lin_ids"]
  sel = np.zeros_like(changed)
  for i in range(b):
    for j in range(rl):
      sel[i, j, pos[i, j][w[i, j]]] = True
  assert not (changed & ~sel).any()  # only selected tokens change
