"""Analytic model FLOPs of a BALI training step, by phase.

MaxText's convention: count the matmuls (one multiply-add = 2 FLOPs),
training = 3 x forward, bidirectional attention counts every (query, key)
pair. Elementwise work, softmax, LayerNorm, pooling and the optimiser are
not counted.

Two counts of the same step:
  * padded: what the fixed-shape step computes (every token of every row,
    attention over whole rows);
  * real: what the data needs (real tokens only, attention within each
    packed sentence or name, selected MLM tokens, real nodes and entities).
Real-token FLOPs over time over the peak is the MFU a user can compare
across stacks; padded FLOPs show how much the hardware was kept busy.
"""

from __future__ import annotations

import jax.numpy as jnp

PHASES = ("sentence_encoder", "name_encoder", "mlm_head", "gnn", "loss")


def _encoder(bc, tokens, pairs):
  """Forward FLOPs of the BERT layers over `tokens` tokens whose attention
  covers `pairs` (query, key) pairs in all."""
  d, inter = bc.hidden_size, bc.intermediate_size
  per_token = 2 * (4 * d * d + 2 * d * inter)  # Q, K, V, O, FFN in and out
  return bc.num_hidden_layers * (tokens * per_token + pairs * 4 * d)


def graph_rows(cfg):
  """The rows the BERT reads on the graph side: concept names (GNN kinds)
  or linearised subgraphs (linear)."""
  if cfg.model.graph_encoder == "linear":
    return "lin_rows", "lin_len", "lin_segment_ids"
  return "name_rows", "name_len", "name_segment_ids"


def _gnn_widths(cfg):
  d = cfg.model.bert.hidden_size
  g = cfg.model.gnn
  hidden = g.hidden or d
  return [d] + [hidden] * (g.num_layers - 1) + [d]


def phase_flops(cfg, *, sentence_tokens, sentence_pairs, name_tokens,
                name_pairs, mlm_tokens, nodes, edges, entities) -> dict:
  """Training FLOPs (3 x forward) per phase for the given counts."""
  bc = cfg.model.bert
  d, vocab = bc.hidden_size, bc.vocab_size
  widths = _gnn_widths(cfg)
  gnn = sum(2 * nodes * i * o + 4 * (edges + nodes) * o
            for i, o in zip(widths, widths[1:])) + entities * 2 * d * d
  if cfg.model.graph_encoder == "linear":
    gnn = 0.0  # g_v is a [CLS] state; G-MLM tokens count as mlm_tokens
  fwd = {
      "sentence_encoder": _encoder(bc, sentence_tokens, sentence_pairs),
      "name_encoder": _encoder(bc, name_tokens, name_pairs),
      "mlm_head": mlm_tokens * 2 * (d * d + d * vocab),
      "gnn": gnn,
      "loss": 2 * (2 * entities) ** 2 * d,  # cosine similarity matrix
  }
  return {k: 3.0 * v for k, v in fwd.items()}


def mlm_slots(cfg, seq_len: int) -> int:
  return cfg.mlm_max_predictions or -(-seq_len // 5)


def padded_flops(cfg, budgets: dict, rows: int) -> dict:
  """What the compiled step computes for `rows` rows of these budgets."""
  b = budgets
  n_rows, n_len, _ = graph_rows(cfg)
  name_rows = rows * b[n_rows]
  gmlm = (name_rows * mlm_slots(cfg, b[n_len])
          if cfg.model.graph_mlm else 0)
  return phase_flops(
      cfg, sentence_tokens=rows * b["seq_len"],
      sentence_pairs=rows * b["seq_len"] ** 2,
      name_tokens=name_rows * b[n_len],
      name_pairs=name_rows * b[n_len] ** 2,
      mlm_tokens=rows * mlm_slots(cfg, b["seq_len"]) + gmlm,
      nodes=rows * b["max_nodes"], edges=rows * b["max_edges"],
      entities=rows * b["max_entities"])


def _same_segment_pairs(seg):
  """(query, key) pairs of real tokens in the same segment: sum over
  segments of length^2. seg: (..., L) ints, 0 = padding."""
  same = (seg[..., :, None] == seg[..., None, :]) & (seg[..., :, None] > 0)
  return jnp.sum(same, dtype=jnp.float32)


def real_counts(cfg, batch: dict, mlm_tokens) -> dict:
  """The counts `phase_flops` needs, from a batch of records (jnp or
  numpy; works inside jit). The graph side's rows are the concept names
  or, for the linear kind, the linearised subgraphs (then G-MLM's selected
  tokens join `mlm_tokens`)."""
  f32 = jnp.float32
  seg, nseg = batch["segment_ids"], batch[graph_rows(cfg)[2]]
  if "lin_mlm_weights" in batch:
    mlm_tokens = mlm_tokens + jnp.sum(batch["lin_mlm_weights"], dtype=f32)
  return dict(
      sentence_tokens=jnp.sum(seg > 0, dtype=f32),
      sentence_pairs=_same_segment_pairs(seg),
      name_tokens=jnp.sum(nseg > 0, dtype=f32),
      name_pairs=_same_segment_pairs(nseg),
      mlm_tokens=jnp.asarray(mlm_tokens, f32),
      nodes=jnp.sum(batch["node_mask"], dtype=f32),
      edges=jnp.sum(batch["edge_mask"], dtype=f32),
      entities=jnp.sum(batch["entity_mask"], dtype=f32))


def real_flops(cfg, batch: dict, mlm_tokens) -> dict:
  return phase_flops(cfg, **real_counts(cfg, batch, mlm_tokens))
