"""Pooling token states into entity and concept-name vectors (spec 1.2-1.3).

Both are masked segment means over fixed-shape, padded inputs, written for
one example row and vmapped over the batch axis so the data mesh axis can
shard them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
NAME_POOLING = ("mean", "mean1", "cls")


def _segment_mean(values: Array, segments: Array, weights: Array,
                  num_segments: int) -> Array:
  """Weighted mean of `values` rows per segment; empty segments give 0."""
  w = weights.astype(jnp.float32)
  total = jax.ops.segment_sum(values.astype(jnp.float32) * w[:, None],
                              segments, num_segments=num_segments)
  count = jax.ops.segment_sum(w, segments, num_segments=num_segments)
  return total / jnp.maximum(count, 1.0)[:, None]


def mention_pool(hidden: Array, mention_token: Array, mention_entity: Array,
                 mention_mask: Array, num_entities: int) -> Array:
  """Entity embeddings: mean of the states of all their mention tokens.

  A (token, entity) pair per link: all subtokens of all mentions of a concept
  in a sentence point at that sentence's entity slot, and a token linked to
  several concepts appears in several pairs (it contributes to each), as the
  authors' bipartite token -> entity mean aggregation does.

  Args:
    hidden: (B, L, D) token states.
    mention_token: (B, P) token position of each link.
    mention_entity: (B, P) entity slot of each link, in [0, E).
    mention_mask: (B, P) 1 for real links.
    num_entities: E, entity slots per row.
  Returns:
    (B, E, D) float32; slots without links are 0 (and masked by the caller).
  """
  def one(h, tok, ent, m):
    return _segment_mean(h[tok], ent, m, num_entities)
  return jax.vmap(one)(hidden, mention_token, mention_entity, mention_mask)


def name_pool(hidden: Array, name_segment_ids: Array, num_nodes: int,
              mode: str = "mean") -> Array:
  """Node features: one pooled vector per concept name.

  Names are packed several per row; the segment id of a name's tokens is its
  node slot + 1 (0 is padding), so a whole example's name rows pool at once.

  Args:
    hidden: (B, R, Ln, D) token states of the B x R name rows.
    name_segment_ids: (B, R, Ln) node slot + 1 for each token, 0 for pad.
    num_nodes: N, node slots per example.
    mode: "mean" (all tokens of the name incl. [CLS]/[SEP]), "mean1"
      (without [CLS], the first token of each name) or "cls".
  Returns:
    (B, N, D) float32 node features; empty slots are 0.
  """
  if mode not in NAME_POOLING:
    raise ValueError(f"name pooling {mode!r}; expected {NAME_POOLING}")
  b, r, ln, d = hidden.shape
  seg = name_segment_ids.reshape(b, r * ln)
  h = hidden.reshape(b, r * ln, d)
  # first token of each name: a segment change inside a row, or row start
  first = jnp.concatenate(
      [jnp.ones((b, r, 1), bool),
       name_segment_ids[..., 1:] != name_segment_ids[..., :-1]], axis=-1)
  first = first.reshape(b, r * ln)
  real = seg > 0
  if mode == "mean":
    w = real
  elif mode == "mean1":
    w = real & ~first
  else:
    w = real & first
  # padding goes to slot N, out of range: segment_sum drops it
  slots = seg - 1
  return jax.vmap(lambda hh, s, ww: _segment_mean(hh, s, ww, num_nodes))(
      h, jnp.where(real, slots, num_nodes), w)
