"""The BALI model: one shared BERT, a graph tower, an MLM head, two losses.

Forward pass (method spec 1.10), all fixed shapes, padding handled by masks:

  1. BERT over the (MLM-corrupted, packed) sentence rows -> token states;
     MLM head on the selected positions only -> L_MLM.
  2. Mention pooling: e_v = mean of the states of all tokens linked to
     concept v in its sentence (configurable layer, default last).
  3. The SAME BERT over the packed concept-name rows -> node features
     (masked mean per name, gradients flow into the BERT).
  4. GATv2 over each example's star subgraphs -> g_v at the target nodes.
     (`graph_encoder="linear"`: steps 3-4 are instead the same BERT over
     the packed linearised subgraphs, g_v = the [CLS] state of v's; with
     `graph_mlm`, MLM on them too.)
  5. NT-Xent (or MS-loss) over concat(e, g) with labels concat(ids, ids)
     on the global batch -> L_align (`objective`; under gradient
     accumulation over all micro-batches together, see train/step.py).
     Total = L_MLM + weight * L_align (weight 1, as the authors' code,
     which never applies its weight flag).

Batch keys (B example rows; the record schema fixes the sizes):
  input_ids, segment_ids (B, L)                  packed sentences
  mlm_positions, mlm_labels, mlm_weights (B, K)  selected MLM slots
  mention_token, mention_entity, mention_mask (B, P)  token -> entity links
  entity_concept, entity_node, entity_mask (B, E)     entities: concept id,
                                                      target node, validity
  name_ids, name_segment_ids (B, R, Ln)          packed concept names; the
                                                 segment id is node slot + 1
  node_mask (B, N)                               node slots in use
  edge_src, edge_dst, edge_mask (B, Em)          subgraph edges (star:
                                                 neighbour -> target)
  edge_relation (B, Em)                          only with typed relations
  lin_ids, lin_segment_ids (B, Rl, Ll)           linear kind: packed
  entity_lin (B, E)                              linearised subgraphs and
                                                 each entity's [CLS] (flat)
  lin_mlm_positions, _labels, _weights (B, Rl, Kl)  G-MLM slots
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import jraph

from bali_jax import losses
from bali_jax.model.bert import BertModel, MlmHead
from bali_jax.model.config import BertConfig
from bali_jax.model.gat import GnnConfig, GraphEncoder
from bali_jax.model.pooling import NAME_POOLING, mention_pool, name_pool

ALIGN_LOSSES = ("infonce", "ms")
GRAPH_ENCODERS = ("gat", "sage", "linear")


@dataclasses.dataclass(frozen=True)
class BaliConfig:
  bert: BertConfig
  # the graph side (spec 1.5): "gat" (GATv2, the paper's), "sage"
  # (GraphSAGE), "linear" (no GNN: g_v is the [CLS] state of the shared
  # BERT over the linearised subgraph, from `name_pooling_layer` as the
  # authors' concept_encoder_pooling_layer); `gnn` holds the GNNs' settings
  graph_encoder: str = "gat"
  gnn: GnnConfig = GnnConfig()
  # G-MLM (linear only, the authors' --graph_mlm_task): MLM with the same
  # head on the linearised subgraphs, its own mean, added to the loss
  graph_mlm: bool = False
  sentence_pooling_layer: int = -1  # hidden_states index; -1 = last layer
  name_pooling: str = "mean"  # "mean" | "mean1" | "cls"
  name_pooling_layer: int = -1
  align_loss: str = "infonce"  # "infonce" (NT-Xent) | "ms"
  temperature: float = 0.07
  ms_alpha: float = 2.0
  ms_beta: float = 50.0
  ms_base: float = 0.5
  align_weight: float = 1.0
  # the authors' optional mention <-> concept-name objective ("T-TCL",
  # --textual_contrastive_task; spec 1.7): NT-Xent between each mention and
  # its target's sampled name encoded alone (before the GNN). 0 = off.
  textual_contrastive_weight: float = 0.0
  keep_pooler: bool = True  # keep the imported pooler for a clean export

  def __post_init__(self):
    if self.name_pooling not in NAME_POOLING:
      raise ValueError(f"name_pooling {self.name_pooling!r}; "
                       f"expected {NAME_POOLING}")
    if self.graph_encoder not in GRAPH_ENCODERS:
      raise ValueError(f"graph_encoder {self.graph_encoder!r}; expected "
                       f"{GRAPH_ENCODERS}")
    if self.textual_contrastive_weight and self.graph_encoder == "linear":
      raise ValueError("textual_contrastive_weight needs a GNN graph "
                       "encoder (it reads the target names it encodes)")
    if self.graph_mlm and self.graph_encoder != "linear":
      raise ValueError("graph_mlm needs graph_encoder=linear (MLM on the "
                       "linearised subgraphs)")
    if self.align_loss not in ALIGN_LOSSES:
      raise ValueError(f"align_loss {self.align_loss!r}; "
                       f"expected {ALIGN_LOSSES}")
    if self.temperature <= 0:
      raise ValueError("temperature must be > 0")


def _layer_states(out: dict, layer: int):
  if layer == -1:
    return out["last_hidden_state"]
  return out["hidden_states"][layer]


class BaliModel(nn.Module):
  """Parameters: {"bert", "mlm_head", "gnn"} ("gnn" absent for the linear
  kind); only "bert" is exported as the encoder (the MLM head exports as
  BertForMaskedLM's head, the GNN beside it: hf.export).

  `__call__` returns the losses and metrics of `objective`; with
  `embeddings_only=True` it stops before the losses and returns what they
  are made of (`embed`), so a step can gather the embeddings of several
  micro-batches and take the contrastive loss over all of them.
  """
  config: BaliConfig

  @nn.compact
  def __call__(self, batch: dict, deterministic: bool = True,
               embeddings_only: bool = False) -> dict:
    c = self.config
    bc = c.bert
    bert = BertModel(bc, add_pooler=c.keep_pooler, name="bert")

    # ---- text tower: sentences
    want = c.sentence_pooling_layer != -1
    out = bert(batch["input_ids"], segment_ids=batch["segment_ids"],
               deterministic=deterministic, output_hidden_states=want)
    h = out["last_hidden_state"]  # (B, L, D)
    sel = jnp.take_along_axis(h, batch["mlm_positions"][..., None], axis=1)
    mlm_head = MlmHead(bc, name="mlm_head")
    logits = mlm_head(sel)  # (B, K, V) f32
    nll, correct, n_mlm = losses.mlm_sums(logits, batch["mlm_labels"],
                                          batch["mlm_weights"])
    num_ent = batch["entity_concept"].shape[1]
    text = mention_pool(_layer_states(out, c.sentence_pooling_layer),
                        batch["mention_token"], batch["mention_entity"],
                        batch["mention_mask"], num_ent)  # (B, E, D)

    extra = {}
    if c.graph_encoder == "linear":
      g, extra = self._linear(bert, mlm_head, batch, deterministic)
    else:
      g, nodes = self._gnn(bert, batch, deterministic)
      if c.textual_contrastive_weight:  # target names encoded alone
        extra["names"] = jnp.take_along_axis(
            nodes, batch["entity_node"][..., None], axis=1).astype(
                jnp.float32)  # (B, E, D)
    emb = {
        "text": text.astype(jnp.float32),  # (B, E, D)
        "graph": g.astype(jnp.float32),  # (B, E, D)
        "mlm_nll": nll, "mlm_correct": correct, "mlm_count": n_mlm,
        "entity_concept": batch["entity_concept"],  # (B, E)
        "entity_mask": batch["entity_mask"],  # (B, E)
        "num_nodes": jnp.sum(batch["node_mask"]),
        **extra,
    }
    return emb if embeddings_only else objective(c, emb)

  def _gnn(self, bert, batch, deterministic):
    """The same BERT over the packed concept names, then the GNN."""
    c = self.config
    bc = c.bert
    b, r, ln = batch["name_ids"].shape
    nseg = batch["name_segment_ids"]
    name_out = bert(batch["name_ids"].reshape(b * r, ln),
                    segment_ids=nseg.reshape(b * r, ln),
                    deterministic=deterministic,
                    output_hidden_states=c.name_pooling_layer != -1)
    name_h = _layer_states(name_out, c.name_pooling_layer)
    num_nodes = batch["node_mask"].shape[1]
    nodes = name_pool(name_h.reshape(b, r, ln, -1), nseg, num_nodes,
                      c.name_pooling)  # (B, N, D)
    graph = jraph.GraphsTuple(
        nodes=nodes, edges=batch.get("edge_relation"),
        senders=batch["edge_src"], receivers=batch["edge_dst"],
        n_node=jnp.sum(batch["node_mask"], 1, keepdims=True),
        n_edge=jnp.sum(batch["edge_mask"], 1, keepdims=True), globals=None)
    g = GraphEncoder(c.gnn, bc.hidden_size, bc.layer_norm_eps,
                     deterministic, kind=c.graph_encoder,
                     name="gnn")(graph, batch["entity_node"],
                                 batch["edge_mask"])
    return g, nodes

  def _linear(self, bert, mlm_head, batch, deterministic):
    """The same BERT over the packed linearised subgraphs: g_v is the
    [CLS] state of v's sequence (no GNN, no output head, as the authors);
    G-MLM on the selected linear tokens."""
    c = self.config
    b, rl, ll = batch["lin_ids"].shape
    out = bert(batch["lin_ids"].reshape(b * rl, ll),
               segment_ids=batch["lin_segment_ids"].reshape(b * rl, ll),
               deterministic=deterministic,
               output_hidden_states=c.name_pooling_layer != -1)
    states = _layer_states(out, c.name_pooling_layer).reshape(b, rl * ll, -1)
    g = jnp.take_along_axis(states, batch["entity_lin"][..., None],
                            axis=1)  # (B, E, D)
    extra = {}
    if c.graph_mlm:
      k = batch["lin_mlm_positions"].shape[-1]
      flat = (batch["lin_mlm_positions"]
              + (jnp.arange(rl) * ll)[None, :, None]).reshape(b, rl * k)
      h = out["last_hidden_state"].reshape(b, rl * ll, -1)
      sel = jnp.take_along_axis(h, flat[..., None], axis=1)  # (B, Rl*K, D)
      nll, correct, n = losses.mlm_sums(
          mlm_head(sel), batch["lin_mlm_labels"].reshape(b, rl * k),
          batch["lin_mlm_weights"].reshape(b, rl * k))
      extra = {"gmlm_nll": nll, "gmlm_correct": correct, "gmlm_count": n}
    return g, extra


# embedding entries the losses are differentiated through (GradCache)
DIFFERENTIABLE = ("text", "graph", "names", "mlm_nll", "gmlm_nll")


def objective(c: BaliConfig, emb: dict) -> dict:
  """Losses and metrics from `BaliModel(..., embeddings_only=True)` outputs
  of one batch, or of several micro-batches concatenated along the rows:
  MLM is averaged over all selected tokens, NT-Xent runs over all entities
  (every other entity of the global batch is a negative)."""
  d = emb["text"].shape[-1]
  ids = emb["entity_concept"].reshape(-1)
  emask = emb["entity_mask"].reshape(-1)
  t_flat = emb["text"].reshape(-1, d)  # (M, D)
  g_flat = emb["graph"].reshape(-1, d)
  z = jnp.concatenate([t_flat, g_flat])  # (2M, D)
  labels = jnp.concatenate([ids, ids])
  zmask = jnp.concatenate([emask, emask])
  if c.align_loss == "infonce":
    align, n_pos = losses.nt_xent_loss(z, labels, zmask, c.temperature)
  else:
    align = losses.multi_similarity_loss(z, labels, zmask, c.ms_alpha,
                                         c.ms_beta, c.ms_base)
    n_pos = jnp.zeros((), jnp.int32)
  denom = jnp.maximum(jnp.sum(emb["mlm_count"]), 1.0)
  mlm_loss = jnp.sum(emb["mlm_nll"]) / denom
  total = mlm_loss + c.align_weight * align
  tcl = jnp.zeros((), jnp.float32)
  if c.textual_contrastive_weight:
    names = emb["names"].reshape(-1, d)
    tcl, _ = losses.nt_xent_loss(jnp.concatenate([t_flat, names]),
                                 labels, zmask, c.temperature)
    total = total + c.textual_contrastive_weight * tcl
  gmlm = jnp.zeros((), jnp.float32)
  if c.graph_mlm:
    gmlm = jnp.sum(emb["gmlm_nll"]) / jnp.maximum(
        jnp.sum(emb["gmlm_count"]), 1.0)
    total = total + gmlm
  return {
      "loss": total, "mlm_loss": mlm_loss, "align_loss": align,
      "tcl_loss": tcl, "gmlm_loss": gmlm,
      "mlm_accuracy": jnp.sum(emb["mlm_correct"]) / denom,
      "align_accuracy": losses.retrieval_accuracy(t_flat, g_flat, ids,
                                                  emask),
      "num_mlm_tokens": jnp.sum(emb["mlm_count"]),
      "num_entities": jnp.sum(emask),
      "num_nodes": jnp.sum(emb["num_nodes"]),
      "num_positive_pairs": n_pos,
  }
