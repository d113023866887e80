"""Mention and concept-name pooling against NumPy (packed and unpacked)."""

import jax
import numpy as np
import pytest

from bali_jax.model.pooling import mention_pool, name_pool


def test_mention_pool_matches_numpy():
  rng = np.random.default_rng(0)
  b, length, d, e = 2, 12, 5, 4
  h = rng.standard_normal((b, length, d)).astype(np.float32)
  # row 0: entity 0 <- tokens 1,2 (one mention) and 6 (second mention);
  # token 2 also links to entity 1 (overlapping / multi-concept);
  # entity 2 <- token 9; entity 3 padded. row 1: one entity, rest padding.
  tok = np.array([[1, 2, 6, 2, 9, 0, 0, 0], [3, 4, 0, 0, 0, 0, 0, 0]])
  ent = np.array([[0, 0, 0, 1, 2, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]])
  msk = np.array([[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]])
  out = np.asarray(jax.jit(mention_pool, static_argnums=4)(h, tok, ent, msk,
                                                           e))
  np.testing.assert_allclose(out[0, 0], h[0, [1, 2, 6]].mean(0), atol=1e-6)
  np.testing.assert_allclose(out[0, 1], h[0, 2], atol=1e-6)
  np.testing.assert_allclose(out[0, 2], h[0, 9], atol=1e-6)
  np.testing.assert_array_equal(out[0, 3], 0)
  np.testing.assert_allclose(out[1, 0], h[1, [3, 4]].mean(0), atol=1e-6)
  np.testing.assert_array_equal(out[1, 1:], 0)


def _names(seed=0):
  """Two name rows per example; segment id = node slot + 1."""
  rng = np.random.default_rng(seed)
  seg = np.array([[[1, 1, 1, 2, 2, 2, 2, 0],    # nodes 0, 1
                   [3, 3, 3, 3, 3, 4, 4, 4]]])  # nodes 2, 3
  h = rng.standard_normal(seg.shape + (4,)).astype(np.float32)
  return h, seg


@pytest.mark.parametrize("mode", ["mean", "mean1", "cls"])
def test_name_pool_matches_numpy(mode):
  h, seg = _names()
  out = np.asarray(name_pool(h, seg, num_nodes=6, mode=mode))
  for node in range(4):
    r, pos = np.nonzero(seg[0] == node + 1)
    states = h[0, r, pos]
    ref = {"mean": states.mean(0), "mean1": states[1:].mean(0),
           "cls": states[0]}[mode]
    np.testing.assert_allclose(out[0, node], ref, atol=1e-6)
  np.testing.assert_array_equal(out[0, 4:], 0)  # empty node slots


def test_name_pool_packed_equals_unpacked():
  h, seg = _names(1)
  packed = np.asarray(name_pool(h, seg, num_nodes=4))
  # the same names one per row (unpacked), padded to the same length
  rows, segs = [], []
  for node in range(4):
    r, pos = np.nonzero(seg[0] == node + 1)
    row = np.zeros((8, 4), np.float32)
    row[:len(pos)] = h[0, r, pos]
    s = np.zeros(8, np.int32)
    s[:len(pos)] = node + 1
    rows.append(row)
    segs.append(s)
  unpacked = np.asarray(name_pool(np.stack(rows)[None], np.stack(segs)[None],
                                  num_nodes=4))
  np.testing.assert_allclose(packed, unpacked, atol=1e-6)
