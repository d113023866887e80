"""Parity with the authors' libraries: PyG GATv2Conv and SAGEConv,
pytorch-metric-learning NTXentLoss / MultiSimilarityLoss. CI installs them
(requirements-bench.txt) and fails if this module skips (CI=true);
elsewhere it skips, with the reason listed, unless they are installed:
  pip install -r requirements-bench.txt
"""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pyg = pytest.importorskip("torch_geometric")
pml = pytest.importorskip("pytorch_metric_learning")

from bali_jax import losses  # noqa: E402
from bali_jax.model.gat import (GATv2Layer, SAGELayer,  # noqa: E402
                                 with_self_loops)


def test_gatv2_layer_matches_pyg():
  from torch_geometric.nn import GATv2Conv
  torch.manual_seed(0)
  din, heads, feats, n = 6, 2, 10, 7
  conv = GATv2Conv(din, feats // heads, heads=heads, share_weights=True,
                   add_self_loops=True, bias=True, dropout=0.0).eval()
  with torch.no_grad():
    for p in conv.parameters():
      p.copy_(torch.randn_like(p) * 0.3)
  x = torch.randn(n, din)
  src = torch.tensor([1, 2, 3, 4, 5, 6, 3, 2])
  dst = torch.tensor([0, 0, 0, 1, 1, 1, 3, 2])  # includes a self-loop 2->2
  ref = conv(x, torch.stack([src, dst])).detach().numpy()
  c = feats // heads
  params = {
      "lin": {"kernel": conv.lin_l.weight.detach().numpy().T.reshape(
          din, heads, c),
              "bias": conv.lin_l.bias.detach().numpy().reshape(heads, c)},
      "att": conv.att.detach().numpy().reshape(heads, c),
      "bias": conv.bias.detach().numpy()}
  s, d, m, _ = with_self_loops(jnp.asarray(src.numpy())[None],
                               jnp.asarray(dst.numpy())[None],
                               jnp.ones((1, 8), bool), None, n, 0)
  out = GATv2Layer(feats, heads, 0.0).apply({"params": params},
                                           x.numpy()[None], s, d, m)
  np.testing.assert_allclose(np.asarray(out)[0], ref, atol=1e-5)


@pytest.mark.parametrize("project,normalize", [(False, False), (True, False),
                                               (False, True), (True, True)])
def test_sage_layer_matches_pyg(project, normalize):
  from torch_geometric.nn import SAGEConv
  torch.manual_seed(1)
  din, feats, n = 6, 5, 7
  conv = SAGEConv(din, feats, project=project, normalize=normalize).eval()
  with torch.no_grad():
    for p in conv.parameters():
      p.copy_(torch.randn_like(p) * 0.3)
  x = torch.randn(n, din)
  src = torch.tensor([1, 2, 3, 4, 5, 6, 3])
  dst = torch.tensor([0, 0, 0, 1, 1, 1, 3])  # nodes 2, 4-6 get nothing
  ref = conv(x, torch.stack([src, dst])).detach().numpy()
  t = lambda lin: {"kernel": lin.weight.detach().numpy().T,
                   **({"bias": lin.bias.detach().numpy()}
                      if lin.bias is not None else {})}
  params = {"lin_l": t(conv.lin_l), "lin_r": t(conv.lin_r)}
  if project:
    params["lin"] = t(conv.lin)
  out = SAGELayer(feats, project, normalize).apply(
      {"params": params}, x.numpy()[None], jnp.asarray(src.numpy())[None],
      jnp.asarray(dst.numpy())[None], jnp.ones((1, 7), bool))
  np.testing.assert_allclose(np.asarray(out)[0], ref, atol=1e-5)


@pytest.mark.parametrize("tau", [0.07, 0.3])
def test_nt_xent_matches_pml(tau):
  from pytorch_metric_learning.losses import NTXentLoss
  rng = np.random.default_rng(0)
  z = rng.standard_normal((16, 8)).astype(np.float32)
  labels = np.array([0, 1, 2, 0, 1, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 9])
  ref = NTXentLoss(temperature=tau)(torch.tensor(z), torch.tensor(labels))
  ours, _ = losses.nt_xent_loss(z, labels, np.ones(16), tau)
  np.testing.assert_allclose(float(ours), float(ref), rtol=1e-5)


def test_multi_similarity_matches_pml():
  from pytorch_metric_learning.losses import MultiSimilarityLoss
  rng = np.random.default_rng(1)
  z = rng.standard_normal((12, 6)).astype(np.float32)
  labels = np.array([0, 1, 2, 0, 1, 5, 6, 0, 1, 2, 3, 4])
  ref = MultiSimilarityLoss(alpha=2, beta=50, base=0.5)(
      torch.tensor(z), torch.tensor(labels))
  ours = losses.multi_similarity_loss(z, labels, np.ones(12), 2.0, 50.0, 0.5)
  np.testing.assert_allclose(float(ours), float(ref), rtol=1e-5)
