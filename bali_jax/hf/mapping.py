"""The one table that maps Hugging Face BERT tensor names to our parameters.

Every HF tensor of a BERT checkpoint is listed here once, with the Flax path
it becomes and the layout change (if any) between PyTorch and Flax:

  kind       PyTorch layout            Flax layout
  ---------  ------------------------  ----------------------------
  copy       same                      same (embeddings, LayerNorm, biases)
  linear     weight [out, in]          kernel [in, out]         (transpose)
  qkv        weight [H*Dh, D]          kernel [D, H, Dh]        (transpose, split heads)
  qkv_bias   bias [H*Dh]               bias [H, Dh]             (split heads)
  attn_out   weight [D, H*Dh]          kernel [H, Dh, D]        (transpose, split heads)

Import and export both walk this table, so they cannot disagree. Our full
parameter tree is {"bert": BertModel params, "mlm_head": MlmHead params};
paths below are in the unscanned layout ("layer_{i}"), see `unscan_layers`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from flax import traverse_util

from bali_jax.model.config import BertConfig

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Rule:
  hf: str  # HF name without the "bert." prefix for body tensors
  path: Path  # path in our parameter tree
  kind: str
  group: str  # "bert", "pooler" or "mlm_head"


def _transforms(c: BertConfig) -> dict[str, tuple[Callable, Callable]]:
  """kind -> (to_flax, to_hf); both work on numpy and jax arrays."""
  h, dh, d = c.num_attention_heads, c.head_dim, c.hidden_size
  ident = lambda x: x
  return {
      "copy": (ident, ident),
      "linear": (lambda w: w.T, lambda k: k.T),
      "qkv": (lambda w: w.T.reshape(d, h, dh),
              lambda k: k.reshape(d, h * dh).T),
      "qkv_bias": (lambda b: b.reshape(h, dh), lambda b: b.reshape(h * dh)),
      "attn_out": (lambda w: w.T.reshape(h, dh, d),
                   lambda k: k.reshape(h * dh, d).T),
  }


def to_flax(c: BertConfig, kind: str, x):
  return _transforms(c)[kind][0](x)


def to_hf(c: BertConfig, kind: str, x):
  return _transforms(c)[kind][1](x)


def _dense(hf: str, path: Path, kind: str, group: str) -> list[Rule]:
  bias_kind = "qkv_bias" if kind == "qkv" else "copy"
  return [Rule(f"{hf}.weight", path + ("kernel",), kind, group),
          Rule(f"{hf}.bias", path + ("bias",), bias_kind, group)]


def _norm(hf: str, path: Path, group: str) -> list[Rule]:
  return [Rule(f"{hf}.weight", path + ("scale",), "copy", group),
          Rule(f"{hf}.bias", path + ("bias",), "copy", group)]


def rules(c: BertConfig, pooler: bool = True,
          mlm_head: bool = True) -> list[Rule]:
  """All tensors of a BERT with the given optional parts, in HF order."""
  b = ("bert",)
  emb = b + ("embeddings",)
  out = [Rule(f"embeddings.{n}.weight", emb + (n, "embedding"), "copy",
              "bert")
         for n in ("word_embeddings", "position_embeddings",
                   "token_type_embeddings")]
  out += _norm("embeddings.LayerNorm", emb + ("LayerNorm",), "bert")
  for i in range(c.num_hidden_layers):
    hf, p = f"encoder.layer.{i}", b + ("encoder", f"layer_{i}")
    for n in ("query", "key", "value"):
      out += _dense(f"{hf}.attention.self.{n}", p + (n,), "qkv", "bert")
    out += _dense(f"{hf}.attention.output.dense", p + ("attention_output",),
                  "attn_out", "bert")
    out += _norm(f"{hf}.attention.output.LayerNorm",
                 p + ("attention_LayerNorm",), "bert")
    out += _dense(f"{hf}.intermediate.dense", p + ("intermediate",),
                  "linear", "bert")
    out += _dense(f"{hf}.output.dense", p + ("output",), "linear", "bert")
    out += _norm(f"{hf}.output.LayerNorm", p + ("output_LayerNorm",), "bert")
  if pooler:
    out += _dense("pooler.dense", b + ("pooler", "dense"), "linear", "pooler")
  if mlm_head:
    m = ("mlm_head",)
    out += _dense("cls.predictions.transform.dense", m + ("transform",),
                  "linear", "mlm_head")
    out += _norm("cls.predictions.transform.LayerNorm",
                 m + ("transform_LayerNorm",), "mlm_head")
    out.append(Rule("cls.predictions.decoder.weight",
                    m + ("decoder", "kernel"), "linear", "mlm_head"))
    out.append(Rule("cls.predictions.bias", m + ("bias",), "copy",
                    "mlm_head"))
  return out


# HF names that are not parameters of ours and are skipped on import:
# buffers of old checkpoints, the NSP head, and the decoder bias that HF ties
# to cls.predictions.bias (checked equal on import, written again on export).
IGNORED_ON_IMPORT = ("embeddings.position_ids", "embeddings.token_type_ids",
                     "cls.seq_relationship.weight", "cls.seq_relationship.bias",
                     "cls.predictions.decoder.bias")
TIED_DECODER_BIAS = "cls.predictions.decoder.bias"


def hf_key(rule: Rule) -> str:
  """The full name written to safetensors (BertForMaskedLM naming)."""
  return rule.hf if rule.group == "mlm_head" else f"bert.{rule.hf}"


def normalize_hf_name(name: str) -> str:
  """Canonical HF name: no "bert." prefix, TF-era gamma/beta renamed."""
  if name.startswith("bert."):
    name = name[len("bert."):]
  if name.endswith(".gamma"):
    name = name[:-len("gamma")] + "weight"
  elif name.endswith(".beta"):
    name = name[:-len("beta")] + "bias"
  return name


# ------------------------------------------------------------ tree helpers
# nested dicts <-> {path tuple: leaf}: Flax's own, which model/graph_io uses
# too (one implementation for every parameter tree)
flatten = traverse_util.flatten_dict
unflatten = traverse_util.unflatten_dict


def unscan_layers(bert: dict, num_layers: int) -> dict:
  """encoder/layers/layer/<stacked> -> encoder/layer_{i}/<...> (numpy)."""
  enc = bert["encoder"]
  if "layers" not in enc:
    return bert
  stacked = flatten(enc["layers"]["layer"])
  layers = {f"layer_{i}": unflatten({p: np.asarray(v)[i]
                                     for p, v in stacked.items()})
            for i in range(num_layers)}
  return {**bert, "encoder": layers}


def scan_layers(bert: dict, num_layers: int) -> dict:
  """encoder/layer_{i}/<...> -> encoder/layers/layer/<stacked>."""
  enc = bert["encoder"]
  if "layers" in enc:
    return bert
  flats = [flatten(enc[f"layer_{i}"]) for i in range(num_layers)]
  stacked = {p: np.stack([f[p] for f in flats]) for p in flats[0]}
  return {**bert, "encoder": {"layers": {"layer": unflatten(stacked)}}}
