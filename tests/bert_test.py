"""Our Flax BERT against transformers.BertModel (PyTorch CPU) on equal weights.

Tolerance: max abs diff <= 1e-5 on the last hidden state in float32 (both
sides in float32 on CPU, 'highest' matmul precision), padding in the batch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bali_jax.hf import mapping as hf_mapping
from bali_jax.hf.importer import params_from_hf_tensors
from bali_jax.model.bert import BertModel, segment_positions
from bali_jax.model.config import BertConfig, tiny_config
from tests.hf_utils import padded_batch, random_torch_model, torch_state_numpy

CONFIGS = {
    # odd sizes: hidden 48, 3 heads (16 each), intermediate 100
    "odd": tiny_config(),
    "wider": BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=128,
                        max_position_embeddings=40, type_vocab_size=3),
}


def _ours(config, model_torch):
  tensors = torch_state_numpy(model_torch)
  return params_from_hf_tensors(config, tensors)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parity_with_transformers(name):
  config = CONFIGS[name]
  tm = random_torch_model(config)
  params = _ours(config, tm)
  ids, mask, tt = padded_batch(config.vocab_size, [13, 7, 1, 20], 20,
                               type_vocab=config.type_vocab_size)
  with torch.no_grad():
    ref = tm(input_ids=torch.tensor(ids, dtype=torch.long),
             attention_mask=torch.tensor(mask, dtype=torch.long),
             token_type_ids=torch.tensor(tt, dtype=torch.long))
  model = BertModel(config)
  out = jax.jit(model.apply)({"params": params["bert"]}, ids, mask, tt)
  ref_h = ref.last_hidden_state.numpy()
  h = np.asarray(out["last_hidden_state"])
  real = mask.astype(bool)
  assert np.max(np.abs(h[real] - ref_h[real])) <= 1e-5
  assert np.max(np.abs(h - ref_h)) <= 1e-5  # padded rows too
  assert np.max(np.abs(np.asarray(out["pooler_output"])
                       - ref.pooler_output.numpy())) <= 1e-5


def test_segment_positions():
  seg = np.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
  pos = np.asarray(segment_positions(jnp.asarray(seg)))
  np.testing.assert_array_equal(pos[0], [0, 1, 2, 0, 1, 0, 0, 1])
  np.testing.assert_array_equal(pos[1], np.arange(8))


@pytest.mark.parametrize("scan,remat", [(False, "none"), (True, "full"),
                                        (False, "dots")])
def test_packed_segments_equal_separate_runs(scan, remat):
  config = tiny_config(scan_layers=scan, remat_policy=remat)
  tm = random_torch_model(config, seed=1)
  params = _ours(config, tm)
  if scan:
    params["bert"] = hf_mapping.scan_layers(params["bert"],
                                            config.num_hidden_layers)
  rng = np.random.default_rng(3)
  lens = [5, 9, 4]
  seqs = [rng.integers(1, config.vocab_size, n).astype(np.int32)
          for n in lens]
  length = 24
  packed = np.zeros((1, length), np.int32)
  seg = np.zeros((1, length), np.int32)
  start = 0
  for i, s in enumerate(seqs):
    packed[0, start:start + len(s)] = s
    seg[0, start:start + len(s)] = i + 1
    start += len(s)
  model = BertModel(config)
  out = model.apply({"params": params["bert"]}, packed, segment_ids=seg)
  h = np.asarray(out["last_hidden_state"])
  start = 0
  for s in seqs:
    alone = model.apply({"params": params["bert"]}, s[None])
    np.testing.assert_allclose(h[0, start:start + len(s)],
                               np.asarray(alone["last_hidden_state"])[0],
                               atol=1e-5, rtol=0)
    start += len(s)
  # and a separately run sequence equals transformers on the same weights
  with torch.no_grad():
    ref = tm(input_ids=torch.tensor(seqs[1][None], dtype=torch.long))
  alone = model.apply({"params": params["bert"]}, seqs[1][None])
  assert np.max(np.abs(np.asarray(alone["last_hidden_state"])
                       - ref.last_hidden_state.numpy())) <= 1e-5


def test_scan_and_remat_match_unrolled_with_grads():
  base = tiny_config()
  params = _ours(base, random_torch_model(base, seed=2))
  ids, mask, _ = padded_batch(base.vocab_size, [6, 10], 10, seed=5)

  def loss(cfg, p):
    h = BertModel(cfg).apply({"params": p}, ids, mask)["last_hidden_state"]
    return jnp.sum(jnp.sin(h) * mask[..., None])

  l0, g0 = jax.value_and_grad(lambda p: loss(base, p))(params["bert"])
  cfg = base.replace(scan_layers=True, remat_policy="dots_no_batch")
  scanned = hf_mapping.scan_layers(params["bert"], base.num_hidden_layers)
  l1, g1 = jax.jit(jax.value_and_grad(lambda p: loss(cfg, p)))(scanned)
  np.testing.assert_allclose(l0, l1, rtol=1e-5)
  g1 = hf_mapping.unscan_layers(jax.tree.map(np.asarray, g1),
                                base.num_hidden_layers)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4,
                                                       rtol=1e-4), g0, g1)


def test_hidden_states_and_bfloat16():
  config = tiny_config()
  params = _ours(config, random_torch_model(config, seed=4))
  ids, mask, _ = padded_batch(config.vocab_size, [8, 3], 8, seed=6)
  out = BertModel(config).apply({"params": params["bert"]}, ids, mask,
                                output_hidden_states=True)
  hs = np.asarray(out["hidden_states"])
  assert hs.shape == (config.num_hidden_layers + 1, 2, 8, config.hidden_size)
  np.testing.assert_array_equal(hs[-1], np.asarray(out["last_hidden_state"]))
  bf = BertModel(config.replace(dtype="bfloat16")).apply(
      {"params": params["bert"]}, ids, mask)
  h16 = np.asarray(bf["last_hidden_state"], np.float32)
  assert bf["last_hidden_state"].dtype == jnp.bfloat16
  real = mask.astype(bool)
  # bf16 has ~3 significant digits; post-LN states are O(1)
  assert np.max(np.abs(h16[real] - np.asarray(
      out["last_hidden_state"])[real])) < 0.1


def test_dropout_changes_outputs_only_when_enabled():
  config = tiny_config()
  params = _ours(config, random_torch_model(config))
  ids, mask, _ = padded_batch(config.vocab_size, [8], 8)
  model = BertModel(config)
  a = model.apply({"params": params["bert"]}, ids, mask)
  b = model.apply({"params": params["bert"]}, ids, mask, deterministic=False,
                  rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(a["last_hidden_state"], b["last_hidden_state"])


def test_every_parameter_has_logical_axes():
  import flax.linen as nn
  from bali_jax.model.bert import init_params
  for cfg in (tiny_config(), tiny_config(scan_layers=True)):
    boxed = init_params(cfg, jax.random.key(0), unbox=False)
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(
        x, nn.LogicallyPartitioned))
    for leaf in leaves:
      assert isinstance(leaf, nn.LogicallyPartitioned), leaf
      assert len(leaf.names) == leaf.value.ndim
      assert all(n is not None for n in leaf.names), leaf.names
    if cfg.scan_layers:
      k = boxed["bert"]["encoder"]["layers"]["layer"]["query"]["kernel"]
      assert k.names == ("layers", "embed", "heads", "kv")


def test_fused_attention_path_matches_einsum_on_packed_rows():
  """attention="xla" (jax.nn.dot_product_attention, the call cuDNN runs
  through on GPU) equals our einsum attention on packed segments; it
  refuses attention dropout rather than silently dropping it."""
  config = tiny_config()
  tm = random_torch_model(config, seed=2)
  params = _ours(config, tm)["bert"]
  rng = np.random.default_rng(5)
  ids = rng.integers(1, config.vocab_size, (2, 24)).astype(np.int32)
  seg = np.array([[1] * 7 + [2] * 10 + [3] * 4 + [0] * 3,
                  [1] * 20 + [0] * 4], np.int32)
  real = seg > 0
  outs = {}
  for impl in ("einsum", "xla", "auto"):
    model = BertModel(config.replace(attention=impl))
    outs[impl] = np.asarray(model.apply({"params": params}, ids,
                                        segment_ids=seg)["last_hidden_state"])
  assert np.max(np.abs(outs["xla"][real] - outs["einsum"][real])) <= 1e-5
  np.testing.assert_array_equal(outs["auto"], outs["einsum"])  # CPU: einsum
  with pytest.raises(ValueError, match="no attention dropout"):
    BertModel(config.replace(attention="xla")).apply(
        {"params": params}, ids, segment_ids=seg, deterministic=False,
        rngs={"dropout": jax.random.key(0)})


def test_compute_dtype_resolution():
  from bali_jax import configs
  cfg = configs.get_config("tiny")
  assert configs.resolve_dtype(cfg, "cpu").model.bert.dtype == "float32"
  for backend in ("gpu", "tpu"):
    assert configs.resolve_dtype(cfg, backend).model.bert.dtype == "bfloat16"
  full = cfg.replace(compute_dtype="float32")
  assert configs.resolve_dtype(full, "gpu").model.bert.dtype == "float32"
  with pytest.raises(ValueError, match="compute_dtype"):
    configs.resolve_dtype(cfg.replace(compute_dtype="fp8"), "cpu")
