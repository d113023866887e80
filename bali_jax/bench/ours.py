"""Our step under the benchmark: the training step of `train.loop`, timed.

`OurStep` builds the sharded state and the very step function training
jits (`loop.jit_steps`), compiles it once (timed), then runs it on batches
already on the devices, synchronising after every step so each step's wall
time is its own. `phase_times` times each part of the step alone (forward
+ backward), to show where the time goes.
"""

from __future__ import annotations

import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bali_jax.train import input_pipeline as data
from bali_jax.train import loop, sharding
from bali_jax.train.state import create_state
from bali_jax.train.step import corrupt, make_optimizer


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class OurStep:
  def __init__(self, cfg, spec, local_batches: list[dict]):
    self.cfg, self.spec = cfg, spec
    self.mesh = sharding.make_mesh(cfg)
    self.tx = make_optimizer(cfg)
    self.state, _, shardings = create_state(
        cfg, spec, self.tx, self.mesh, jax.random.key(cfg.seed))
    step_fn, _, example = loop.jit_steps(cfg, spec, self.tx, self.mesh,
                                         shardings)
    self.rng = jax.random.key(cfg.seed + 1)
    t0 = time.perf_counter()
    self.compiled = step_fn.lower(self.state, example, self.rng).compile()
    self.compile_s = time.perf_counter() - t0
    drop = data.dropped_keys(cfg)
    self.batches = [sharding.global_batch(
        {k: v for k, v in b.items() if k not in drop}, self.mesh)
        for b in local_batches]
    self.i = 0
    self.last_metrics: list[dict] = []

  def memory(self) -> dict:
    mem = self.compiled.memory_analysis()
    if mem is None:
      return {}
    mib = lambda x: round(x / 2 ** 20, 1)
    return {"argument_mib": mib(mem.argument_size_in_bytes),
            "output_mib": mib(mem.output_size_in_bytes),
            "temp_mib": mib(mem.temp_size_in_bytes),
            "generated_code_mib": mib(mem.generated_code_size_in_bytes)}

  def run(self, n: int) -> list[float]:
    """Runs n steps (cycling over the batches); wall seconds of each."""
    times = []
    for _ in range(n):
      batch = self.batches[self.i % len(self.batches)]
      self.i += 1
      t0 = time.perf_counter()
      self.state, m = self.compiled(self.state, batch, self.rng)
      m = jax.device_get(m)  # waits for the step
      times.append(time.perf_counter() - t0)
      self.last_metrics.append({k: float(v) for k, v in m.items()})
    return times


def _median_time(fn, args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile + warm
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def phase_times(ours: OurStep, repeats: int = 3) -> dict:
  """Seconds of forward + backward of each phase alone, on the first
  batch (median of `repeats`), and the optimiser update. XLA fuses across
  phase boundaries inside the real step, so the parts add up to roughly,
  not exactly, the step."""
  import jraph
  from bali_jax import losses
  from bali_jax.model.bali import objective
  from bali_jax.model.bert import BertModel, MlmHead
  from bali_jax.model.gat import GraphEncoder
  from bali_jax.model.pooling import mention_pool, name_pool
  cfg, spec = ours.cfg, ours.spec
  c, bc = cfg.model, cfg.model.bert
  params = ours.state.params
  r = jax.random.key(7)
  batch = jax.jit(lambda b: corrupt(cfg, spec, b, r))(ours.batches[0])
  bert = BertModel(bc, add_pooler=c.keep_pooler)
  linear = c.graph_encoder == "linear"
  rows_key, seg_key = (("lin_ids", "lin_segment_ids") if linear
                       else ("name_ids", "name_segment_ids"))
  b_, nr, ln = batch[rows_key].shape

  def encode(p, ids, seg):
    return bert.apply({"params": p}, ids, segment_ids=seg,
                      deterministic=False,
                      rngs={"dropout": r})["last_hidden_state"]

  def fwd_bwd(f):
    def run(p, *xs):
      out, vjp = jax.vjp(f, p, *xs)
      return vjp(jax.tree.map(jnp.ones_like, out))
    return jax.jit(run)

  ids, seg = batch["input_ids"], batch["segment_ids"]
  nids = batch[rows_key].reshape(b_ * nr, ln)
  nseg = batch[seg_key].reshape(b_ * nr, ln)
  h = jax.jit(encode)(params["bert"], ids, seg)
  name_h = jax.jit(encode)(params["bert"], nids, nseg)
  if not linear:
    num_nodes = batch["node_mask"].shape[1]
    nodes = name_pool(name_h.reshape(b_, nr, ln, -1),
                      batch["name_segment_ids"], num_nodes, c.name_pooling)

  def mlm(p, hh):
    sel = jnp.take_along_axis(hh, batch["mlm_positions"][..., None], axis=1)
    nll, _, n = losses.mlm_sums(MlmHead(bc).apply({"params": p}, sel),
                                batch["mlm_labels"], batch["mlm_weights"])
    return jnp.sum(nll) / jnp.maximum(jnp.sum(n), 1.0)

  def gnn(p, x):
    graph = jraph.GraphsTuple(
        nodes=x, edges=batch.get("edge_relation"),
        senders=batch["edge_src"], receivers=batch["edge_dst"],
        n_node=jnp.sum(batch["node_mask"], 1, keepdims=True),
        n_edge=jnp.sum(batch["edge_mask"], 1, keepdims=True), globals=None)
    return GraphEncoder(c.gnn, bc.hidden_size, bc.layer_norm_eps, False,
                        kind=c.graph_encoder).apply(
        {"params": p}, graph, batch["entity_node"], batch["edge_mask"],
        rngs={"dropout": r})

  text = mention_pool(h, batch["mention_token"], batch["mention_entity"],
                      batch["mention_mask"], batch["entity_concept"].shape[1])
  if linear:  # g_v: the [CLS] state of each entity's linearised subgraph
    graph_out = jnp.take_along_axis(name_h.reshape(b_, nr * ln, -1),
                                    batch["entity_lin"][..., None], axis=1)
  else:
    graph_out = jax.jit(gnn)(params["gnn"], nodes)
  rest = {"mlm_nll": jnp.zeros(()), "mlm_correct": jnp.zeros(()),
          "mlm_count": jnp.ones(()), "entity_concept": batch["entity_concept"],
          "entity_mask": batch["entity_mask"], "num_nodes": jnp.zeros(())}

  def loss(t, g):
    return objective(c, {**rest, "text": t, "graph": g})["align_loss"]

  def opt(grads, opt_state, p):
    updates, o = ours.tx.update(grads, opt_state, p)
    return jax.tree.map(jnp.add, p, updates), o

  out = {
      "sentence_encoder": _median_time(fwd_bwd(encode),
                                       (params["bert"], ids, seg), repeats),
      # the graph side's BERT pass: concept names, or linearised subgraphs
      "name_encoder": _median_time(fwd_bwd(encode),
                                   (params["bert"], nids, nseg), repeats),
      "mlm_head": _median_time(jax.jit(jax.grad(mlm, argnums=(0, 1))),
                               (params["mlm_head"], h), repeats),
      **({} if linear else {"gnn": _median_time(
          fwd_bwd(gnn), (params["gnn"], nodes), repeats)}),
      "loss": _median_time(jax.jit(jax.grad(loss, argnums=(0, 1))),
                           (text.astype(jnp.float32),
                            graph_out.astype(jnp.float32)), repeats),
      "optimizer": _median_time(jax.jit(opt), (params, ours.state.opt_state,
                                               params), repeats),
  }
  return {k: round(v, 5) for k, v in out.items()}


def batch_counts(local_batches: list[dict], linear: bool = False) -> dict:
  """Real work per batch (means): sentences, entities, tokens (name tokens:
  the graph side's, linearised subgraphs for the linear kind)."""
  f = lambda key, fn: float(np.mean([fn(b[key]) for b in local_batches]))
  names = "lin" if linear else "name"
  return {
      "rows": int(local_batches[0]["input_ids"].shape[0]),
      "sentences": f("num_sentences", np.sum),
      "entities": f("entity_mask", np.sum),
      "nodes": f("node_mask", np.sum),
      "sentence_tokens": f("segment_ids", lambda x: np.sum(x > 0)),
      "name_tokens": f(f"{names}_segment_ids", lambda x: np.sum(x > 0)),
      "padded_sentence_tokens": float(local_batches[0]["input_ids"].size),
      "padded_name_tokens": float(local_batches[0][f"{names}_ids"].size),
  }
