"""On-device corruption of a record batch (method spec 1.7, 1.8).

Runs inside the jitted step, so each step draws fresh masks from the step's
RNG with fixed shapes:

* mention masking: per sentence, with probability p, every token linked to
  an entity becomes [MASK] (entities are then pooled over [MASK]s) and
  carries no MLM loss;
* concept-name masking: per sentence, with probability q, the names of its
  entities' target nodes become [CLS] [MASK]... [SEP] (same length), only
  for targets with at least 2 sampled neighbours (the authors' rule; their
  sticky switch-off across a sentence's later targets is not reproduced);
* MLM: every real, non-special, not mention-masked token is selected with
  probability 0.15; selected tokens become [MASK] (80%), a random token
  (10%) or stay (10%). Up to K selections per row are kept in fixed slots
  (positions, labels, weights); K defaults to 20% of the row length, so
  overflow is rare and only drops selections.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _per_sentence_fire(rng, segment_ids, prob):
  """(B, L) bool: the token's sentence drew 'mask' (segment 0 never)."""
  b, length = segment_ids.shape
  draw = jax.random.uniform(rng, (b, length + 1)) < prob
  fire = jnp.take_along_axis(draw, segment_ids, axis=1)
  return fire & (segment_ids > 0)


def corrupt(batch: dict, rng: Array, *, mask_id: int, special_ids,
            vocab_size: int, mlm_probability: float, max_predictions: int,
            mention_masking_prob: float = 0.0,
            name_masking_prob: float = 0.0) -> dict:
  """Record batch -> model batch (adds MLM slots, masks ids)."""
  r_mention, r_name, r_sel, r_kind, r_rand = jax.random.split(rng, 5)
  ids, seg = batch["input_ids"], batch["segment_ids"]
  b, length = ids.shape
  rows = jnp.arange(b)[:, None]

  # tokens linked to an entity: scatter the link list onto (B, L)
  is_mention = jnp.zeros((b, length), bool).at[
      rows, batch["mention_token"]].max(batch["mention_mask"] > 0)
  mention_masked = is_mention & _per_sentence_fire(r_mention, seg,
                                                   mention_masking_prob)
  ids = jnp.where(mention_masked, mask_id, ids)

  # MLM selection among real, non-special, not mention-masked tokens
  special = jnp.isin(ids, jnp.asarray(special_ids, ids.dtype))
  candidate = (seg > 0) & ~special & ~mention_masked
  selected = candidate & (jax.random.uniform(r_sel, (b, length))
                          < mlm_probability)
  score = jnp.where(selected, jax.random.uniform(r_kind, (b, length)), -1.0)
  top, pos = jax.lax.top_k(score, max_predictions)  # (B, K)
  weights = (top >= 0).astype(jnp.int32)
  labels = jnp.take_along_axis(batch["input_ids"], pos, axis=1)
  kind = jax.random.uniform(jax.random.fold_in(r_kind, 1),
                            (b, max_predictions))
  random_tok = jax.random.randint(r_rand, (b, max_predictions), 0, vocab_size)
  cur = jnp.take_along_axis(ids, pos, axis=1)
  new = jnp.where(kind < 0.8, mask_id, jnp.where(kind < 0.9, random_tok, cur))
  new = jnp.where(weights > 0, new, cur)
  ids = ids.at[rows, pos].set(new)

  out = dict(batch)
  out.update(input_ids=ids, mlm_positions=pos, mlm_labels=labels,
             mlm_weights=weights)
  if name_masking_prob > 0:
    out["name_ids"] = _mask_names(batch, r_name, mask_id, name_masking_prob)
  return out


def _mask_names(batch, rng, mask_id, prob):
  """Masks the interior tokens of eligible target names."""
  name_ids, nseg = batch["name_ids"], batch["name_segment_ids"]
  b, n_nodes = batch["node_mask"].shape
  rows = jnp.arange(b)[:, None]
  emask = batch["entity_mask"] > 0
  # sentence of each target node, and its sampled-neighbour count
  node_sent = jnp.zeros((b, n_nodes), jnp.int32).at[
      rows, batch["entity_node"]].max(jnp.where(emask,
                                                batch["entity_segment"], 0))
  n_nbrs = jnp.zeros((b, n_nodes), jnp.int32).at[
      rows, batch["edge_dst"]].add(batch["edge_mask"])
  seq_len = batch["segment_ids"].shape[1]
  fire = jax.random.uniform(rng, (b, seq_len + 1)) < prob
  node_fire = (node_sent > 0) & (n_nbrs >= 2) & jnp.take_along_axis(
      fire, node_sent, axis=1)  # (B, N)
  flat = nseg.reshape(b, -1)
  tok_fire = jnp.take_along_axis(
      jnp.concatenate([jnp.zeros((b, 1), bool), node_fire], 1), flat, axis=1)
  # interior: not the first or last token of its name
  prev = jnp.pad(flat[:, :-1], ((0, 0), (1, 0)))
  nxt = jnp.pad(flat[:, 1:], ((0, 0), (0, 1)))
  interior = (flat == prev) & (flat == nxt) & (flat > 0)
  ids = jnp.where(tok_fire & interior, mask_id, name_ids.reshape(b, -1))
  return ids.reshape(name_ids.shape)
