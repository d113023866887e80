"""The graph tower: GATv2 (or GraphSAGE) over per-example subgraphs.

Which tower a model has is `BaliConfig.graph_encoder` ("gat", "sage", or
"linear", which has no GNN: see model/bali.py); this module builds the two
GNNs.

Semantics follow the authors' encoder (method spec 1.5), i.e. PyG
`GATv2Conv(heads, concat=True, share_weights=True, add_self_loops=True,
dropout=attention_dropout, bias=True)` stacked L times:

  x_s = W x + b_W                       (one W for source and target)
  e_ji = a . LeakyReLU_0.2(x_s[j] + x_s[i] (+ r_ji))   per head
  alpha_ji = softmax_j(e_ji) over i's incoming edges, then dropout
  out_i = concat_h sum_j alpha_ji x_s[j] + b

Self-loops: existing self-loop edges are dropped and one loop per node is
added, as PyG does. Between layers (not after the last): dropout then GELU.
Head on the target (subgraph centre) nodes: Dense(d) -> LayerNorm(1e-12) ->
Dropout, for both GNNs (the authors' GATv2Encoder and GraphSAGEEncoder end
in the same head).

GraphSAGE is PyG `SAGEConv(in, out, project=, normalize=)` with its
defaults (mean aggregation, root weight, bias on the neighbour branch):

  x_j' = ReLU(P x_j + b_P)    (project=True only; P is in x in)
  out_i = W_l mean_{j->i} x_j' + b_l + W_r x_i
  out_i = out_i / max(||out_i||_2, 1e-12)    (normalize=True only)

No self-loops are added (a node without in-edges aggregates zeros, PyG's
empty mean).

Input is a `jraph.GraphsTuple` whose arrays carry a leading batch axis (one
padded graph per example row: nodes (B, N, D), senders/receivers (B, E),
n_node/n_edge (B, 1) real counts) plus an explicit edge mask, so the data
mesh axis shards graphs like sentences. Message passing is per row with jraph's
segment ops, vmapped over B.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from bali_jax.model.bert import LayerNorm, logical_zeros

Array = jax.Array
GNN_KINDS = ("gat", "sage")
_BIG_NEG = -1e9


@dataclasses.dataclass(frozen=True)
class GnnConfig:
  """GNN settings; defaults are the authors' [KGA] command. The kind of
  GNN is `BaliConfig.graph_encoder`."""
  num_layers: int = 5
  hidden: int | None = None  # None: the BERT width d
  heads: int = 2
  dropout: float = 0.1
  attention_dropout: float = 0.1
  num_relations: int = 0  # >0: relation-typed edges (id num_relations = loop)
  negative_slope: float = 0.2
  # not in the authors' code: g_v = (target's name embedding) + a
  # zero-initialised projection of the GNN output, so alignment starts by
  # pulling mentions towards their concept's names in the encoder's own
  # space and adds graph context as the projection learns (ReZero-style)
  target_residual: bool = False
  # GraphSAGE only (the authors' --graphsage_project / --graphsage_normalize)
  sage_project: bool = False
  sage_normalize: bool = False

  def __post_init__(self):
    if self.num_layers < 1:
      raise ValueError("gnn num_layers must be >= 1")


def _init(names):
  return nn.with_logical_partitioning(nn.initializers.glorot_uniform(), names)


def edge_mask_from_counts(graph: jraph.GraphsTuple) -> Array:
  """(B, E) edge validity from real counts n_edge (B, 1), padding last."""
  n = graph.senders.shape[-1]
  return jnp.arange(n)[None] < graph.n_edge[:, :1]


def with_self_loops(senders: Array, receivers: Array, edge_mask: Array,
                    relations: Array | None, num_nodes: int, loop_id: int):
  """Drops self-loop edges and appends one loop per node (PyG semantics).

  Padding nodes get a loop too, so every softmax has a finite entry; their
  outputs are never read.
  """
  b = senders.shape[0]
  keep = edge_mask & (senders != receivers)
  loops = jnp.broadcast_to(jnp.arange(num_nodes, dtype=senders.dtype),
                           (b, num_nodes))
  s = jnp.concatenate([senders, loops], axis=1)
  r = jnp.concatenate([receivers, loops], axis=1)
  m = jnp.concatenate([keep, jnp.ones((b, num_nodes), bool)], axis=1)
  if relations is not None:
    relations = jnp.concatenate(
        [relations, jnp.full((b, num_nodes), loop_id, relations.dtype)], 1)
  return s, r, m, relations


class GATv2Layer(nn.Module):
  features: int
  heads: int
  attention_dropout: float
  negative_slope: float = 0.2
  num_relations: int = 0
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, senders, receivers, edge_mask, relations=None):
    """x (B, N, Din); senders/receivers/edge_mask (B, E') -> (B, N, F)."""
    h = self.heads
    c = self.features // h
    xs = nn.DenseGeneral((h, c), kernel_init=_init(("embed", "heads", "kv")),
                         bias_init=logical_zeros(("heads", "kv")),
                         name="lin")(x)
    att = self.param("att", _init(("heads", "kv")), (h, c))
    rel = None
    if self.num_relations:
      rel = nn.Embed(self.num_relations + 1, h * c,
                     embedding_init=_init(("relation", "embed")),
                     name="relation")(relations).reshape(
                         relations.shape + (h, c))  # (B, E', H, C)
    num_nodes = x.shape[1]

    def scores(xs_b, s, r, m, rel_b):  # one graph
      z = xs_b[s] + xs_b[r]  # (E', H, C)
      if rel_b is not None:
        z = z + rel_b
      z = jax.nn.leaky_relu(z, self.negative_slope)
      e = jnp.sum(z * att, axis=-1)  # (E', H)
      e = jnp.where(m[:, None], e, _BIG_NEG)
      return jraph.segment_softmax(e, r, num_segments=num_nodes)

    alpha = jax.vmap(scores)(xs, senders, receivers, edge_mask, rel)
    alpha = alpha * edge_mask[..., None]
    alpha = nn.Dropout(self.attention_dropout)(alpha, self.deterministic)

    def aggregate(xs_b, a, s, r):
      return jax.ops.segment_sum(xs_b[s] * a[..., None], r,
                                 num_segments=num_nodes)

    out = jax.vmap(aggregate)(xs, alpha, senders, receivers)  # (B, N, H, C)
    out = out.reshape(out.shape[:2] + (h * c,))
    bias = self.param("bias", logical_zeros(("embed",)), (h * c,))
    return out + bias


class SAGELayer(nn.Module):
  """PyG SAGEConv: mean aggregation, root weight, optional source projection
  and L2 output normalisation (module doc)."""
  features: int
  project: bool = False
  normalize: bool = False

  @nn.compact
  def __call__(self, x, senders, receivers, edge_mask, relations=None):
    del relations  # untyped
    num_nodes = x.shape[1]
    src = x
    if self.project:  # sources only; the root branch reads x unprojected
      src = jax.nn.relu(nn.Dense(x.shape[-1],
                                 kernel_init=_init(("embed", "mlp")),
                                 bias_init=logical_zeros(("mlp",)),
                                 name="lin")(x))

    def mean(x_b, s, r, m):
      w = m.astype(x_b.dtype)
      tot = jax.ops.segment_sum(x_b[s] * w[:, None], r, num_nodes)
      cnt = jax.ops.segment_sum(w, r, num_nodes)
      return tot / jnp.maximum(cnt, 1.0)[:, None]

    agg = jax.vmap(mean)(src, senders, receivers, edge_mask)
    neigh = nn.Dense(self.features, kernel_init=_init(("embed", "mlp")),
                     bias_init=logical_zeros(("mlp",)), name="lin_l")(agg)
    root = nn.Dense(self.features, use_bias=False,
                    kernel_init=_init(("embed", "mlp")), name="lin_r")(x)
    out = neigh + root
    if self.normalize:  # F.normalize(p=2, eps=1e-12)
      norm = jnp.sqrt(jnp.sum(out * out, axis=-1, keepdims=True))
      out = out / jnp.maximum(norm, 1e-12)
    return out


class GraphEncoder(nn.Module):
  """L message-passing layers and the target-node output head.

  Widths d -> hidden -> ... -> hidden -> d; returns g_v for the requested
  target nodes only.
  """
  config: GnnConfig
  out_features: int  # d, the BERT width
  layer_norm_eps: float = 1e-12
  deterministic: bool = True
  kind: str = "gat"  # GNN_KINDS

  @nn.compact
  def __call__(self, graph: jraph.GraphsTuple, targets: Array,
               edge_mask: Array | None = None) -> Array:
    """Encodes the graphs and returns the target nodes' embeddings.

    Args:
      graph: batched GraphsTuple (see module doc).
      targets: (B, T) node slots of the subgraph centres.
      edge_mask: (B, E) edge validity; if None, from graph.n_edge (padding
        at the end, the jraph convention). Padding nodes need no mask: they
        only ever send to themselves.
    Returns:
      (B, T, d) float32.
    """
    c = self.config
    if self.kind not in GNN_KINDS:
      raise ValueError(f"GNN kind {self.kind!r}; expected {GNN_KINDS}")
    if edge_mask is None:
      edge_mask = edge_mask_from_counts(graph)
    x = graph.nodes.astype(jnp.float32)  # (B, N, D)
    num_nodes = x.shape[1]
    s, r, m, rel = graph.senders, graph.receivers, edge_mask, graph.edges
    if self.kind == "gat":
      s, r, m, rel = with_self_loops(s, r, m, rel, num_nodes,
                                     loop_id=c.num_relations)
    hidden = c.hidden or self.out_features
    for i in range(c.num_layers):
      last = i == c.num_layers - 1
      width = self.out_features if last else hidden
      if self.kind == "gat":
        layer = GATv2Layer(width, c.heads, c.attention_dropout,
                           c.negative_slope, c.num_relations,
                           self.deterministic, name=f"gat_{i}")
      else:
        layer = SAGELayer(width, c.sage_project, c.sage_normalize,
                          name=f"sage_{i}")
      x = layer(x, s, r, m, rel if c.num_relations else None)
      if not last:  # authors' order: dropout, then GELU
        x = nn.Dropout(c.dropout)(x, self.deterministic)
        x = jax.nn.gelu(x, approximate=False)
    t = jnp.take_along_axis(x, targets[..., None], axis=1)  # (B, T, d)
    t = nn.Dense(self.out_features, kernel_init=_init(("embed", "mlp")),
                 bias_init=logical_zeros(("mlp",)), name="head")(t)
    t = LayerNorm(self.layer_norm_eps, name="head_LayerNorm")(t)
    t = nn.Dropout(c.dropout)(t, self.deterministic)
    if c.target_residual:
      own = jnp.take_along_axis(graph.nodes.astype(jnp.float32),
                                targets[..., None], axis=1)  # (B, T, d)
      t = own + nn.Dense(self.out_features, use_bias=False,
                         kernel_init=logical_zeros(("embed", "mlp")),
                         name="residual_out")(t)
    return t
