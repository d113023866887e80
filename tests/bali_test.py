"""The whole BALI module: forward + backward under jit on a tiny config."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from bali_jax.model.bali import BaliConfig, BaliModel
from bali_jax.model.config import tiny_config
from bali_jax.model.gat import GnnConfig
from tests.bali_batch import synthetic_batch


def _setup(**kw):
  cfg = BaliConfig(bert=tiny_config(),
                   gnn=GnnConfig(num_layers=2, hidden=32, heads=2), **kw)
  batch = synthetic_batch(cfg.bert.vocab_size)
  model = BaliModel(cfg)
  params = nn.meta.unbox(model.init(jax.random.key(0), batch))["params"]
  return cfg, model, params, batch


def test_forward_backward_finite_and_nonzero():
  cfg, model, params, batch = _setup()
  assert set(params) == {"bert", "mlm_head", "gnn"}

  def loss_fn(p, rng):
    m = model.apply({"params": p}, batch, deterministic=False,
                    rngs={"dropout": rng})
    return m["loss"], m

  (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      params, jax.random.key(1))
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(
      float(metrics["loss"]),
      float(metrics["mlm_loss"]) + float(metrics["align_loss"]), rtol=1e-6)
  assert float(metrics["align_loss"]) > 0 and float(metrics["mlm_loss"]) > 0
  assert int(metrics["num_entities"]) == 5
  assert int(metrics["num_mlm_tokens"]) == 10
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    name = jax.tree_util.keystr(path)
    g = np.asarray(g)
    assert np.isfinite(g).all(), name
    if "pooler" in name:  # unused by BALI: kept only for a clean export
      assert not g.any(), name
    else:
      assert np.abs(g).sum() > 0, name


def test_alignment_sees_the_graph_tower():
  """Changing a concept-name token changes only the alignment loss."""
  cfg, model, params, batch = _setup()
  a = model.apply({"params": params}, batch)
  b2 = {k: v.copy() for k, v in batch.items()}
  b2["name_ids"][0, 0, 1] = (b2["name_ids"][0, 0, 1] + 7) % 1000
  b = model.apply({"params": params}, b2)
  assert float(a["mlm_loss"]) == float(b["mlm_loss"])
  assert float(a["align_loss"]) != float(b["align_loss"])


@pytest.mark.parametrize("kw", [dict(align_loss="ms"),
                                dict(name_pooling="cls",
                                     sentence_pooling_layer=1),
                                dict(align_weight=0.0)])
def test_variants_run(kw):
  cfg, model, params, batch = _setup(**kw)
  m = jax.jit(model.apply)({"params": params}, batch)
  assert np.isfinite(float(m["loss"]))
  if kw.get("align_weight") == 0.0:
    assert float(m["loss"]) == float(m["mlm_loss"])


def test_padding_entities_do_not_matter():
  cfg, model, params, batch = _setup()
  a = model.apply({"params": params}, batch)
  b2 = {k: v.copy() for k, v in batch.items()}
  b2["entity_concept"][1, 3] = b2["entity_concept"][0, 0]  # padded slot
  b = model.apply({"params": params}, b2)
  np.testing.assert_allclose(float(a["loss"]), float(b["loss"]), rtol=1e-6)


def test_every_bali_parameter_has_logical_axes():
  cfg = BaliConfig(bert=tiny_config(scan_layers=True),
                   gnn=GnnConfig(num_layers=2, hidden=32, num_relations=4))
  batch = synthetic_batch(cfg.bert.vocab_size)
  batch["edge_relation"] = np.zeros_like(batch["edge_src"])
  boxed = BaliModel(cfg).init(jax.random.key(0), batch)["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(
      x, nn.LogicallyPartitioned))
  assert len(leaves) > 20
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), leaf
    assert len(leaf.names) == leaf.value.ndim
    assert all(isinstance(n, str) for n in leaf.names), leaf.names


def test_bali_params_export_as_plain_bert(tmp_path):
  import torch
  import transformers
  from bali_jax.hf import export as hf_export
  from bali_jax.model.bert import BertModel
  from tests.export_hf_test import _tokenizer
  cfg, model, params, batch = _setup()
  out = tmp_path / "hf"
  hf_export.export_hf(cfg.bert, params, str(out),
                      _tokenizer(tmp_path, cfg.bert.vocab_size),
                      progress=False)
  tm, info = transformers.AutoModelForMaskedLM.from_pretrained(
      out, output_loading_info=True)
  assert not info["missing_keys"] and not info["mismatched_keys"]
  ids = batch["input_ids"][:, :10]
  ours = BertModel(cfg.bert).apply({"params": params["bert"]}, ids)
  with torch.no_grad():
    ref = tm.eval().bert(input_ids=torch.tensor(ids, dtype=torch.long))
  assert np.abs(np.asarray(ours["last_hidden_state"])
                - ref.last_hidden_state.numpy()).max() <= 1e-5


def test_textual_contrastive_objective_matches_numpy_reference():
  """T-TCL (spec 1.7): NT-Xent between each mention (pooled from its
  sentence) and its target's sampled name encoded alone, before the GNN."""
  import jax.numpy as jnp
  from bali_jax.model.bert import BertModel
  from bali_jax.model.pooling import mention_pool, name_pool
  from tests.losses_test import ref_nt_xent
  cfg, model, params, batch = _setup(textual_contrastive_weight=0.5)
  m = model.apply({"params": params}, batch)
  bert = BertModel(cfg.bert)
  p = {"params": params["bert"]}
  h = bert.apply(p, batch["input_ids"], segment_ids=batch["segment_ids"])[
      "last_hidden_state"]
  e = batch["entity_concept"].shape[1]
  text = mention_pool(h, batch["mention_token"], batch["mention_entity"],
                      batch["mention_mask"], e)
  b, r, ln = batch["name_ids"].shape
  nh = bert.apply(p, batch["name_ids"].reshape(b * r, ln),
                  segment_ids=batch["name_segment_ids"].reshape(b * r, ln))[
                      "last_hidden_state"]
  nodes = name_pool(nh.reshape(b, r, ln, -1), batch["name_segment_ids"],
                    batch["node_mask"].shape[1])
  target = jnp.take_along_axis(nodes, batch["entity_node"][..., None], 1)
  z = np.concatenate([np.asarray(text).reshape(-1, text.shape[-1]),
                      np.asarray(target).reshape(-1, text.shape[-1])])
  ids = batch["entity_concept"].reshape(-1)
  mask = batch["entity_mask"].reshape(-1)
  want, _ = ref_nt_xent(z, np.concatenate([ids, ids]),
                     np.concatenate([mask, mask]), cfg.temperature)
  np.testing.assert_allclose(float(m["tcl_loss"]), want, rtol=1e-5)
  np.testing.assert_allclose(
      float(m["loss"]), float(m["mlm_loss"]) + float(m["align_loss"])
      + 0.5 * float(m["tcl_loss"]), rtol=1e-6)
  off = _setup()[1].apply({"params": params}, batch)
  assert float(off["tcl_loss"]) == 0.0
