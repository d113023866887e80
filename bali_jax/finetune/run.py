"""One fine-tuning run (one fold, one seed): state, step, epochs, resume.

The state is {"step", "params", "opt"} with shardings derived from the
parameters' logical names over a data-parallel mesh of all devices; the
batch is split over the devices. One Orbax checkpoint (atomic) holds the
state and the best-on-dev parameters so far, written at every epoch end
and on SIGTERM: a kill at any moment resumes with a best model that
matches the history it was chosen from. `run.json` marks a finished run,
so a resumed multi-run job skips it.
"""

from __future__ import annotations

import json
import math
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from tqdm import tqdm

from bali_jax import storage
from bali_jax.finetune import batches as tb
from bali_jax.model.heads import BertClassifier, loss_fn
from bali_jax.train import sharding
from bali_jax.train.checkpoint import Checkpointer
from bali_jax.train.metrics import MetricsWriter


def make_model(loaded, data, cfg) -> BertClassifier:
  bert = loaded.config.replace(dtype=cfg.dtype)
  drop = None if cfg.classifier_dropout < 0 else cfg.classifier_dropout
  return BertClassifier(bert, len(data.labels), data.kind, drop)


def _decay_mask(params):
  """AdamW decays weights (kernels, embeddings), not biases or LayerNorm
  (HF Trainer's rule)."""
  return jax.tree_util.tree_map_with_path(
      lambda p, _: getattr(p[-1], "key", None) in ("kernel", "embedding"),
      params)


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
  warm = math.ceil(cfg.warmup_ratio * total_steps)
  sched = optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.lr, max(warm, 1)),
       optax.linear_schedule(cfg.lr, 0.0, max(total_steps - warm, 1))],
      [warm])
  return optax.chain(
      optax.clip_by_global_norm(cfg.max_grad_norm),
      optax.adamw(sched, b1=0.9, b2=0.999, eps=1e-8,
                  weight_decay=cfg.weight_decay, mask=_decay_mask))


def _example(enc: tb.Encoded, batch_size: int) -> dict:
  return next(tb.batches(enc, batch_size))


def init_state(model, loaded, example, tx, mesh, seed: int):
  """Fresh head (and pooler, if the checkpoint has none) + the loaded
  BERT, placed with derived shardings; returns (state, shardings)."""
  args = (example["input_ids"][:1], example["attention_mask"][:1],
          example["token_type_ids"][:1])
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(seed),
                                            *args)["params"])
  p_sh = sharding.param_shardings(boxed, mesh)
  params = jax.jit(lambda r: nn.meta.unbox(model.init(r, *args)["params"]),
                   out_shardings=p_sh)(jax.random.key(seed))
  bert = dict(params["bert"])
  loaded_bert = loaded.params
  missing = sorted(set(bert) - set(loaded_bert))
  for k in loaded_bert:
    if k not in bert:
      raise ValueError(f"{loaded.source}: parameter {k!r} has no place in "
                       "the task model")
    bert[k] = jax.device_put(jax.tree.map(np.asarray, loaded_bert[k]),
                             p_sh["bert"][k])
  params = {**params, "bert": bert}
  opt_abs = jax.eval_shape(tx.init, params)
  o_sh = sharding.like_params(opt_abs, params, p_sh, mesh)
  opt = jax.jit(tx.init, out_shardings=o_sh)(params)
  sh = {"step": sharding.replicated(mesh), "params": p_sh, "opt": o_sh}
  state = {"step": jax.device_put(jnp.zeros((), jnp.int32), sh["step"]),
           "params": params, "opt": opt}
  return state, sh, missing


def jit_steps(model, kind, tx, mesh, state_sh, seed: int):
  def train_step(state, batch):
    rng = jax.random.fold_in(jax.random.key(seed), state["step"])

    def loss_of(p):
      logits = model.apply({"params": p}, batch["input_ids"],
                           batch["attention_mask"], batch["token_type_ids"],
                           deterministic=False, rngs={"dropout": rng})
      return loss_fn(kind, logits, batch["labels"], batch["weights"])
    loss, grads = jax.value_and_grad(loss_of)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return ({"step": state["step"] + 1, "params": params, "opt": opt},
            {"loss": loss, "grad_norm": optax.global_norm(grads)})

  def logits_of(params, batch):
    return model.apply({"params": params}, batch["input_ids"],
                       batch["attention_mask"], batch["token_type_ids"])

  rep = sharding.replicated(mesh)
  step = jax.jit(train_step, out_shardings=(state_sh, rep),
                 donate_argnums=0)
  return step, jax.jit(logits_of, out_shardings=rep)


def _put(batch, mesh):
  return {k: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim))
          for k, v in batch.items()}


def evaluate(logits_fn, params, enc, batch_size, mesh) -> np.ndarray:
  out = [np.asarray(logits_fn(params, _put(b, mesh)))
         for b in tb.batches(enc, batch_size)]
  return np.concatenate(out)[:len(enc)]


def run_one(run, data, loaded, cfg, run_dir: str, length: int):
  """Trains one run to the end (or to SIGTERM: returns None); returns its
  results dict. SIGTERM is the run's while it lasts (train/preemption)."""
  from bali_jax.train.preemption import Preemption
  with Preemption() as preempt:
    return train_run(run, data, loaded, cfg, run_dir, length, preempt)


def train_run(run, data, loaded, cfg, run_dir: str, length: int, preempt):
  """`run_one` under its SIGTERM handler `preempt`."""
  done = storage.join(run_dir, "run.json")
  if storage.exists(done):
    print(f"{run.name}: finished earlier, kept")
    return json.loads(storage.read_text(done))
  n_dev = jax.device_count()
  for name, b in (("batch_size", cfg.batch_size),
                  ("eval_batch_size", cfg.eval_batch_size or cfg.batch_size)):
    if b % n_dev:
      raise ValueError(f"{name}={b} is not a multiple of the {n_dev} "
                       "devices the batch is split over")
  mesh = Mesh(np.asarray(jax.devices()).reshape(n_dev, 1, 1),
              sharding.MESH_AXES)
  metric = cfg.best_metric(data.kind)
  negative = cfg.negative(data.labels)
  if metric not in tb.metric_names(data.kind, negative):
    raise ValueError(f"metric={metric!r}: a {data.kind} task reports "
                     f"{tb.metric_names(data.kind, negative)}")
  model = make_model(loaded, data, cfg)
  spe = tb.steps_per_epoch(len(run.train), cfg.batch_size)
  total = spe * cfg.epochs
  tx = make_optimizer(cfg, total)
  state, state_sh, missing = init_state(
      model, loaded, _example(run.train, cfg.batch_size), tx, mesh, run.seed)
  if missing:
    print(f"{run.name}: fresh {', '.join(missing)} (not in {loaded.label})")
  step_fn, logits_fn = jit_steps(model, data.kind, tx, mesh, state_sh,
                                 run.seed)
  ckpt = Checkpointer(storage.join(run_dir, "checkpoints"), keep=1)
  meta = {"history": [], "best": None, "best_epoch": None, "stale": 0}
  best = _copy(state["params"])  # the best-on-dev parameters so far
  start = ckpt.latest_step()
  if start is not None:
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        {"train": state, "best": best},
        {"train": state_sh, "best": state_sh["params"]})
    both, meta = ckpt.restore(start, abstract)
    state, best = both["train"], both["best"]
    print(f"{run.name}: resumed at step {start}")
  start = start or 0
  writer = MetricsWriter(run_dir, True, start=start)
  eval_bs = cfg.eval_batch_size or cfg.batch_size
  bar = tqdm(total=total, initial=start, desc=run.name, unit="step",
             file=sys.stderr)
  step = start
  stopped = meta["stale"] >= cfg.patience > 0
  for epoch in range(start // spe, cfg.epochs):
    if stopped:
      break
    order = np.random.default_rng([run.seed, epoch]).permutation(
        len(run.train))
    for batch in tb.batches(run.train, cfg.batch_size, order,
                            start=step - epoch * spe):
      state, m = step_fn(state, _put(batch, mesh))
      step += 1
      writer.write(step, {k: float(v) for k, v in m.items()})
      bar.update(1)
      if step % spe and preempt.agreed():  # an epoch's end evaluates first
        return _preempted(step, state, best, meta, ckpt, writer, bar)
    dev = tb.metrics(data.kind, evaluate(logits_fn, state["params"], run.dev,
                                         eval_bs, mesh), run.dev.labels,
                     len(data.labels), run.dev.uids, negative)
    writer.write(step, dev, prefix="dev_")
    meta["history"].append({"epoch": epoch, "step": step, **dev})
    if meta["best"] is None or dev[metric] > meta["best"]:
      meta.update(best=dev[metric], best_epoch=epoch, stale=0)
      best = _copy(state["params"])
    else:
      meta["stale"] += 1
    ckpt.save(step, {"train": state, "best": best}, meta, force=True)
    bar.set_postfix({f"dev_{metric}": f"{dev[metric]:.3f}"})
    stopped = meta["stale"] >= cfg.patience > 0
    if epoch + 1 < cfg.epochs and not stopped and preempt.agreed():
      return _preempted(step, state, best, meta, ckpt, writer, bar)
  bar.close()
  ckpt.close()
  writer.close()
  params = best
  best_dev = meta["history"][meta["best_epoch"]]
  result = {"name": run.name, "seed": run.seed, "steps": step,
            "best_epoch": meta["best_epoch"], "epochs_run": len(
                meta["history"]), "stopped_early": stopped,
            "dev": {k: v for k, v in best_dev.items()
                    if k not in ("epoch", "step")},
            "history": meta["history"],
            # fixed shapes: one compilation serves the run (1 in the tests)
            "train_step_compilations": step_fn._cache_size()}
  if run.test is not None:
    logits = evaluate(logits_fn, params, run.test, eval_bs, mesh)
    result["test"] = tb.metrics(data.kind, logits, run.test.labels,
                                len(data.labels), run.test.uids, negative)
    write_predictions(storage.join(run_dir, "predictions_test.jsonl"),
                      data, run.test, logits)
  if cfg.export:
    from bali_jax.hf.export import export_task_model
    export_task_model(model, jax.device_get(params), data,
                      storage.join(run_dir, "hf"), loaded.tokenizer)
    result["export"] = storage.join(run_dir, "hf")
  storage.write_text(done, json.dumps(result, indent=2) + "\n")
  print(f"{run.name}: best epoch {meta['best_epoch']} dev {metric} "
        f"{result['dev'][metric]:.4f}"
        + (f", test {result['test'][metric]:.4f}" if "test" in result
           else ""))
  return result


def _copy(params):
  """A copy that survives the step donating the state's buffers."""
  return jax.tree.map(jnp.copy, params)


def _preempted(step, state, best, meta, ckpt, writer, bar):
  if ckpt.latest_step() != step:
    ckpt.save(step, {"train": state, "best": best}, meta, force=True)
  ckpt.close()
  writer.close()
  bar.close()
  print(f"SIGTERM: saved step {step}, stopping", flush=True)
  return None


def write_predictions(path, data, enc, logits) -> None:
  pred = tb.predict(data.kind, logits)
  lines = []
  for uid, p, row in zip(enc.uids, pred, logits):
    label = ([data.labels[k] for k in np.flatnonzero(p)]
             if data.kind == "multi" else data.labels[int(p)])
    lines.append(json.dumps({"id": uid, "prediction": label,
                             "logits": [round(float(x), 6) for x in row]}))
  storage.write_text(path, "\n".join(lines) + "\n")

