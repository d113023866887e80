"""Bad input to the HF import: one clear error naming file and tensor."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bali_jax.hf import export as hf_export
from bali_jax.hf.importer import CheckpointError, load_pretrained
from bali_jax.model.bert import init_params
from bali_jax.model.config import tiny_config
from tests.export_hf_test import wordpiece_tokenizer
from tests.cli_runs import subprocess_env

CFG = tiny_config()


@pytest.fixture
def hf_dir(tmp_path):
  params = init_params(CFG, jax.random.key(0))
  out = tmp_path / "hf"
  hf_export.export_hf(CFG, params, str(out), wordpiece_tokenizer(tmp_path, 1000),
                      progress=False)
  return out


def _rewrite(path, fn):
  tensors = load_file(str(path))
  fn(tensors)
  save_file(tensors, str(path), metadata={"format": "pt"})


def test_missing_tensor(hf_dir):
  _rewrite(hf_dir / "model.safetensors",
           lambda t: t.pop("bert.encoder.layer.1.output.dense.weight"))
  with pytest.raises(CheckpointError) as e:
    load_pretrained(hf_dir)
  msg = str(e.value)
  assert str(hf_dir) in msg
  assert "missing tensor 'encoder.layer.1.output.dense.weight'" in msg


def test_wrong_shape_and_unexpected_reported_together(hf_dir):
  def edit(t):
    t["bert.encoder.layer.0.attention.self.key.weight"] = np.zeros(
        (48, 47), np.float32)
    t["bert.encoder.layer.0.extra.weight"] = np.zeros(3, np.float32)
  _rewrite(hf_dir / "model.safetensors", edit)
  with pytest.raises(CheckpointError) as e:
    load_pretrained(hf_dir)
  msg = str(e.value)
  assert "2 problem(s)" in msg
  assert (f"{hf_dir / 'model.safetensors'}: tensor "
          "'encoder.layer.0.attention.self.key.weight' has shape (48, 47), "
          "config expects (48, 48)") in msg
  assert "unexpected tensor 'encoder.layer.0.extra.weight'" in msg


def test_corrupt_and_truncated_file(hf_dir):
  path = hf_dir / "model.safetensors"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])  # truncated
  with pytest.raises(CheckpointError, match="model.safetensors"):
    load_pretrained(hf_dir)
  path.write_bytes(b"\x00garbage" * 10)
  with pytest.raises(CheckpointError) as e:
    load_pretrained(hf_dir)
  assert str(path) in str(e.value) and "safetensors" in str(e.value)


def test_sharded_index_problems(tmp_path):
  params = init_params(CFG, jax.random.key(0))
  out = tmp_path / "sh"
  report = hf_export.export_hf(CFG, params, str(out),
                               wordpiece_tokenizer(tmp_path, 1000),
                               max_shard_size="50KB", progress=False)
  os.remove(out / report.weight_files[1])
  with pytest.raises(CheckpointError, match=report.weight_files[1]):
    load_pretrained(out)
  (out / "model.safetensors.index.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="index"):
    load_pretrained(out)


def test_config_problems(hf_dir, tmp_path):
  cfg = json.loads((hf_dir / "config.json").read_text())
  (hf_dir / "config.json").write_text(json.dumps(
      {**cfg, "position_embedding_type": "relative_key"}))
  with pytest.raises(CheckpointError, match="relative_key"):
    load_pretrained(hf_dir)
  (hf_dir / "config.json").write_text(json.dumps(
      {**cfg, "num_attention_heads": 5}))
  with pytest.raises(CheckpointError, match="num_attention_heads=5"):
    load_pretrained(hf_dir)
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text(json.dumps(cfg))
  (empty / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(CheckpointError, match="pytorch_model.bin"):
    load_pretrained(empty)


def test_legacy_names_are_accepted(hf_dir):
  """TF-era checkpoints: LayerNorm gamma/beta and an unprefixed body."""
  def edit(t):
    for k in list(t):
      v = t.pop(k)
      k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
          "LayerNorm.bias", "LayerNorm.beta")
      t[k.removeprefix("bert.")] = v
    t["embeddings.position_ids"] = np.arange(64)[None]
  ref = load_pretrained(hf_dir)
  _rewrite(hf_dir / "model.safetensors", edit)
  back = load_pretrained(hf_dir)
  jax.tree.map(np.testing.assert_array_equal, ref.params, back.params)


def test_cli_export_hf(hf_dir, tmp_path):
  env = subprocess_env(HF_HUB_OFFLINE="1")
  out = tmp_path / "cli_out"
  run = subprocess.run(
      [sys.executable, "-m", "bali_jax", "export-hf", "--source",
       str(hf_dir), "--out", str(out), "--dtype", "bfloat16"],
      capture_output=True, text=True, env=env, timeout=300)
  assert run.returncode == 0, run.stderr
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result["params_identical"] and result["tokenizer_identical"]
  assert os.path.exists(out / "model.safetensors")
  # a model card: a converted model, no training, licence not known
  from huggingface_hub import ModelCard
  card = ModelCard.load(out / "README.md")
  assert card.data.library_name == "transformers"
  assert card.data.license == "unknown" and card.data.base_model is None
  assert "no training" in card.text and "AutoModel.from_pretrained" in card.text
  # bad input: a clear one-line error, exit code 2, nothing written
  _rewrite(hf_dir / "model.safetensors",
           lambda t: t.pop("bert.embeddings.LayerNorm.bias"))
  bad_out = tmp_path / "bad_out"
  run = subprocess.run(
      [sys.executable, "-m", "bali_jax", "export-hf", "--source",
       str(hf_dir), "--out", str(bad_out)],
      capture_output=True, text=True, env=env, timeout=300)
  assert run.returncode == 2
  assert "missing tensor 'embeddings.LayerNorm.bias'" in run.stderr
  assert "Traceback" not in run.stderr
  assert not bad_out.exists()
