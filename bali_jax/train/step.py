"""Train state, optimiser and the pure step functions.

`train_step(state, batch, rng) -> (state, metrics)` is pure; the caller jits
it with in/out shardings and donates the state. The dropout/masking RNG is
folded from (seed, step) so a resumed run draws exactly the same numbers.

Optimiser as the authors (spec 3.1): AdamW, weight decay 0.01 on every
trained parameter, two learning rates via optax.multi_transform (BERT 2e-5,
everything else 1e-4), linear warm-up for min(0.1 x total, 10k) steps then
cosine to 0. The pooler is frozen: PyTorch's AdamW skips parameters whose
gradient is None (the pooler is never used), so it must not decay either.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bali_jax.train import flops, masking
from bali_jax.model.bali import DIFFERENTIABLE, BaliModel, objective


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def schedule(peak: float, cfg, frozen_steps: int = 0) -> optax.Schedule:
  """Warm-up then cosine to 0 over the run; with `frozen_steps`, 0 for
  those first steps and the same shape over the steps that remain."""
  steps = max(cfg.steps - frozen_steps, 1)
  warmup = min(int(cfg.warmup_ratio * steps), cfg.max_warmup_steps)
  base = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(steps, warmup + 1), end_value=0.0)
  if not frozen_steps:
    return base
  return lambda step: jnp.where(step < frozen_steps, 0.0,
                                base(jnp.maximum(step - frozen_steps, 0)))


def lm_schedule(cfg) -> optax.Schedule:
  """The BERT's rate: held at 0 for `freeze_bert_steps` (the fresh MLM
  head and the GNN warm up against a fixed encoder)."""
  return schedule(cfg.lr_lm, cfg, cfg.freeze_bert_steps)


def _labels(params):
  def label(path, _):
    keys = [getattr(k, "key", None) for k in path]
    if keys[:2] == ["bert", "pooler"]:
      return "frozen"
    return "lm" if keys[0] == "bert" else "other"
  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(cfg) -> optax.GradientTransformation:
  def adamw(lr):
    return optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8,
                       weight_decay=cfg.weight_decay)
  # adamw scales its decay by the rate too: a frozen BERT stays bit-exact
  tx = optax.multi_transform(
      {"lm": adamw(lm_schedule(cfg)), "other": adamw(schedule(cfg.lr_other,
                                                              cfg)),
       "frozen": optax.set_to_zero()}, _labels)
  if cfg.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx


def init_state(cfg, rng, batch_example, tx) -> TrainState:
  """Fresh state; params keep their LogicallyPartitioned boxes (the caller
  derives shardings from them and unboxes). One jitted program: called
  eagerly, Flax's init would compile every initialiser op by op."""
  return init_fn(cfg.model, tx)(rng, batch_example)


@functools.lru_cache(maxsize=4)
def init_fn(model_cfg, tx):
  """The jitted init of a model config and optimiser, one function object
  per pair: `abstract_state`'s shape pass and `create_state`'s sharded init
  call the same object, so JAX traces the model's init once (a second
  trace of BERT-large's init costs seconds)."""
  model = BaliModel(model_cfg)

  @jax.jit
  def init(rng, batch):
    params = model.init(rng, batch)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(nn.meta.unbox(params)))
  return init


def corrupt(cfg, spec, batch, rng):
  seq_len = batch["input_ids"].shape[1]
  k_lin = (flops.mlm_slots(cfg, batch["lin_ids"].shape[-1])
           if cfg.model.graph_mlm else 0)
  return masking.corrupt(
      batch, rng, mask_id=spec["mask_token_id"],
      special_ids=spec["special_token_ids"], vocab_size=spec["vocab_size"],
      mlm_probability=cfg.mlm_probability,
      max_predictions=flops.mlm_slots(cfg, seq_len),
      mention_masking_prob=cfg.mention_masking_prob,
      name_masking_prob=cfg.concept_name_masking_prob,
      graph_mlm_predictions=k_lin)


def _grads_one_batch(model, params, batch, r_drop):
  def loss_fn(p):
    m = model.apply({"params": p}, batch, deterministic=False,
                    rngs={"dropout": r_drop})
    return m["loss"], m
  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return grads, metrics


def grads_accumulated(model, cfg, params, batch, r_drop, n_micro):
  """Gradients of the loss of the WHOLE batch at the memory of one
  micro-batch (GradCache, Gao et al. 2021): (1) embed every micro-batch
  without gradients; (2) take the loss over all embeddings together and its
  gradient with respect to them; (3) per micro-batch, recompute the
  embeddings (same dropout) and back-propagate that gradient through them
  (a VJP). Exactly the loss and gradients of one big batch (NT-Xent sees
  every entity of the batch, MLM averages over all selected tokens), for
  one extra forward pass."""
  micro = jax.tree.map(lambda x: x.reshape((n_micro, -1) + x.shape[1:]),
                       batch)

  def embed(p, mb, i):
    return model.apply({"params": p}, mb, deterministic=False,
                       rngs={"dropout": jax.random.fold_in(r_drop, i)},
                       embeddings_only=True)

  def split(emb):
    return ({k: v for k, v in emb.items() if k in DIFFERENTIABLE},
            {k: v for k, v in emb.items() if k not in DIFFERENTIABLE})

  idx = jnp.arange(n_micro)
  embs = jax.lax.map(lambda xs: embed(params, *xs), (micro, idx))  # (n, ..)
  # micro-batch i holds rows i*Bm .. (i+1)*Bm - 1: merge (n, Bm) -> (B,)
  merged = jax.tree.map(
      lambda x: x.reshape((-1,) + x.shape[2:]) if x.ndim > 1 else x, embs)
  diff, rest = split(merged)

  def total(d):
    m = objective(cfg.model, {**d, **rest})
    return m["loss"], m

  (_, metrics), d_grad = jax.value_and_grad(total, has_aux=True)(diff)
  d_grad = jax.tree.map(lambda g, e: g.reshape(e.shape), d_grad,
                        split(embs)[0])  # back to (n, ...) per micro-batch

  def body(acc, xs):
    mb, i, g_i = xs
    _, vjp = jax.vjp(lambda p: split(embed(p, mb, i))[0], params)
    (g,) = vjp(g_i)
    return jax.tree.map(jnp.add, acc, g), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, _ = jax.lax.scan(body, zeros, (micro, idx, d_grad))
  return grads, metrics


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, cfg,
               spec, tx) -> tuple[TrainState, dict]:
  """One optimiser update (optionally over several micro-batches).

  The batch is corrupted once as a whole (the masks do not depend on how
  it is split); with `grad_accum_steps > 1` the gradients come from
  `grads_accumulated`, equal to one pass over the whole batch.
  """
  model = BaliModel(cfg.model)
  rng = jax.random.fold_in(rng, state.step)
  r_mask, r_drop = jax.random.split(rng)
  corrupted = corrupt(cfg, spec, batch, r_mask)
  if cfg.grad_accum_steps == 1:
    grads, metrics = _grads_one_batch(model, state.params, corrupted, r_drop)
  else:
    grads, metrics = grads_accumulated(model, cfg, state.params, corrupted,
                                        r_drop, cfg.grad_accum_steps)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # NaN/Inf policy: a non-finite loss, gradient or result skips the update
  # (the step counter and the data still move on)
  grad_norm = optax.tree.norm(grads)
  ok = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
        & jnp.isfinite(optax.tree.norm(params)))
  keep = lambda new, old: jnp.where(ok, new, old)
  params = jax.tree.map(keep, params, state.params)
  opt_state = jax.tree.map(keep, opt_state, state.opt_state)
  counts = flops.real_counts(cfg, corrupted, metrics["num_mlm_tokens"])
  real = (counts["sentence_tokens"] + counts["name_tokens"]).astype(
      jnp.int32)
  real_flops = sum(flops.phase_flops(cfg, **counts).values())
  metrics = dict(metrics, grad_norm=grad_norm,
                 skipped=1 - ok.astype(jnp.int32),
                 real_tokens=real, real_flops=real_flops,
                 lr_lm=lm_schedule(cfg)(state.step),
                 lr_other=schedule(cfg.lr_other, cfg)(state.step))
  return TrainState(step=state.step + 1, params=params,
                    opt_state=opt_state), metrics


def eval_step(params, batch: dict, rng: jax.Array, *, cfg, spec) -> dict:
  """Losses on held-out rows (masking from a fixed RNG, no dropout)."""
  model = BaliModel(cfg.model)
  return model.apply({"params": params}, corrupt(cfg, spec, batch, rng),
                     deterministic=True)
