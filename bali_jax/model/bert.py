"""A Flax (linen) BERT encoder that reproduces `transformers.BertModel`.

transformers v5 ships no Flax models, so this is our own code. It matches the
PyTorch model numerically (see tests/bert_test.py) and adds what pre-training
at scale needs:

* segment-aware attention: several sentences packed into one row attend only
  within their own segment and restart their position ids;
* logical axis names on every parameter (`vocab`, `embed`, `heads`, `kv`,
  `mlp`, `layers`, ...) so shardings are derived from one rules table;
* float32 or bfloat16 compute with float32 params, LayerNorm and softmax;
* optional rematerialisation and `nn.scan` over layers.

Parameter tree (unscanned): {embeddings, encoder/layer_{i}, pooler?}; with
`scan_layers` the layers live stacked in encoder/layers with a leading
`layers` axis. `bali_jax.hf.mapping` converts either layout to HF names.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bali_jax.model.config import BertConfig

Array = jax.Array
_NEG_INF = float(jnp.finfo(jnp.float32).min)


def dense_init(config: BertConfig, names: tuple[str | None, ...]):
  """BERT's normal(initializer_range) kernel init with logical axis names
  (shared with the task heads)."""
  return nn.with_logical_partitioning(
      nn.initializers.normal(config.initializer_range), names)


def logical_zeros(names):
  """Zeros with logical axis names (biases; shared with the task heads)."""
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _ones(names):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


def compute_dtype(config: BertConfig):
  return jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32


def _fused_attention(c, q, k, v, mask, dt, dropping: bool):
  """(B, L, H, Dh) context from jax.nn.dot_product_attention, or None where
  our einsum attention runs instead (see `config.ATTENTION_IMPLS`). A
  fully masked (padding) query row may differ between the two; padding
  rows are never read."""
  impl = c.attention
  if impl == "auto":
    if dropping or dt != jnp.bfloat16 or jax.default_backend() != "gpu":
      return None
    impl = "cudnn"
    fallback = True
  else:
    fallback = False
  if impl == "einsum":
    return None
  if dropping:
    raise ValueError(f"attention={c.attention!r} has no attention dropout: "
                     "set attention_probs_dropout_prob=0 or attention=auto")
  try:
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask[:, None, :, :], scale=c.head_dim ** -0.5,
        implementation=impl)
  except (NotImplementedError, ValueError, RuntimeError):
    if not fallback:  # cuDNN refused these shapes or this GPU at trace time
      raise
    return None


def activation(config: BertConfig, x: Array) -> Array:
  # BERT's "gelu" is the exact erf GELU; jax.nn.gelu defaults to tanh.
  return jax.nn.gelu(x, approximate=not config.exact_gelu)


class LayerNorm(nn.Module):
  """LayerNorm computed in float32 whatever the compute dtype.

  Two-pass variance, as torch.nn.LayerNorm, so parity with HF stays tight.
  """
  eps: float
  out_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d = x.shape[-1]
    scale = self.param("scale", _ones(("embed",)), (d,), jnp.float32)
    bias = self.param("bias", logical_zeros(("embed",)), (d,), jnp.float32)
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
    return y.astype(self.out_dtype)


def segment_positions(segment_ids: Array) -> Array:
  """Position ids that restart at 0 at the start of every packed segment.

  Args:
    segment_ids: (B, L) ints, contiguous runs of equal ids, 0 for padding.
  Returns:
    (B, L) int32 positions: index minus the index where the segment started.
  """
  length = segment_ids.shape[-1]
  idx = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32),
                         segment_ids.shape)
  first = jnp.ones(segment_ids.shape[:-1] + (1,), bool)
  starts = jnp.concatenate(
      [first, segment_ids[..., 1:] != segment_ids[..., :-1]], axis=-1)
  start_idx = jax.lax.cummax(jnp.where(starts, idx, 0), axis=idx.ndim - 1)
  return idx - start_idx


def attention_mask_2d(attention_mask: Array | None,
                      segment_ids: Array | None,
                      shape: tuple[int, int]) -> Array:
  """Boolean (B, Lq, Lk) mask of which keys each query may attend to."""
  b, length = shape
  mask = jnp.ones((b, 1, length), bool)
  if attention_mask is not None:
    mask = mask & (attention_mask[:, None, :] > 0)
  if segment_ids is not None:
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    mask = mask & same & (segment_ids[:, None, :] > 0)
  return jnp.broadcast_to(mask, (b, length, length))


class BertEmbeddings(nn.Module):
  config: BertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, input_ids, token_type_ids, position_ids):
    c = self.config
    init = dense_init(c, ("vocab", "embed"))
    word = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=init,
                    name="word_embeddings")(input_ids)
    pos = nn.Embed(c.max_position_embeddings, c.hidden_size,
                   embedding_init=dense_init(c, ("position", "embed")),
                   name="position_embeddings")(position_ids)
    tt = nn.Embed(c.type_vocab_size, c.hidden_size,
                  embedding_init=dense_init(c, ("token_type", "embed")),
                  name="token_type_embeddings")(token_type_ids)
    x = LayerNorm(c.layer_norm_eps, compute_dtype(c),
                  name="LayerNorm")(word + pos + tt)  # (B, L, D)
    return nn.Dropout(c.hidden_dropout_prob)(x, self.deterministic)


class BertLayer(nn.Module):
  """One post-LN transformer block, as in HF BertLayer."""
  config: BertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, mask: Array) -> Array:
    c = self.config
    dt = compute_dtype(c)
    h, dh = c.num_attention_heads, c.head_dim
    qkv = functools.partial(
        nn.DenseGeneral, features=(h, dh), dtype=dt, param_dtype=jnp.float32,
        kernel_init=dense_init(c, ("embed", "heads", "kv")),
        bias_init=logical_zeros(("heads", "kv")))
    q = qkv(name="query")(x)  # (B, L, H, Dh)
    k = qkv(name="key")(x)
    v = qkv(name="value")(x)
    dropping = (not self.deterministic
                and c.attention_probs_dropout_prob > 0)
    ctx = _fused_attention(c, q, k, v, mask, dt, dropping)
    if ctx is None:
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                          preferred_element_type=jnp.float32)
      scores = scores * (dh ** -0.5)  # (B, H, L, L) f32
      scores = jnp.where(mask[:, None, :, :], scores, _NEG_INF)
      probs = jax.nn.softmax(scores, axis=-1)
      probs = nn.Dropout(c.attention_probs_dropout_prob)(
          probs, self.deterministic).astype(dt)
      ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v)  # (B, L, H, Dh)
    attn = nn.DenseGeneral(
        c.hidden_size, axis=(-2, -1), dtype=dt, param_dtype=jnp.float32,
        kernel_init=dense_init(c, ("heads", "kv", "embed")),
        bias_init=logical_zeros(("embed",)), name="attention_output")(ctx)
    attn = nn.Dropout(c.hidden_dropout_prob)(attn, self.deterministic)
    x = LayerNorm(c.layer_norm_eps, dt, name="attention_LayerNorm")(attn + x)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    y = nn.Dense(c.intermediate_size, dtype=dt, param_dtype=jnp.float32,
                 kernel_init=dense_init(c, ("embed", "mlp")),
                 bias_init=logical_zeros(("mlp",)), name="intermediate")(x)
    y = activation(c, y)  # (B, L, F)
    y = nn.Dense(c.hidden_size, dtype=dt, param_dtype=jnp.float32,
                 kernel_init=dense_init(c, ("mlp", "embed")),
                 bias_init=logical_zeros(("embed",)), name="output")(y)
    y = nn.Dropout(c.hidden_dropout_prob)(y, self.deterministic)
    out = LayerNorm(c.layer_norm_eps, dt, name="output_LayerNorm")(y + x)
    return nn.with_logical_constraint(out, ("batch", "length", "embed"))


_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _layer_cls(config: BertConfig):
  if config.remat_policy == "none":
    return BertLayer
  return nn.remat(BertLayer, policy=_REMAT[config.remat_policy])


class _ScannedLayer(nn.Module):
  """Adapter giving BertLayer the (carry, x) -> (carry, y) scan signature."""
  config: BertConfig
  deterministic: bool
  keep_states: bool

  @nn.compact
  def __call__(self, x, mask):
    y = _layer_cls(self.config)(self.config, self.deterministic,
                                name="layer")(x, mask)
    return y, (y if self.keep_states else None)


class BertEncoder(nn.Module):
  config: BertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, mask: Array, output_hidden_states: bool):
    c = self.config
    if c.scan_layers:
      scanned = nn.scan(
          _ScannedLayer, variable_axes={"params": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast,), length=c.num_hidden_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})
      x_out, ys = scanned(c, self.deterministic, output_hidden_states,
                          name="layers")(x, mask)
      if not output_hidden_states:
        return x_out, None
      return x_out, jnp.concatenate([x[None], ys], axis=0)  # (N+1, B, L, D)
    layer_cls = _layer_cls(c)
    states = [x]
    for i in range(c.num_hidden_layers):
      x = layer_cls(c, self.deterministic, name=f"layer_{i}")(x, mask)
      states.append(x)
    return x, (jnp.stack(states) if output_hidden_states else None)


class BertModel(nn.Module):
  """BERT encoder (+ optional pooler), HF `BertModel` semantics.

  Attributes:
    config: the architecture and runtime options.
    add_pooler: create the [CLS] pooler (dense + tanh). BALI never trains it
      but keeps it so an export loads in `AutoModel` with no fresh weights.
  """
  config: BertConfig
  add_pooler: bool = True

  @nn.compact
  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               token_type_ids: Array | None = None,
               segment_ids: Array | None = None,
               position_ids: Array | None = None,
               deterministic: bool = True,
               output_hidden_states: bool = False) -> dict[str, Array]:
    """Encodes a batch of (possibly packed) token rows.

    Args:
      input_ids: (B, L) token ids.
      attention_mask: (B, L) 1 for real tokens, 0 for padding.
      token_type_ids: (B, L) segment A/B ids (HF meaning); zeros if None.
      segment_ids: (B, L) packing ids: tokens attend only to tokens with the
        same id; 0 marks padding. Positions restart per segment.
      position_ids: (B, L) explicit positions (override the above).
      deterministic: disable dropout.
      output_hidden_states: also return every layer's states.
    Returns:
      dict with last_hidden_state (B, L, D), pooler_output (B, D) if the
      pooler exists, hidden_states (N+1, B, L, D) if requested.
    """
    c = self.config
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if position_ids is None:
      if segment_ids is not None:
        position_ids = segment_positions(segment_ids)
      else:
        position_ids = jnp.broadcast_to(
            jnp.arange(input_ids.shape[-1], dtype=jnp.int32), input_ids.shape)
    mask = attention_mask_2d(attention_mask, segment_ids, input_ids.shape)
    x = BertEmbeddings(c, deterministic, name="embeddings")(
        input_ids, token_type_ids, position_ids)
    x, states = BertEncoder(c, deterministic, name="encoder")(
        x, mask, output_hidden_states)
    out = {"last_hidden_state": x}
    if states is not None:
      out["hidden_states"] = states
    if self.add_pooler:
      out["pooler_output"] = BertPooler(c, name="pooler")(x[:, 0])
    return out


class BertPooler(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, cls_state: Array) -> Array:
    c = self.config
    y = nn.Dense(c.hidden_size, dtype=compute_dtype(c),
                 param_dtype=jnp.float32,
                 kernel_init=dense_init(c, ("embed", "mlp")),
                 bias_init=logical_zeros(("mlp",)), name="dense")(cls_state)
    return jnp.tanh(y)


class MlmHead(nn.Module):
  """BERT MLM head: Dense -> GELU -> LayerNorm -> Dense(vocab) + bias.

  Untied from the input embeddings (BALI trains a fresh head). Apply it to
  the gathered masked positions only: (..., D) -> (..., V) in float32.
  """
  config: BertConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    dt = compute_dtype(c)
    y = nn.Dense(c.hidden_size, dtype=dt, param_dtype=jnp.float32,
                 kernel_init=dense_init(c, ("embed", "mlp")),
                 bias_init=logical_zeros(("mlp",)), name="transform")(x)
    y = activation(c, y)
    y = LayerNorm(c.layer_norm_eps, dt, name="transform_LayerNorm")(y)
    logits = nn.Dense(c.vocab_size, use_bias=False, dtype=dt,
                      param_dtype=jnp.float32,
                      kernel_init=dense_init(c, ("embed", "vocab")),
                      name="decoder")(y)
    bias = self.param("bias", logical_zeros(("vocab",)), (c.vocab_size,),
                      jnp.float32)
    return logits.astype(jnp.float32) + bias


def init_params(config: BertConfig, rng: Array, pooler: bool = True,
                mlm_head: bool = True, unbox: bool = True) -> dict[str, Any]:
  """Fresh parameters {"bert": ..., "mlm_head": ...} (HF-style init).

  With `unbox=False` the leaves stay `nn.LogicallyPartitioned`, which is
  what sharding derivation (`nn.get_partition_spec`) reads.
  """
  r_bert, r_head = jax.random.split(rng)
  ids = jnp.zeros((1, 8), jnp.int32)
  out = {"bert": BertModel(config, add_pooler=pooler).init(r_bert,
                                                           ids)["params"]}
  if mlm_head:
    x = jnp.zeros((1, config.hidden_size), jnp.float32)
    out["mlm_head"] = MlmHead(config).init(r_head, x)["params"]
  return nn.meta.unbox(out) if unbox else out


def abstract_params(config: BertConfig, pooler: bool = True,
                    mlm_head: bool = True) -> dict[str, Any]:
  """Shapes/dtypes of `init_params` without allocating anything."""
  return jax.eval_shape(
      functools.partial(init_params, config, pooler=pooler,
                        mlm_head=mlm_head), jax.random.key(0))
