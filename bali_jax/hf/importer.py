"""Import a Hugging Face BERT directory into our parameters, without torch.

Reads `config.json`, `model.safetensors` (or a sharded checkpoint with
`model.safetensors.index.json`) through the safetensors NumPy API and the
tokenizer files, maps every tensor through `hf_mapping.rules`, and checks
everything before returning: all problems (missing tensors, unexpected
tensors, shape mismatches, unreadable files) are reported together in one
`CheckpointError` that names the file and the tensor. A model that loads with
silently re-initialised weights is the classic failure we refuse to have.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
from safetensors import safe_open

from bali_jax.hf import mapping as hf_mapping
from bali_jax.model.bert import abstract_params
from bali_jax.model.config import BertConfig
from bali_jax.hf.tokenizer import load_tokenizer

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be imported faithfully."""


@dataclasses.dataclass
class Pretrained:
  """An imported BERT: config, params {"bert", "mlm_head"?}, tokenizer."""
  config: BertConfig
  params: dict[str, Any]
  tokenizer: Any
  source: str

  @property
  def has_pooler(self) -> bool:
    return "pooler" in self.params["bert"]

  @property
  def has_mlm_head(self) -> bool:
    return "mlm_head" in self.params


def weight_files(model_dir: str) -> dict[str, str]:
  """Maps each tensor name to the file holding it (single or sharded)."""
  index = os.path.join(model_dir, INDEX_FILE)
  single = os.path.join(model_dir, SINGLE_FILE)
  if os.path.exists(index):
    try:
      with open(index, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise CheckpointError(f"{index}: not a valid safetensors index: {e}")
    missing = sorted({v for v in weight_map.values()
                      if not os.path.exists(os.path.join(model_dir, v))})
    if missing:
      raise CheckpointError(f"{index}: lists shard files that do not exist: "
                            f"{', '.join(missing)}")
    return {k: os.path.join(model_dir, v) for k, v in weight_map.items()}
  if os.path.exists(single):
    return {k: single for k in _keys(single)}
  hint = ""
  if os.path.exists(os.path.join(model_dir, "pytorch_model.bin")):
    hint = (" (it has pytorch_model.bin: convert it to safetensors once, "
            "e.g. with transformers' save_pretrained; we read without torch)")
  raise CheckpointError(f"{model_dir}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")


def _keys(path: str) -> list[str]:
  try:
    with safe_open(path, framework="np") as f:
      return list(f.keys())
  except Exception as e:  # SafetensorError, OSError, ...
    raise CheckpointError(f"{path}: not a readable safetensors file: {e}")


def read_tensors(files: dict[str, str]) -> dict[str, np.ndarray]:
  """Loads every tensor, grouped per file; errors name file and tensor."""
  by_file: dict[str, list[str]] = {}
  for name, path in files.items():
    by_file.setdefault(path, []).append(name)
  out = {}
  for path, names in by_file.items():
    try:
      handle = safe_open(path, framework="np")
    except Exception as e:
      raise CheckpointError(f"{path}: not a readable safetensors file: {e}")
    with handle as f:
      present = set(f.keys())
      for name in names:
        if name not in present:
          raise CheckpointError(f"{path}: the index says it holds tensor "
                                f"{name!r} but it does not")
        try:
          out[name] = f.get_tensor(name)
        except Exception as e:
          raise CheckpointError(f"{path}: tensor {name!r} cannot be read "
                                f"(corrupt or truncated file?): {e}")
  return out


def _expected_hf_shapes(config: BertConfig, rules: list[hf_mapping.Rule],
                        pooler: bool, mlm_head: bool) -> dict[str, tuple]:
  unscanned = config.replace(scan_layers=False)  # the table's layout
  flat = hf_mapping.flatten(abstract_params(unscanned, pooler, mlm_head))
  out = {}
  for r in rules:
    sds = flat[r.path]
    out[r.hf] = jax.eval_shape(
        lambda x, k=r.kind: hf_mapping.to_hf(config, k, x), sds).shape
  return out


def params_from_hf_tensors(config: BertConfig, tensors: dict[str, np.ndarray],
                           files: dict[str, str] | None = None,
                           dtype=np.float32,
                           source: str = "checkpoint") -> dict[str, Any]:
  """Validates HF tensors against the config and maps them to our tree.

  Args:
    config: the model architecture (from the same directory's config.json).
    tensors: HF name -> array, as stored ("bert." prefix optional).
    files: HF name -> file, used to name files in errors.
    source: what to call the checkpoint in errors (its directory).
    dtype: dtype of the returned params (float32 master weights by default).
  Returns:
    {"bert": ..., "mlm_head": ...} in the unscanned layout; "pooler" and
    "mlm_head" only when the checkpoint has them.
  Raises:
    CheckpointError listing every missing/unexpected tensor and every shape
    mismatch at once.
  """
  files = files or {}
  where = {hf_mapping.normalize_hf_name(k): files.get(k, "<memory>")
           for k in tensors}
  named = {hf_mapping.normalize_hf_name(k): v for k, v in tensors.items()}
  pooler = "pooler.dense.weight" in named
  mlm_head = "cls.predictions.transform.dense.weight" in named
  if mlm_head and "cls.predictions.decoder.weight" not in named:
    # HF stores a tied decoder once, as the word embeddings; from here on it
    # is an untied copy (BALI trains an untied head).
    named["cls.predictions.decoder.weight"] = named.get(
        "embeddings.word_embeddings.weight")
  rules = hf_mapping.rules(config, pooler=pooler, mlm_head=mlm_head)
  expected = _expected_hf_shapes(config, rules, pooler, mlm_head)
  problems = []
  for r in rules:
    if named.get(r.hf) is None:
      problems.append(f"missing tensor {r.hf!r} (not in any weight file)")
    elif tuple(named[r.hf].shape) != tuple(expected[r.hf]):
      problems.append(f"{where.get(r.hf, '?')}: tensor {r.hf!r} has shape "
                      f"{tuple(named[r.hf].shape)}, config expects "
                      f"{tuple(expected[r.hf])}")
  known = {r.hf for r in rules} | set(hf_mapping.IGNORED_ON_IMPORT)
  for name in sorted(set(named) - known):
    problems.append(f"{where[name]}: unexpected tensor {name!r}")
  bias_name = hf_mapping.TIED_DECODER_BIAS
  if (mlm_head and bias_name in named and "cls.predictions.bias" in named
      and named[bias_name].shape == named["cls.predictions.bias"].shape
      and not np.array_equal(named[bias_name], named["cls.predictions.bias"])):
    problems.append(f"{where[bias_name]}: {bias_name!r} differs from "
                    "'cls.predictions.bias' (HF ties them)")
  if problems:
    raise CheckpointError(
        f"{source}: {len(problems)} problem(s) importing the BERT weights:"
        "\n  "
        + "\n  ".join(problems))
  flat = {r.path: np.asarray(hf_mapping.to_flax(config, r.kind, named[r.hf]),
                             dtype=dtype)
          for r in rules}
  return hf_mapping.unflatten(flat)


def load_pretrained(model_dir: str | os.PathLike, param_dtype=np.float32,
                    **runtime) -> Pretrained:
  """Imports an HF BERT directory (config, weights, tokenizer).

  Args:
    model_dir: directory with config.json, safetensors weights, tokenizer.
    param_dtype: dtype of the returned params (float32 master weights).
    **runtime: BertConfig runtime options (dtype="bfloat16", scan_layers=...,
      remat_policy=...). With scan_layers the layers come back stacked.
  """
  model_dir = os.fspath(model_dir)
  if not os.path.isdir(model_dir):
    raise CheckpointError(f"{model_dir}: not a directory")
  cfg_path = os.path.join(model_dir, "config.json")
  if not os.path.exists(cfg_path):
    raise CheckpointError(f"{model_dir}: no config.json")
  try:
    config = BertConfig.from_json_file(cfg_path, **runtime)
  except ValueError as e:
    raise CheckpointError(str(e)) from e
  files = weight_files(model_dir)
  tensors = read_tensors(files)
  params = params_from_hf_tensors(config, tensors, files, dtype=param_dtype,
                                  source=model_dir)
  if config.scan_layers:
    params["bert"] = hf_mapping.scan_layers(params["bert"],
                                            config.num_hidden_layers)
  return Pretrained(config, params, load_tokenizer(model_dir), model_dir)
