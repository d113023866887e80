"""Task heads on our BERT, with Hugging Face semantics (issue 14).

`BertClassifier` is `BertForSequenceClassification` (kind "single" /
"multi") or `BertForMultipleChoice` (kind "choice"): the pooler output
([CLS] -> Dense -> tanh), dropout (`classifier_dropout`, else the hidden
dropout), and a Dense to the labels (choice: to one score per (question,
option) row, reshaped to (B, C)). Same parameter names as HF's
`classifier.*`, so the export is a plain state dict and the logits match
transformers' on the same weights (tests/finetune_test.py).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bali_jax.model.bert import BertModel, dense_init, logical_zeros
from bali_jax.model.config import BertConfig

KINDS = ("single", "multi", "choice")


class BertClassifier(nn.Module):
  config: BertConfig
  num_labels: int  # classes (choice: options; the head scores one each)
  kind: str = "single"
  classifier_dropout: float | None = None

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids,
               deterministic: bool = True) -> jax.Array:
    """(B, L) ids (choice: (B, C, L)) -> logits (B, num_labels) or (B, C),
    float32."""
    shape = input_ids.shape
    if self.kind == "choice":  # (B, C, L) -> (B*C, L), as HF flattens
      input_ids, attention_mask, token_type_ids = (
          x.reshape(-1, shape[-1]) for x in (input_ids, attention_mask,
                                             token_type_ids))
    out = BertModel(self.config, add_pooler=True, name="bert")(
        input_ids, attention_mask=attention_mask,
        token_type_ids=token_type_ids, deterministic=deterministic)
    p = self.classifier_dropout
    p = self.config.hidden_dropout_prob if p is None else p
    x = nn.Dropout(p)(out["pooler_output"], deterministic=deterministic)
    width = 1 if self.kind == "choice" else self.num_labels
    logits = nn.Dense(width, dtype=jnp.float32, param_dtype=jnp.float32,
                      kernel_init=dense_init(self.config,
                                              ("embed", "labels")),
                      bias_init=logical_zeros(("labels",)),
                      name="classifier")(x.astype(jnp.float32))
    if self.kind == "choice":
      return logits.reshape(shape[0], shape[1])  # (B, C)
    return logits  # (B, num_labels)


def loss_fn(kind: str, logits, labels, weights):
  """Mean over real examples (weight 1; padding 0). single / choice:
  softmax cross-entropy with an integer label (B,); multi: sigmoid
  cross-entropy with a (B, K) 0/1 target, averaged over labels (HF's
  BCEWithLogitsLoss)."""
  import optax
  if kind == "multi":
    per = optax.sigmoid_binary_cross_entropy(logits, labels).mean(-1)
  else:
    per = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return (per * weights).sum() / jnp.maximum(weights.sum(), 1.0)
