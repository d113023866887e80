"""Helpers shared by tests: random PyTorch BERTs and perturbed params.

HF initialises LayerNorm to (1, 0) and biases to 0, which would hide a
mapping that swaps or drops them; every helper here randomises ALL tensors.
"""

from __future__ import annotations

import numpy as np

from bali_jax.model.config import BertConfig


def torch_config(config: BertConfig, **kw):
  import transformers
  d = config.to_hf_dict(**kw)
  d.pop("architectures", None)
  cfg = transformers.BertConfig(**d)
  cfg._attn_implementation = "eager"
  return cfg


def random_torch_model(config: BertConfig, cls_name: str = "BertModel",
                       seed: int = 0):
  """A transformers model with every parameter drawn at random."""
  import torch
  import transformers
  torch.manual_seed(seed)
  model = getattr(transformers, cls_name)(torch_config(config))
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.2)
  return model.eval()


def torch_state_numpy(model) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy().copy()
          for k, v in model.state_dict().items()}


def perturb(params, seed: int = 0, scale: float = 0.1):
  """Adds noise to every leaf (so LayerNorm and biases are not trivial)."""
  import jax
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: np.asarray(x, np.float32)
      + scale * rng.standard_normal(np.shape(x)).astype(np.float32), params)


def padded_batch(vocab: int, lengths, max_len: int, seed: int = 0,
                 type_vocab: int = 2):
  rng = np.random.default_rng(seed)
  b = len(lengths)
  ids = rng.integers(1, vocab, size=(b, max_len)).astype(np.int32)
  mask = (np.arange(max_len)[None] < np.asarray(lengths)[:, None]).astype(
      np.int32)
  ids = ids * mask
  tt = rng.integers(0, type_vocab, size=(b, max_len)).astype(np.int32) * mask
  return ids, mask, tt
