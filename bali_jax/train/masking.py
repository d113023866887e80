"""On-device corruption of a record batch (method spec 1.7, 1.8).

Runs inside the jitted step, so each step draws fresh masks from the step's
RNG with fixed shapes:

* mention masking: per sentence, with probability p, every token linked to
  an entity becomes [MASK] (entities are then pooled over [MASK]s) and
  carries no MLM loss;
* concept-name masking: per sentence, with probability q, its targets take
  the masked variant the record carries (bali_jax.records.linearize: the [MASK]
  run as long as a synonym drawn per view, the sticky switch-off at the
  first target with < 2 sampled neighbours, every occurrence of name(v) in
  a linearised subgraph); the draw is per step, the variants per view;
* MLM: every real, non-special, not mention-masked token is selected with
  probability 0.15; selected tokens become [MASK] (80%), a random token
  (10%) or stay (10%). Up to K selections per row are kept in fixed slots
  (positions, labels, weights); K defaults to 20% of the row length, so
  overflow is rare and only drops selections.
* G-MLM (`model.graph_mlm`): the same MLM selection over the linearised
  subgraph rows, K = 20% of a row per row.
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


def _mlm_slots(orig, ids, candidate, rngs, *, mask_id, vocab_size,
               mlm_probability, max_predictions):
  """BERT MLM over rows (..., L): selects candidates with probability p,
  keeps up to K per row in fixed slots, replaces 80/10/10.
  rngs: (selection, kind, random token) keys."""
  r_sel, r_kind, r_rand = rngs
  lead, length = ids.shape[:-1], ids.shape[-1]
  ids2, orig2 = ids.reshape(-1, length), orig.reshape(-1, length)
  cand = candidate.reshape(-1, length)
  n = ids2.shape[0]
  rows = jnp.arange(n)[:, None]
  selected = cand & (jax.random.uniform(r_sel, (n, length)) < mlm_probability)
  score = jnp.where(selected, jax.random.uniform(r_kind, (n, length)), -1.0)
  top, pos = jax.lax.top_k(score, max_predictions)  # (n, K)
  weights = (top >= 0).astype(jnp.int32)
  labels = jnp.take_along_axis(orig2, pos, axis=1)
  kind = jax.random.uniform(jax.random.fold_in(r_kind, 1),
                            (n, max_predictions))
  random_tok = jax.random.randint(r_rand, (n, max_predictions), 0,
                                  vocab_size)
  cur = jnp.take_along_axis(ids2, pos, axis=1)
  new = jnp.where(kind < 0.8, mask_id, jnp.where(kind < 0.9, random_tok, cur))
  new = jnp.where(weights > 0, new, cur)
  ids2 = ids2.at[rows, pos].set(new)
  shape = lead + (max_predictions,)
  return (ids2.reshape(ids.shape), pos.reshape(shape), labels.reshape(shape),
          weights.reshape(shape))


def corrupt(batch: dict, rng: Array, *, mask_id: int, special_ids,
            vocab_size: int, mlm_probability: float, max_predictions: int,
            mention_masking_prob: float = 0.0,
            name_masking_prob: float = 0.0,
            graph_mlm_predictions: int = 0) -> dict:
  """Record batch -> model batch (adds MLM slots, masks ids)."""
  r_mention, r_name, r_sel, r_kind, r_rand = jax.random.split(rng, 5)
  ids, seg = batch["input_ids"], batch["segment_ids"]
  b, length = ids.shape
  rows = jnp.arange(b)[:, None]
  special_ids = jnp.asarray(special_ids, ids.dtype)

  # tokens linked to an entity: scatter the link list onto (B, L)
  is_mention = jnp.zeros((b, length), bool).at[
      rows, batch["mention_token"]].max(batch["mention_mask"] > 0)
  mention_masked = is_mention & _per_sentence_fire(r_mention, seg,
                                                   mention_masking_prob)
  ids = jnp.where(mention_masked, mask_id, ids)

  # MLM selection among real, non-special, not mention-masked tokens
  candidate = (seg > 0) & ~jnp.isin(ids, special_ids) & ~mention_masked
  ids, pos, labels, weights = _mlm_slots(
      batch["input_ids"], ids, candidate, (r_sel, r_kind, r_rand),
      mask_id=mask_id,
      vocab_size=vocab_size, mlm_probability=mlm_probability,
      max_predictions=max_predictions)

  out = {k: v for k, v in batch.items() if not k.startswith("masked_")}
  out.update(input_ids=ids, mlm_positions=pos, mlm_labels=labels,
             mlm_weights=weights)
  if name_masking_prob > 0:
    fire = jax.random.uniform(r_name, (b, length + 1)) < name_masking_prob
    out.update(_mask_names(batch, fire))
  if graph_mlm_predictions:
    lids, lseg = out["lin_ids"], out["lin_segment_ids"]
    cand = (lseg > 0) & ~jnp.isin(lids, special_ids)
    lids, lpos, llab, lw = _mlm_slots(
        lids, lids, cand, jax.random.split(jax.random.fold_in(rng, 1), 3),
        mask_id=mask_id, vocab_size=vocab_size,
        mlm_probability=mlm_probability,
        max_predictions=graph_mlm_predictions)
    out.update(lin_ids=lids, lin_mlm_positions=lpos, lin_mlm_labels=llab,
               lin_mlm_weights=lw)
  return out


def _pick(fire_slot, plain_ids, plain_seg, masked_ids, masked_seg):
  """Per token, the masked variant where the owning slot fires. A slot's
  tokens are the union of both variants' spans (they share a reservation);
  fire_slot: (B, S) bool per slot id - 1."""
  b = fire_slot.shape[0]
  owner = jnp.maximum(plain_seg, masked_seg).reshape(b, -1)
  pad = jnp.concatenate([jnp.zeros((b, 1), bool), fire_slot], 1)
  use = jnp.take_along_axis(pad, owner, axis=1).reshape(plain_ids.shape)
  return (jnp.where(use, masked_ids, plain_ids),
          jnp.where(use, masked_seg, plain_seg))


def _mask_names(batch, fire):
  """Concept-name masking of the sentences that drew it (fire: (B, L+1)
  per segment id): their targets' names, and linearised subgraphs, take
  the record's masked variants."""
  if "masked_name_ids" not in batch and "masked_lin_ids" not in batch:
    raise ValueError("concept-name masking needs the records' masked "
                     "variants (masked_name_* / masked_lin_*); this batch "
                     "has none (dataset built before them, or an input "
                     "pipeline made for a run without masking)")
  out = {}
  emask = batch["entity_mask"] > 0
  ent_fire = emask & jnp.take_along_axis(fire, batch["entity_segment"],
                                         axis=1)  # (B, E)
  if "masked_name_ids" in batch:
    b, n_nodes = batch["node_mask"].shape
    rows = jnp.arange(b)[:, None]
    node_fire = jnp.zeros((b, n_nodes), bool).at[
        rows, batch["entity_node"]].max(ent_fire)
    out["name_ids"], out["name_segment_ids"] = _pick(
        node_fire, batch["name_ids"], batch["name_segment_ids"],
        batch["masked_name_ids"], batch["masked_name_segment_ids"])
  if "masked_lin_ids" in batch:
    out["lin_ids"], out["lin_segment_ids"] = _pick(
        ent_fire, batch["lin_ids"], batch["lin_segment_ids"],
        batch["masked_lin_ids"], batch["masked_lin_segment_ids"])
  return out
