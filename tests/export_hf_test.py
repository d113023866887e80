"""Export round trips: ours -> HF directory -> transformers (PyTorch) and back.

Tolerances: hidden states 1e-5 and MLM logits 1e-4 (float32, CPU); export ->
import must give bit-identical params.
"""

import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers

from bali_jax.hf import export as hf_export
from bali_jax.hf.importer import load_pretrained
from bali_jax.model.bert import BertModel, MlmHead, init_params
from bali_jax.model.config import tiny_config
from bali_jax.hf.tokenizer import load_tokenizer
from tests.hf_utils import padded_batch, perturb


def wordpiece_tokenizer(tmp_path, vocab_size):
  """A real WordPiece tokenizer over `vocab_size` made-up tokens."""
  special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  words = [f"w{i}" for i in range(vocab_size - len(special))]
  d = tmp_path / "tok"
  d.mkdir(exist_ok=True)
  (d / "vocab.txt").write_text("\n".join(special + words) + "\n")
  return load_tokenizer(d)


def _params(config, pooler=True, head=True, seed=0):
  p = init_params(config, jax.random.key(seed), pooler=pooler, mlm_head=head)
  return perturb(p, seed=seed)


def _our_outputs(config, params, ids, mask):
  out = BertModel(config, add_pooler="pooler" in params["bert"]).apply(
      {"params": params["bert"]}, ids, mask)
  logits = None
  if "mlm_head" in params:
    logits = MlmHead(config).apply({"params": params["mlm_head"]},
                                   out["last_hidden_state"])
  return np.asarray(out["last_hidden_state"]), logits


def _load(cls, path, **kw):
  model, info = cls.from_pretrained(path, output_loading_info=True, **kw)
  return model.eval(), {k: sorted(v) for k, v in info.items()}


def test_export_loads_in_transformers_and_matches(tmp_path):
  config = tiny_config()
  params = _params(config)
  out = tmp_path / "hf"
  report = hf_export.export_hf(config, params, str(out),
                               wordpiece_tokenizer(tmp_path, config.vocab_size),
                               progress=False)
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors",
                                     "tokenizer.json", "tokenizer_config.json",
                                     "vocab.txt"]
  cfg = json.loads((out / "config.json").read_text())
  assert cfg["model_type"] == "bert" and cfg["hidden_act"] == "gelu"
  assert cfg["architectures"] == ["BertForMaskedLM"]
  assert not any(k in cfg for k in ("scan_layers", "remat_policy"))
  from safetensors import safe_open
  with safe_open(str(out / "model.safetensors"), "np") as f:
    assert f.metadata() == {"format": "pt"}

  ids, mask, _ = padded_batch(config.vocab_size, [12, 5, 9], 12)
  h, logits = _our_outputs(config, params, ids, mask)
  tids, tmask = torch.tensor(ids, dtype=torch.long), torch.tensor(mask)

  mlm, info = _load(transformers.AutoModelForMaskedLM, out)
  assert type(mlm).__name__ == "BertForMaskedLM"
  assert info["missing_keys"] == [] and info["mismatched_keys"] == []
  # the only tensors MaskedLM does not use are the pooler's (as with
  # Google's original BERT checkpoints)
  assert info["unexpected_keys"] == ["bert.pooler.dense.bias",
                                     "bert.pooler.dense.weight"]
  assert report.skipped_by_masked_lm == info["unexpected_keys"]
  with torch.no_grad():
    r = mlm(input_ids=tids, attention_mask=tmask, output_hidden_states=True)
  real = mask.astype(bool)
  assert np.abs(r.hidden_states[-1].numpy()[real] - h[real]).max() <= 1e-5
  assert np.abs(r.logits.numpy()[real] - np.asarray(logits)[real]).max() \
      <= 1e-4

  base, info = _load(transformers.AutoModel, out)
  assert info["missing_keys"] == [] and info["mismatched_keys"] == []
  assert all(k.startswith("cls.predictions.") for k in info["unexpected_keys"])
  assert report.skipped_by_automodel == info["unexpected_keys"]
  with torch.no_grad():
    r = base(input_ids=tids, attention_mask=tmask)
  assert np.abs(r.last_hidden_state.numpy()[real] - h[real]).max() <= 1e-5

  tok = transformers.AutoTokenizer.from_pretrained(out)
  assert tok("w3 w7")["input_ids"] == [2, 8, 12, 3]


def test_export_then_import_is_bit_identical(tmp_path):
  config = tiny_config(scan_layers=True)
  params = _params(config)
  from bali_jax.hf import mapping as hf_mapping
  params["bert"] = hf_mapping.scan_layers(params["bert"], 2)
  hf_export.export_hf(config, params, str(tmp_path / "hf"),
                      wordpiece_tokenizer(tmp_path, config.vocab_size), progress=False)
  back = load_pretrained(tmp_path / "hf", scan_layers=True)
  assert back.config == config
  flat_a = jax.tree_util.tree_leaves_with_path(params)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(back.params))
  assert len(flat_a) == len(flat_b)
  for path, a in flat_a:
    np.testing.assert_array_equal(np.asarray(a), flat_b[path])


def test_sharded_and_bfloat16_export(tmp_path):
  config = tiny_config()
  params = _params(config, pooler=False)
  out = tmp_path / "sharded"
  report = hf_export.export_hf(config, params, str(out),
                               wordpiece_tokenizer(tmp_path, config.vocab_size),
                               dtype="bfloat16", max_shard_size="100KB",
                               progress=False)
  assert len(report.weight_files) > 2
  index = json.loads((out / "model.safetensors.index.json").read_text())
  assert set(index["weight_map"].values()) == set(report.weight_files)
  back = load_pretrained(out)
  cast = lambda x: np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(cast(a), b),
               params, back.params)
  mlm, info = _load(transformers.AutoModelForMaskedLM, out)
  assert info["missing_keys"] == [] and info["unexpected_keys"] == []
  assert next(mlm.parameters()).dtype == torch.bfloat16
  # without a pooler, AutoModel reports exactly the pooler as fresh
  _, info = _load(transformers.AutoModel, out)
  assert info["missing_keys"] == ["pooler.dense.bias", "pooler.dense.weight"]
  assert report.fresh_in_automodel == ["bert.pooler.*"]


def test_starter_round_trip_in_transformers(tmp_path, starter_dir):
  pre = load_pretrained(starter_dir)
  out = tmp_path / "starter_hf"
  hf_export.export_hf(pre.config, pre.params, str(out), pre.tokenizer,
                      progress=False)
  enc = pre.tokenizer(["Iron overload damages the liver.",
                       "Aortic aneurysm in Marfan syndrome."],
                      padding=True, return_tensors="np")
  h, _ = _our_outputs(pre.config, pre.params, enc["input_ids"],
                      enc["attention_mask"])
  mlm, info = _load(transformers.AutoModelForMaskedLM, out)
  # the starter has no MLM head, so only cls.* is fresh: no BERT key missing
  assert info["missing_keys"] and all(k.startswith("cls.")
                                      for k in info["missing_keys"])
  assert info["mismatched_keys"] == []
  base, info = _load(transformers.AutoModel, out)
  assert info["missing_keys"] == [] and info["unexpected_keys"] == []
  assert info["mismatched_keys"] == []
  real = enc["attention_mask"].astype(bool)
  for m in (mlm.bert, base):
    with torch.no_grad():
      r = m(input_ids=torch.tensor(enc["input_ids"]),
            attention_mask=torch.tensor(enc["attention_mask"]))
    assert np.abs(r.last_hidden_state.numpy()[real] - h[real]).max() <= 1e-4
  assert transformers.AutoTokenizer.from_pretrained(out)(
      "hemochromatosis")["input_ids"] == pre.tokenizer(
          "hemochromatosis")["input_ids"]
  assert (out / "vocab.txt").read_text().splitlines()[:1] == ["[PAD]"]


def test_export_is_atomic(tmp_path):
  config = tiny_config()
  params = _params(config)
  out = tmp_path / "hf"
  tok = wordpiece_tokenizer(tmp_path, config.vocab_size)
  hf_export.export_hf(config, params, str(out), tok, progress=False)
  with pytest.raises(FileExistsError):
    hf_export.export_hf(config, params, str(out), tok, progress=False)

  class Broken:
    def save_pretrained(self, d):
      raise RuntimeError("disk full")

  before = sorted(os.listdir(tmp_path))
  with pytest.raises(RuntimeError):
    hf_export.export_hf(config, params, str(out), Broken(), overwrite=True,
                        progress=False)
  assert sorted(os.listdir(tmp_path)) == before  # no temp dirs left
  assert load_pretrained(out).config == config  # old export untouched
  with pytest.raises(RuntimeError):
    hf_export.export_hf(config, params, str(tmp_path / "new"), Broken(),
                        progress=False)
  assert not (tmp_path / "new").exists()


def test_parse_size():
  assert hf_export.parse_size("5GB") == 5_000_000_000
  assert hf_export.parse_size("100KB") == 100_000
  assert hf_export.parse_size("1GiB") == 2 ** 30
  with pytest.raises(ValueError):
    hf_export.parse_size("lots")


def test_model_card_names_its_base_and_licence(tmp_path, starter_dir):
  """The starter's Hub id and its own card's licence; a Hub cache path's
  id; a directory with no card: no id, licence unknown. The rendered card
  parses back with huggingface_hub, metadata and sections alike."""
  from huggingface_hub import ModelCard
  from bali_jax.hf import model_card
  assert model_card.describe_base(starter_dir, "starter") == (
      model_card.STARTER_HUB_ID, "apache-2.0")
  snap = tmp_path / "models--dmis-lab--biobert-v1.1" / "snapshots" / "abc"
  snap.mkdir(parents=True)
  assert model_card.describe_base(str(snap)) == ("dmis-lab/biobert-v1.1",
                                                 "unknown")
  assert model_card.describe_base(str(snap), hub_id="a/b") == ("a/b",
                                                               "unknown")
  text = model_card.render(model_card.CardInputs(
      base_model="dmis-lab/biobert-v1.1", license="apache-2.0",
      architecture={"layers": 2, "hidden": 32, "heads": 4,
                    "parameters": 1234}, step=7, config={"steps": 7},
      evaluations=[("synonyms", "| a | b |\n|---|---|\n| 1 | 2 |")],
      pooling="cls"))
  (tmp_path / "README.md").write_text(text)
  card = ModelCard.load(tmp_path / "README.md")
  assert card.data.base_model == "dmis-lab/biobert-v1.1"
  assert "bali" in card.data.tags and card.data.datasets is None
  assert "7 steps" in card.text and "### synonyms" in card.text
  assert "last_hidden_state[:, 0]" in card.text  # the run's pooling
  assert "Not recorded" in card.text  # no data card given
