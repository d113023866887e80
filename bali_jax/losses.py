"""BALI losses as pure functions (method spec section 1.7).

* `mlm_loss`: cross-entropy in float32 over the selected positions only.
* `nt_xent_loss`: NT-Xent / InfoNCE with pytorch-metric-learning semantics
  (`NTXentLoss`, cosine similarity): every ordered positive pair (a, p),
  a != p, same label, costs -log(e^{s_ap} / (e^{s_ap} + sum_n e^{s_an})) over
  the anchor's negatives only (other positives are NOT in the denominator);
  mean over positive pairs; anchors without positives add nothing.
  O(M^2) memory for M embeddings: the authors' library builds an O(M^3)
  tensor, which caps their batch at about 512 mentions on 24 GB.
* `multi_similarity_loss`: PML `MultiSimilarityLoss(alpha, beta, base)`.

All take a validity mask so padded slots are excluded everywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
_BIG_NEG = -1e30  # finite "minus infinity": keeps gradients NaN-free


def mlm_sums(logits: Array, labels: Array, weights: Array
             ) -> tuple[Array, Array, Array]:
  """Summed cross-entropy, correct predictions and count over the selected
  tokens: what a batch split into micro-batches adds up exactly.

  Args:
    logits: (..., K, V) vocabulary logits at the K selected positions.
    labels: (..., K) original token ids.
    weights: (..., K) 1 for real selections, 0 for padding slots.
  """
  logits = logits.astype(jnp.float32)
  w = weights.astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return jnp.sum(nll * w), jnp.sum(correct * w), jnp.sum(w)


def mlm_loss(logits: Array, labels: Array, weights: Array
             ) -> tuple[Array, Array, Array]:
  """Mean cross-entropy over selected tokens (shapes as `mlm_sums`).

  Returns:
    (loss, accuracy, number of selected tokens); loss and accuracy are 0
    when nothing is selected.
  """
  nll, correct, n = mlm_sums(logits, labels, weights)
  denom = jnp.maximum(n, 1.0)
  return nll / denom, correct / denom, n


def cosine_similarity_matrix(x: Array, y: Array, eps: float = 1e-12) -> Array:
  """(M, D), (N, D) -> (M, N) cosine similarities in float32."""
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  x = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), eps))
  y = y * jax.lax.rsqrt(jnp.maximum(jnp.sum(y * y, -1, keepdims=True), eps))
  return x @ y.T


def _pair_masks(labels: Array, mask: Array) -> tuple[Array, Array]:
  valid = mask.astype(bool)
  both = valid[:, None] & valid[None, :]
  same = labels[:, None] == labels[None, :]
  eye = jnp.eye(labels.shape[0], dtype=bool)
  return both & same & ~eye, both & ~same  # positives, negatives


def nt_xent_loss(embeddings: Array, labels: Array, mask: Array,
                 temperature: float = 0.07) -> tuple[Array, Array]:
  """NT-Xent over a set of embeddings with integer labels.

  Args:
    embeddings: (M, D); for BALI concat(text entities, graph entities).
    labels: (M,) concept ids; for BALI concat(ids, ids).
    mask: (M,) 1 for real embeddings, 0 for padding.
    temperature: tau; similarities are cosine / tau.
  Returns:
    (loss, number of positive pairs). Loss 0 when there is no positive pair.
  """
  s = cosine_similarity_matrix(embeddings, embeddings) / temperature  # (M, M)
  pos, neg = _pair_masks(labels, mask)
  # log sum_n exp(s_an) over the anchor's negatives: (M, 1)
  neg_lse = jax.nn.logsumexp(jnp.where(neg, s, _BIG_NEG), axis=-1,
                             keepdims=True)
  # -log(e^{s_ap} / (e^{s_ap} + e^{neg_lse})) = softplus(neg_lse - s_ap),
  # written so that small losses keep their precision in float32
  pair_loss = jax.nn.softplus(neg_lse - s)  # (M, M)
  n_pos = jnp.sum(pos)
  loss = jnp.sum(jnp.where(pos, pair_loss, 0.0)) / jnp.maximum(n_pos, 1)
  return loss, n_pos


def multi_similarity_loss(embeddings: Array, labels: Array, mask: Array,
                          alpha: float = 2.0, beta: float = 50.0,
                          base: float = 0.5) -> Array:
  """Multi-similarity loss (PML semantics, no miner), mean over anchors.

  Per valid anchor i: (1/alpha) log(1 + sum_{p in P_i} e^{-alpha (S_ip - base)})
  + (1/beta) log(1 + sum_{n in N_i} e^{beta (S_in - base)}), S cosine.
  """
  s = cosine_similarity_matrix(embeddings, embeddings)
  pos, neg = _pair_masks(labels, mask)

  def log1p_sum_exp(x, keep):  # log(1 + sum_keep e^x), stable
    x = jnp.where(keep, x, _BIG_NEG)
    x = jnp.concatenate([x, jnp.zeros_like(x[:, :1])], axis=-1)
    return jax.nn.logsumexp(x, axis=-1)

  pos_loss = log1p_sum_exp(-alpha * (s - base), pos) / alpha
  neg_loss = log1p_sum_exp(beta * (s - base), neg) / beta
  valid = mask.astype(jnp.float32)
  return jnp.sum((pos_loss + neg_loss) * valid) / jnp.maximum(
      jnp.sum(valid), 1.0)


def retrieval_accuracy(text: Array, graph: Array, labels: Array,
                       mask: Array) -> Array:
  """Text -> graph top-1 retrieval accuracy inside the batch.

  A text entity is right when its most similar graph entity (among valid
  ones) has the same concept id.
  """
  s = cosine_similarity_matrix(text, graph)
  labels = jnp.asarray(labels)
  valid = jnp.asarray(mask).astype(bool)
  s = jnp.where(valid[None, :], s, -jnp.inf)
  hit = labels[jnp.argmax(s, axis=-1)] == labels
  return jnp.sum(hit & valid) / jnp.maximum(jnp.sum(valid), 1)
