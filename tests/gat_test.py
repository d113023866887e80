"""GATv2 / GraphSAGE against NumPy references of the formulas (spec 1.5)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest
from scipy.special import erf

from bali_jax.model.gat import GATv2Layer, GnnConfig, GraphEncoder


def _leaky(x, slope=0.2):
  return np.where(x > 0, x, slope * x)


def ref_gatv2(x, src, dst, emask, p, heads):
  """One PyG-style GATv2Conv (share_weights, self-loops) on one graph."""
  n = x.shape[0]
  w, bw = p["lin"]["kernel"], p["lin"]["bias"]  # (Din, H, C), (H, C)
  xs = np.einsum("nd,dhc->nhc", x, w) + bw
  edges = [(s, d) for s, d, m in zip(src, dst, emask) if m and s != d]
  edges += [(i, i) for i in range(n)]
  out = np.zeros_like(xs)
  for i in range(n):
    inc = [s for s, d in edges if d == i]
    e = np.stack([np.sum(_leaky(xs[s] + xs[i]) * p["att"], -1) for s in inc])
    a = np.exp(e - e.max(0))
    a = a / a.sum(0)  # (deg, H)
    out[i] = np.einsum("kh,khc->hc", a, xs[inc])
  return out.reshape(n, -1) + p["bias"]


def _graph(seed, n_real, e_real, n_pad, e_pad, din):
  rng = np.random.default_rng(seed)
  n, e = n_real + n_pad, e_real + e_pad
  x = rng.standard_normal((n, din)).astype(np.float32)
  src = np.zeros(e, np.int32)
  dst = np.zeros(e, np.int32)
  src[:e_real] = rng.integers(0, n_real, e_real)
  dst[:e_real] = rng.integers(0, n_real, e_real)
  src[0] = dst[0] = 1  # an explicit self-loop edge: must be replaced
  mask = np.arange(e) < e_real
  return x, src, dst, mask


def _init_layer(layer, x, src, dst, m):
  p = nn.meta.unbox(layer.init(jax.random.key(0), x, src, dst, m))["params"]
  # random (non-zero) biases so a dropped bias cannot pass
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda a: np.asarray(a) + 0.1 * rng.standard_normal(
      a.shape).astype(np.float32), p)


@pytest.mark.parametrize("jit", [False, True])
def test_gatv2_layer_matches_reference_with_padding(jit):
  din, heads, feats = 6, 2, 10
  g0 = _graph(0, 5, 7, 2, 3, din)
  g1 = _graph(1, 7, 9, 0, 1, din)
  x, src, dst, m = (np.stack(a) for a in zip(g0, g1))
  layer = GATv2Layer(feats, heads, attention_dropout=0.1)
  p = _init_layer(layer, x, src, dst, m)
  from bali_jax.model.gat import with_self_loops
  s2, d2, m2, _ = with_self_loops(jnp.asarray(src), jnp.asarray(dst),
                                  jnp.asarray(m), None, x.shape[1], 0)
  apply = jax.jit(layer.apply) if jit else layer.apply
  out = np.asarray(apply({"params": p}, x, s2, d2, m2))
  for b, n_real in enumerate((5, 7)):
    ref = ref_gatv2(x[b], src[b], dst[b], m[b],
                    jax.tree.map(np.asarray, p), heads)
    np.testing.assert_allclose(out[b, :n_real], ref[:n_real], atol=1e-5)
  # padding nodes/edges pointing anywhere do not change real outputs
  src_alt, dst_alt = src.copy(), dst.copy()
  src_alt[~m] = 3
  dst_alt[~m] = 2
  x_alt = x.copy()
  x_alt[0, 5:] = 99.0
  s3, d3, m3, _ = with_self_loops(jnp.asarray(src_alt), jnp.asarray(dst_alt),
                                  jnp.asarray(m), None, x.shape[1], 0)
  out2 = np.asarray(apply({"params": p}, x_alt, s3, d3, m3))
  np.testing.assert_allclose(out2[0, :5], out[0, :5], atol=1e-6)


def test_self_loops_only_is_a_per_node_transform():
  """With only self-loops every alpha is 1: out = W x + b_W, concat, + b."""
  din, heads, feats = 4, 2, 6
  x = np.random.default_rng(2).standard_normal((1, 5, din)).astype(
      np.float32)
  s = d = np.zeros((1, 3), np.int32)
  m = np.zeros((1, 3), bool)
  from bali_jax.model.gat import with_self_loops
  layer = GATv2Layer(feats, heads, attention_dropout=0.0)
  p = _init_layer(layer, x, s, d, m)
  s2, d2, m2, _ = with_self_loops(jnp.asarray(s), jnp.asarray(d),
                                  jnp.asarray(m), None, 5, 0)
  out = np.asarray(layer.apply({"params": p}, x, s2, d2, m2))
  lin = np.einsum("bnd,dhc->bnhc", x, p["lin"]["kernel"]) + p["lin"]["bias"]
  np.testing.assert_allclose(out, lin.reshape(1, 5, -1) + p["bias"],
                             atol=1e-5)


def _gelu(x):
  return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def ref_sage(h, src, dst, emask, q, project=False, normalize=False):
  """PyG SAGEConv(project, normalize), mean aggregation + root weight."""
  x_src = h
  if project:
    x_src = np.maximum(h @ q["lin"]["kernel"] + q["lin"]["bias"], 0)
  agg = np.zeros_like(h)
  cnt = np.zeros(len(h))
  for s_, d_, mm in zip(src, dst, emask):
    if mm:
      agg[d_] += x_src[s_]
      cnt[d_] += 1
  agg = agg / np.maximum(cnt, 1)[:, None]
  out = (agg @ q["lin_l"]["kernel"] + q["lin_l"]["bias"]
         + h @ q["lin_r"]["kernel"])
  if normalize:
    out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True),
                           1e-12)
  return out


@pytest.mark.parametrize("kind,project,normalize", [
    ("gat", False, False), ("sage", False, False), ("sage", True, False),
    ("sage", False, True), ("sage", True, True)])
def test_graph_encoder_matches_reference_stack(kind, project, normalize):
  """Both GNNs, every SAGE option: layers, dropout->GELU between them and
  the shared output head, against the formulas in NumPy."""
  d, hidden, heads = 8, 12, 2
  cfg = GnnConfig(num_layers=3, hidden=hidden, heads=heads,
                  sage_project=project, sage_normalize=normalize)
  x, src, dst, m = (np.stack(a) for a in zip(_graph(3, 6, 8, 2, 2, d)))
  graph = jraph.GraphsTuple(nodes=x, edges=None, senders=src, receivers=dst,
                            n_node=np.array([[6]]),
                            n_edge=np.array([[8]]), globals=None)
  targets = np.array([[0, 2, 4]])
  enc = GraphEncoder(cfg, d, kind=kind)
  p = nn.meta.unbox(enc.init(jax.random.key(0), graph, targets))["params"]
  if kind == "sage":
    assert ("lin" in p["sage_0"]) == project
  rng = np.random.default_rng(4)
  p = jax.tree.map(lambda a: np.asarray(a) + 0.1 * rng.standard_normal(
      a.shape).astype(np.float32), p)
  out = np.asarray(jax.jit(enc.apply)({"params": p}, graph, targets))
  h = x[0]
  for i in range(3):
    if kind == "gat":
      h = ref_gatv2(h, src[0], dst[0], m[0], p[f"gat_{i}"], heads)
    else:
      h = ref_sage(h, src[0], dst[0], m[0], p[f"sage_{i}"], project,
                   normalize)
      if normalize:
        np.testing.assert_allclose(np.linalg.norm(h, axis=-1), 1, rtol=1e-5)
    if i < 2:
      h = _gelu(h)
  t = h[targets[0]] @ p["head"]["kernel"] + p["head"]["bias"]
  mu = t.mean(-1, keepdims=True)
  var = ((t - mu) ** 2).mean(-1, keepdims=True)
  ln = p["head_LayerNorm"]
  t = (t - mu) / np.sqrt(var + 1e-12) * ln["scale"] + ln["bias"]
  np.testing.assert_allclose(out[0], t, atol=1e-4)


def test_relation_typed_edges_change_outputs_and_train():
  d = 8
  cfg = GnnConfig(num_layers=2, hidden=8, heads=2, num_relations=3)
  x, src, dst, m = (np.stack(a) for a in zip(_graph(5, 6, 8, 0, 0, d)))
  rel = np.random.default_rng(0).integers(0, 3, src.shape).astype(np.int32)
  mk = lambda r: jraph.GraphsTuple(nodes=x, edges=r, senders=src,
                                   receivers=dst, n_node=np.array([[6]]),
                                   n_edge=np.array([[8]]), globals=None)
  enc = GraphEncoder(cfg, d)
  targets = np.array([[0, 1]])
  p = nn.meta.unbox(enc.init(jax.random.key(0), mk(rel), targets))["params"]
  a = enc.apply({"params": p}, mk(rel), targets)
  b = enc.apply({"params": p}, mk((rel + 1) % 3), targets)
  assert not np.allclose(a, b)
  g = jax.grad(lambda q: jnp.sum(enc.apply({"params": q}, mk(rel),
                                           targets) ** 2))(p)
  assert np.abs(g["gat_0"]["relation"]["embedding"]).sum() > 0


def test_dropout_is_active_only_in_training():
  d = 8
  cfg = GnnConfig(num_layers=2, hidden=8, heads=2)
  x, src, dst, m = (np.stack(a) for a in zip(_graph(6, 6, 8, 0, 0, d)))
  graph = jraph.GraphsTuple(nodes=x, edges=None, senders=src, receivers=dst,
                            n_node=np.array([[6]]), n_edge=np.array([[8]]),
                            globals=None)
  targets = np.array([[0, 1]])
  p = nn.meta.unbox(GraphEncoder(cfg, d).init(jax.random.key(0), graph,
                                                targets))
  a = GraphEncoder(cfg, d).apply(p, graph, targets)
  b = GraphEncoder(cfg, d, deterministic=False).apply(
      p, graph, targets, rngs={"dropout": jax.random.key(3)})
  assert not np.allclose(a, b)


def test_target_residual_starts_at_the_name_and_learns_the_graph():
  """gnn.target_residual: at init g_v is exactly the target's own node
  feature (its name embedding); the zero-initialised projection gets a
  gradient, so the graph's contribution is learned; with random weights
  the output is that feature plus the projected GNN head (reference)."""
  d = 8
  cfg = GnnConfig(num_layers=2, hidden=8, heads=2, target_residual=True)
  x, src, dst, m = (np.stack(a) for a in zip(_graph(7, 6, 8, 0, 0, d)))
  graph = jraph.GraphsTuple(nodes=x, edges=None, senders=src, receivers=dst,
                            n_node=np.array([[6]]), n_edge=np.array([[8]]),
                            globals=None)
  targets = np.array([[0, 3]])
  enc = GraphEncoder(cfg, d)
  p = nn.meta.unbox(enc.init(jax.random.key(0), graph, targets))["params"]
  np.testing.assert_array_equal(enc.apply({"params": p}, graph, targets),
                                x[:, [0, 3]])
  g = jax.grad(lambda q: jnp.sum(enc.apply({"params": q}, graph,
                                           targets)[..., 0]))(p)
  assert np.abs(g["residual_out"]["kernel"]).sum() > 0
  w = np.random.default_rng(2).standard_normal((d, d)).astype(np.float32)
  q = {**p, "residual_out": {"kernel": w}}
  plain = GraphEncoder(GnnConfig(num_layers=2, hidden=8, heads=2), d)
  head = plain.apply({"params": {k: v for k, v in q.items()
                                 if k != "residual_out"}}, graph, targets)
  np.testing.assert_allclose(enc.apply({"params": q}, graph, targets),
                             x[:, [0, 3]] + np.asarray(head) @ w, atol=1e-5)
