"""Export our BERT to a Hugging Face directory that PyTorch loads as is.

The directory holds what `transformers.AutoModel` / `AutoModelForMaskedLM`
expect, with no custom code: `config.json` (model_type bert), weights in
PyTorch names and layouts with safetensors metadata {"format": "pt"} (one
`model.safetensors`, or shards plus `model.safetensors.index.json` above
`max_shard_size`), and the tokenizer (`tokenizer.json`,
`tokenizer_config.json`, `vocab.txt`).

Names follow `BertForMaskedLM` ("bert." body + "cls.predictions." head), as
Google's original BERT checkpoints do. Loading into `AutoModel` therefore
skips the MLM head and loading into `AutoModelForMaskedLM` skips the pooler;
neither re-initialises anything when both parts are present.

The write is atomic: everything goes to a temporary sibling directory that is
renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from typing import Any

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file
from tqdm import tqdm

from bali_jax.hf import mapping as hf_mapping
from bali_jax.model.config import BertConfig
from bali_jax.hf.tokenizer import save_tokenizer

EXPORT_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}
DEFAULT_MAX_SHARD = "5GB"


@dataclasses.dataclass
class ExportReport:
  out_dir: str
  weight_files: list[str]
  num_tensors: int
  num_parameters: int
  total_bytes: int
  architectures: list[str]
  skipped_by_automodel: list[str]  # tensors AutoModel will not use
  skipped_by_masked_lm: list[str]  # tensors AutoModelForMaskedLM won't use
  fresh_in_automodel: list[str]  # parts AutoModel would initialise fresh
  fresh_in_masked_lm: list[str]
  graph_files: list[str] = dataclasses.field(default_factory=list)


def parse_size(size: str | int) -> int:
  """'5GB' / '200MB' / '1.5GiB' / 123 -> bytes (HF convention: GB = 1e9)."""
  if isinstance(size, int):
    return size
  m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?)B?\s*", size, re.IGNORECASE)
  if not m:
    raise ValueError(f"cannot parse size {size!r} (e.g. 5GB, 500MB)")
  base = 1024 if m.group(3) else 1000
  exp = " KMGT".index(m.group(2).upper() or " ")
  return int(float(m.group(1)) * base ** exp)


def hf_state_dict(config: BertConfig, params: dict[str, Any],
                  dtype: str = "float32") -> dict[str, np.ndarray]:
  """Our params (either layer layout) -> {HF name: array} in table order.

  Only the "bert" and "mlm_head" subtrees are exported; other towers of a
  BALI model (the GNN) are not part of a BERT and are left out on purpose.
  """
  if dtype not in EXPORT_DTYPES:
    raise ValueError(f"export dtype {dtype!r}; expected {list(EXPORT_DTYPES)}")
  params = {k: v for k, v in params.items() if k in ("bert", "mlm_head")}
  bert = hf_mapping.unscan_layers(params["bert"], config.num_hidden_layers)
  flat = hf_mapping.flatten({**params, "bert": bert})
  rules = hf_mapping.rules(config, pooler="pooler" in bert,
                           mlm_head="mlm_head" in params)
  used = {r.path for r in rules}
  extra = sorted("/".join(p) for p in set(flat) - used)
  if extra:
    raise ValueError(f"parameters with no HF name: {extra}")
  out = {}
  for r in rules:
    x = np.asarray(flat[r.path], dtype=np.float32)
    x = np.asarray(hf_mapping.to_hf(config, r.kind, x))
    out[hf_mapping.hf_key(r)] = np.ascontiguousarray(
        x.astype(EXPORT_DTYPES[dtype]))
  if "mlm_head" in params:  # HF's decoder.bias is tied to predictions.bias
    out[hf_mapping.TIED_DECODER_BIAS] = out["cls.predictions.bias"].copy()
  return out


def _shards(state: dict[str, np.ndarray], max_bytes: int) -> list[list[str]]:
  """Greedy split in table order, never splitting a tensor."""
  shards, cur, size = [], [], 0
  for name, x in state.items():
    if cur and size + x.nbytes > max_bytes:
      shards.append(cur)
      cur, size = [], 0
    cur.append(name)
    size += x.nbytes
  if cur:
    shards.append(cur)
  return shards


def _write_weights(state, tmp: str, max_bytes: int, progress: bool):
  groups = _shards(state, max_bytes)
  n = len(groups)
  names = (["model.safetensors"] if n == 1 else
           [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
  weight_map = {}
  for fname, group in tqdm(list(zip(names, groups)), desc="writing weights",
                           unit="file", disable=not progress):
    save_file({k: state[k] for k in group}, os.path.join(tmp, fname),
              metadata={"format": "pt"})
    weight_map.update({k: fname for k in group})
  if n > 1:
    index = {"metadata": {"total_size": sum(x.nbytes for x in state.values())},
             "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
      json.dump(index, f, indent=2)
  return names


def export_hf(config: BertConfig, params: dict[str, Any], out_dir: str,
              tokenizer, dtype: str = "float32",
              max_shard_size: str | int = DEFAULT_MAX_SHARD,
              overwrite: bool = False, progress: bool = True,
              model_cfg=None, task_head: dict | None = None,
              model_card: str | None = None) -> ExportReport:
  """Writes an HF BERT directory atomically.

  Args:
    config: the architecture.
    params: {"bert": BertModel params, "mlm_head": MlmHead params (optional)},
      scanned or unscanned, jax or numpy arrays.
    out_dir: target directory; must not exist unless `overwrite`.
    tokenizer: a transformers tokenizer to ship with the weights.
    dtype: "float32" or "bfloat16" weights.
    max_shard_size: shard above this size (HF convention, e.g. "5GB").
    overwrite: replace an existing `out_dir` (only once the new one is done).
    progress: show a progress bar.
    model_cfg: the run's BaliConfig: with a GNN kind and params["gnn"], the
      graph encoder is saved beside the BERT (model/graph_io.py).
    task_head: a fine-tuned task model's head (`export_task_model`):
      {"state": {HF name: array}, "architectures": [...], "config": {...}}.
    model_card: the README.md to write (`hf/model_card.py`), inside the
      same atomic rename as the weights.
  """
  out_dir = os.path.abspath(os.fspath(out_dir))
  if os.path.exists(out_dir) and not overwrite:
    raise FileExistsError(f"{out_dir} exists; pass overwrite to replace it")
  state = hf_state_dict(config, params, dtype)
  has_head = "cls.predictions.bias" in state
  has_pooler = "bert.pooler.dense.weight" in state
  archs = ["BertForMaskedLM"] if has_head else ["BertModel"]
  extra_cfg = {}
  if task_head is not None:
    state.update({k: np.ascontiguousarray(
        np.asarray(v, np.float32).astype(EXPORT_DTYPES[dtype]))
                  for k, v in task_head["state"].items()})
    archs, extra_cfg = list(task_head["architectures"]), task_head["config"]
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-",
                         dir=parent)
  try:
    files = _write_weights(state, tmp, parse_size(max_shard_size), progress)
    cfg = config.to_hf_dict(architectures=tuple(archs),
                            tie_word_embeddings=False, torch_dtype=dtype)
    cfg.update(extra_cfg)
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(cfg, f, indent=2)
      f.write("\n")
    save_tokenizer(tokenizer, tmp)
    if model_card is not None:
      with open(os.path.join(tmp, "README.md"), "w") as f:
        f.write(model_card)
    graph_files = []
    if model_cfg is not None:
      from bali_jax.model.graph_io import save_graph_encoder
      graph_files = save_graph_encoder(tmp, model_cfg, params.get("gnn"))
    if os.path.exists(out_dir):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-",
                             dir=parent)
      os.rename(out_dir, os.path.join(old, "x"))
      os.rename(tmp, out_dir)
      shutil.rmtree(old)
    else:
      os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  head = sorted(k for k in state if k.startswith("cls."))
  pool = sorted(k for k in state if k.startswith("bert.pooler."))
  return ExportReport(
      out_dir=out_dir, weight_files=files, num_tensors=len(state),
      num_parameters=int(sum(x.size for k, x in state.items()
                             if k != hf_mapping.TIED_DECODER_BIAS)),
      total_bytes=int(sum(x.nbytes for x in state.values())),
      architectures=archs, skipped_by_automodel=head,
      skipped_by_masked_lm=pool,
      fresh_in_automodel=[] if has_pooler else ["bert.pooler.*"],
      fresh_in_masked_lm=[] if has_head else ["cls.predictions.*"],
      graph_files=graph_files)


def export_task_model(model, params: dict[str, Any], data, out_dir: str,
                      tokenizer, overwrite: bool = True) -> ExportReport:
  """A fine-tuned `model.heads.BertClassifier` as the matching HF class:
  `BertForSequenceClassification` (single- or multi-label, with id2label,
  label2id and problem_type) or `BertForMultipleChoice`; loads with no
  custom code and no missing keys (tests/finetune_test.py)."""
  k = np.asarray(params["classifier"]["kernel"], np.float32)  # (D, K)
  head = {"classifier.weight": k.T,
          "classifier.bias": np.asarray(params["classifier"]["bias"])}
  labels = list(data.labels)
  hf_cfg = {"id2label": {str(i): n for i, n in enumerate(labels)},
            "label2id": {n: i for i, n in enumerate(labels)},
            "classifier_dropout": model.classifier_dropout}
  if data.kind == "choice":
    archs = ["BertForMultipleChoice"]
  else:
    archs = ["BertForSequenceClassification"]
    hf_cfg["problem_type"] = ("multi_label_classification"
                              if data.kind == "multi"
                              else "single_label_classification")
  return export_hf(model.config, {"bert": params["bert"]}, out_dir,
                   tokenizer, overwrite=overwrite, progress=False,
                   task_head={"state": head, "architectures": archs,
                              "config": hf_cfg})


# ------------------------------------------------------------ verification
PROBE_SENTENCES = (
    "Hereditary hemochromatosis causes iron overload in the liver.",
    "Patients with Marfan syndrome often present with aortic dilatation.",
    "BRCA1 mutations increase the risk of breast and ovarian cancer.",
)


def encode_probe(tokenizer, max_len: int = 32):
  """(input ids, attention mask) of the probe sentences, (3, max_len)."""
  enc = tokenizer(list(PROBE_SENTENCES), padding="max_length",
                  truncation=True, max_length=max_len, return_tensors="np")
  return enc["input_ids"], enc["attention_mask"]


def _hidden(config, params, ids, mask):
  import jax
  from bali_jax.model.bert import BertModel
  model = BertModel(config, add_pooler="pooler" in params["bert"])
  out = jax.jit(model.apply)({"params": params["bert"]}, ids, mask)
  return out["last_hidden_state"]  # (3, L, D)


def probe_diff(tokenizer, cfg_a, params_a, cfg_b, params_b) -> float:
  """Max abs difference of two BERTs' hidden states on the probe set."""
  ids, mask = encode_probe(tokenizer)
  h0 = _hidden(cfg_a, params_a, ids, mask)
  h1 = _hidden(cfg_b, params_b, ids, mask)
  return float(np.max(np.abs(np.asarray(h0) - np.asarray(h1))))


def verify_export(out_dir: str, config: BertConfig, params: dict, tokenizer,
                  dtype: str = "float32", exact: bool = True,
                  **runtime) -> dict:
  """Re-imports an export (`runtime`: the importer's options, e.g.
  scan_layers) and compares it with its source on the probe sentences:
  {"probe_max_abs_diff"}; with `exact` (an HF directory's round trip) also
  whether every parameter came back equal (cast as the export cast it) and
  the tokenizer gives the same ids."""
  import jax
  from bali_jax.hf.importer import load_pretrained
  back = load_pretrained(out_dir, **runtime)
  out = {}
  if exact:
    cast = (lambda x: x) if dtype == "float32" else (
        lambda x: np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32))
    same = jax.tree.map(lambda a, b: bool(np.array_equal(cast(a), b)),
                        params, back.params)
    ids, _ = encode_probe(tokenizer)
    ids_back, _ = encode_probe(back.tokenizer)
    out.update(params_identical=all(jax.tree.leaves(same)),
               tokenizer_identical=bool((ids == ids_back).all()))
  out["probe_max_abs_diff"] = probe_diff(tokenizer, config, params,
                                         back.config, back.params)
  return out

