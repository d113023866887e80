"""Typed BERT configuration that reads and writes Hugging Face `config.json`.

The HF fields describe the architecture and travel with every import and
export. The runtime fields (compute dtype, remat, scan, attention kernel) only say how *we* run
the model; they are never written to `config.json`, so an export looks exactly
like one made by `transformers`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

# HF `hidden_act` values that mean the exact (erf) GELU. "gelu_new" and
# "gelu_pytorch_tanh" are the tanh approximation and are accepted too.
_EXACT_GELU = ("gelu",)
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
COMPUTE_DTYPES = ("float32", "bfloat16")
# "einsum": our own masked softmax attention (with attention dropout);
# "xla" / "cudnn": jax.nn.dot_product_attention with that implementation
# (cuDNN flash attention needs a GPU and 16-bit inputs; neither has
# attention dropout); "auto": cuDNN on GPU in bfloat16 when attention
# dropout is inactive (eval, or probability 0) and cuDNN accepts the
# shapes, else einsum.
ATTENTION_IMPLS = ("auto", "einsum", "xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture of a BERT encoder plus how we execute it.

  Attributes mirror `transformers.BertConfig` names so that `config.json`
  round-trips field by field.
  """

  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  # Runtime options (not part of config.json).
  dtype: str = "float32"  # compute dtype; params, LayerNorm, softmax stay f32
  remat_policy: str = "none"
  scan_layers: bool = False
  attention: str = "auto"

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f"hidden_size={self.hidden_size} is not a multiple of "
          f"num_attention_heads={self.num_attention_heads}")
    if self.hidden_act not in _EXACT_GELU + _TANH_GELU:
      raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; "
                       f"expected one of {_EXACT_GELU + _TANH_GELU}")
    if self.dtype not in COMPUTE_DTYPES:
      raise ValueError(f"dtype={self.dtype!r}; expected {COMPUTE_DTYPES}")
    if self.attention not in ATTENTION_IMPLS:
      raise ValueError(f"attention={self.attention!r}; expected "
                       f"{ATTENTION_IMPLS}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(
          f"remat_policy={self.remat_policy!r}; expected {REMAT_POLICIES}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def exact_gelu(self) -> bool:
    return self.hidden_act in _EXACT_GELU

  def replace(self, **kwargs) -> "BertConfig":
    return dataclasses.replace(self, **kwargs)

  # ---------------------------------------------------------------- HF I/O
  @classmethod
  def hf_fields(cls) -> tuple[str, ...]:
    runtime = {"dtype", "remat_policy", "scan_layers", "attention"}
    return tuple(f.name for f in dataclasses.fields(cls)
                 if f.name not in runtime)

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], **runtime) -> "BertConfig":
    """Builds a config from a parsed HF `config.json`.

    Raises ValueError for models we cannot run faithfully (a non-BERT model
    type, or relative position embeddings, which transformers v5 dropped).
    """
    model_type = d.get("model_type", "bert")
    if model_type != "bert":
      raise ValueError(f"model_type={model_type!r}: only 'bert' is supported")
    pet = d.get("position_embedding_type", "absolute")
    if pet != "absolute":
      raise ValueError(f"position_embedding_type={pet!r}: only absolute "
                       "position embeddings are supported")
    if d.get("is_decoder", False):
      raise ValueError("is_decoder=True: BALI needs a bidirectional encoder")
    kwargs = {k: d[k] for k in cls.hf_fields() if k in d and d[k] is not None}
    return cls(**kwargs, **runtime)

  @classmethod
  def from_json_file(cls, path: str | os.PathLike, **runtime) -> "BertConfig":
    try:
      with open(path, encoding="utf-8") as f:  # local: an HF directory
        d = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"{path}: cannot read a JSON config: {e}") from e
    try:
      return cls.from_hf_dict(d, **runtime)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{path}: {e}") from e

  def to_hf_dict(self, architectures: tuple[str, ...] = ("BertModel",),
                 tie_word_embeddings: bool = False,
                 torch_dtype: str = "float32") -> dict[str, Any]:
    """The `config.json` content transformers expects for a plain BERT."""
    d = {k: getattr(self, k) for k in self.hf_fields()}
    d.update(
        model_type="bert",
        architectures=list(architectures),
        position_embedding_type="absolute",
        tie_word_embeddings=tie_word_embeddings,
        dtype=torch_dtype,
        use_cache=True,
        classifier_dropout=None,
    )
    return dict(sorted(d.items()))


def tiny_config(**overrides) -> BertConfig:
  """A CPU-sized BERT for tests and smoke runs (odd sizes on purpose)."""
  kw = dict(vocab_size=1000, hidden_size=48, num_hidden_layers=2,
            num_attention_heads=3, intermediate_size=100,
            max_position_embeddings=64, type_vocab_size=2)
  kw.update(overrides)
  return BertConfig(**kw)
