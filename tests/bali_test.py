"""The whole BALI module: forward + backward under jit on a tiny config."""

import flax.linen as nn
import jax
import numpy as np

from bali_jax.model.bali import BaliConfig, BaliModel
from bali_jax.model.config import tiny_config
from bali_jax.model.gat import GnnConfig
from tests.bali_batch import synthetic_batch


def _setup(**kw):
  cfg = BaliConfig(bert=tiny_config(),
                   gnn=GnnConfig(num_layers=2, hidden=32, heads=2), **kw)
  batch = synthetic_batch(cfg.bert.vocab_size)
  model = BaliModel(cfg)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0),
                                             batch))["params"]
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


def _bert_states(cfg, params, ids, seg):
  from bali_jax.model.bert import BertModel
  return BertModel(cfg.bert).apply({"params": params["bert"]}, ids,
                                   segment_ids=seg,
                                   output_hidden_states=True)


def test_align_loss_ms_is_the_multi_similarity_loss():
  """align_loss="ms": the alignment term is MS-loss (NumPy reference from
  the spec) over the same embeddings NT-Xent would see."""
  from tests.losses_test import ref_ms
  cfg, model, params, batch = _setup(align_loss="ms")
  m = jax.jit(model.apply)({"params": params}, batch)
  emb = model.apply({"params": params}, batch, embeddings_only=True)
  d = emb["text"].shape[-1]
  z = np.concatenate([np.asarray(emb["text"]).reshape(-1, d),
                      np.asarray(emb["graph"]).reshape(-1, d)])
  ids = np.asarray(batch["entity_concept"]).reshape(-1)
  mask = np.asarray(batch["entity_mask"]).reshape(-1)
  want = ref_ms(z, np.concatenate([ids, ids]), np.concatenate([mask, mask]),
                cfg.ms_alpha, cfg.ms_beta, cfg.ms_base)
  np.testing.assert_allclose(float(m["align_loss"]), want, rtol=1e-5)
  infonce = _setup()[1].apply({"params": params}, batch)
  assert abs(float(infonce["align_loss"]) - want) > 1e-3


def test_cls_name_pooling_and_sentence_pooling_layer():
  """name_pooling="cls": a node's feature is the state of its name's first
  token; sentence_pooling_layer=1: mentions pool hidden_states[1] (the
  first layer's output), not the last layer. Checked on the embeddings
  (T-TCL on exposes the target names' features)."""
  from bali_jax.model.pooling import mention_pool
  cfg, model, params, batch = _setup(name_pooling="cls",
                                     sentence_pooling_layer=1,
                                     textual_contrastive_weight=1.0)
  emb = model.apply({"params": params}, batch, embeddings_only=True)
  out = _bert_states(cfg, params, batch["input_ids"], batch["segment_ids"])
  e = batch["entity_concept"].shape[1]
  pool = lambda h: np.asarray(mention_pool(
      h, batch["mention_token"], batch["mention_entity"],
      batch["mention_mask"], e))
  np.testing.assert_allclose(np.asarray(emb["text"]),
                             pool(out["hidden_states"][1]), atol=1e-5)
  assert np.abs(pool(out["last_hidden_state"])
                - np.asarray(emb["text"])).max() > 1e-2
  b, r, ln = batch["name_ids"].shape
  nseg = batch["name_segment_ids"]
  nh = np.asarray(_bert_states(cfg, params, batch["name_ids"].reshape(
      b * r, ln), nseg.reshape(b * r, ln))["last_hidden_state"]).reshape(
          b, r, ln, -1)
  names = np.asarray(emb["names"])  # (B, E, D): each target's feature
  checked = 0
  for row in range(b):
    for ent in np.nonzero(batch["entity_mask"][row])[0]:
      slot = batch["entity_node"][row, ent] + 1
      rr, cc = np.argwhere(nseg[row] == slot)[0]  # the name's first token
      np.testing.assert_allclose(names[row, ent], nh[row, rr, cc],
                                 atol=1e-5)
      mean = nh[row][nseg[row] == slot].mean(0)
      assert np.abs(mean - names[row, ent]).max() > 1e-2
      checked += 1
  assert checked == 5


def test_align_weight_zero_leaves_mlm_only():
  cfg, model, params, batch = _setup(align_weight=0.0)
  m = jax.jit(model.apply)({"params": params}, batch)
  assert float(m["align_loss"]) > 0
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
  from tests.export_hf_test import wordpiece_tokenizer
  cfg, model, params, batch = _setup()
  out = tmp_path / "hf"
  hf_export.export_hf(cfg.bert, params, str(out),
                      wordpiece_tokenizer(tmp_path, cfg.bert.vocab_size),
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
