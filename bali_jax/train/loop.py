"""The training loop: mesh, sharded state, data, checkpoints, metrics.

`train_and_evaluate(cfg, workdir, evaluators)` runs (or resumes: same
workdir) a BALI pre-training run; the entry point passes the periodic
evaluators (cli: entity linking), the loop imports no evaluation code.
Layout of the workdir:
  config.json        the resolved config (also printed at start)
  checkpoints/<step> Orbax checkpoints (state + data position)
  metrics.jsonl      one JSON line per step (+ eval lines)
  tensorboard/       TensorBoard events (process 0)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

import bali_jax
from bali_jax import configs, storage
from bali_jax.train import input_pipeline as data
from bali_jax.train import flops as flops_lib
from bali_jax.train import metrics as metrics_lib, peak as peak_lib
from bali_jax.train import sharding
from bali_jax.train.checkpoint import Checkpointer
from bali_jax.train.preemption import Preemption
from bali_jax.train.state import abstract_state, create_state
from bali_jax.train.step import eval_step, make_optimizer, train_step


class BadStepsError(RuntimeError):
  """`max_bad_steps` consecutive non-finite steps: the run stops."""


def code_fingerprint() -> str:
  h = hashlib.sha256()
  root = os.path.dirname(bali_jax.__file__)
  for dirpath, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      if name.endswith(".py"):
        with open(os.path.join(dirpath, name), "rb") as f:  # package code
          h.update(name.encode() + f.read())
  return h.hexdigest()


def check_same_run(cfg) -> None:
  """Every process runs the same code and config, or nobody starts."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  digest = hashlib.sha256((cfg.to_json() + code_fingerprint()).encode())
  mine = np.frombuffer(digest.digest()[:8], np.int64)
  all_ = multihost_utils.process_allgather(mine)
  if not (all_ == all_[0]).all():
    raise RuntimeError("processes run different code or configs: "
                       f"fingerprints {all_.ravel().tolist()}")


def _startup(cfg, mesh, state, compiled, flops, peak, peak_from):
  n = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
  mem = compiled.memory_analysis()
  lines = [
      f"bali_jax {bali_jax.__version__}, jax {jax.__version__}, "
      f"backend {jax.default_backend()}, {jax.process_count()} process(es), "
      f"{jax.device_count()} devices ({jax.devices()[0].device_kind})",
      f"mesh {dict(mesh.shape)}",
      "parameters: " + ", ".join(f"{k} {n(v):,}" for k, v in
                                 state.params.items()),
      f"analytic training FLOPs per step {flops / 1e12:.4f} TFLOP with "
      f"padding (MFU counts real tokens only); peak {peak:.4g} TFLOP/s per "
      f"device ({peak_from})",
  ]
  if mem is not None:
    lines.append(
        "compiled memory per device: arguments "
        f"{mem.argument_size_in_bytes / 2**20:.1f} MiB, outputs "
        f"{mem.output_size_in_bytes / 2**20:.1f} MiB, temp "
        f"{mem.temp_size_in_bytes / 2**20:.1f} MiB")
  for line in lines:
    print(line)


def _batch_line(cfg, spec, pipe) -> str:
  """What one step holds, in the paper's units (sentences), from the
  dataset's measured means per row."""
  means = spec.get("train_row_means")
  line = f"batch: {cfg.batch_size} rows per step"
  if cfg.batch_sentences:
    line += f" (batch_sentences={cfg.batch_sentences})"
  if means:
    line += (f", about {cfg.batch_size * means['sentences']:.0f} sentences,"
             f" {cfg.batch_size * means['entities']:.0f} entities, "
             f"{cfg.batch_size * means['nodes']:.0f} graph nodes")
  return (line + f"; {pipe.epochs_needed()} epoch(s) of {spec['views']} "
          "train view(s)")


def jit_steps(cfg, spec, tx, mesh, shardings):
  """The jitted train and eval steps with their shardings, and an example
  global batch to lower them with."""
  local_rows = cfg.batch_size // jax.process_count()
  example = sharding.global_batch(
      data.example_batch(spec, cfg, local_rows), mesh)
  in_batch = jax.tree.map(lambda x: x.sharding, example)

  def bali_train_step(s, b, r):  # named: compile logs say which function
    return train_step(s, b, r, cfg=cfg, spec=spec, tx=tx)

  def bali_eval_step(p, b, r):
    return eval_step(p, b, r, cfg=cfg, spec=spec)

  step_fn = jax.jit(
      bali_train_step,
      in_shardings=(shardings, in_batch, sharding.replicated(mesh)),
      out_shardings=(shardings, sharding.replicated(mesh)),
      donate_argnums=0)
  eval_fn = jax.jit(bali_eval_step, in_shardings=(
      shardings.params, in_batch, sharding.replicated(mesh)))
  return step_fn, eval_fn, example


def _saved(workdir: str, name: str) -> dict | None:
  """A JSON file the run directory holds from an earlier start, or None."""
  path = storage.join(workdir, name)
  return json.loads(storage.read_text(path)) if storage.exists(path) else None


@dataclasses.dataclass
class RunStart:
  """What one start of a run has before its first step: the resolved
  config, the data, the mesh, the optimiser, the checkpoints and the state
  (restored when resuming, from step `start`)."""
  cfg: Any
  spec: dict
  pipe: data.InputPipeline
  mesh: Any
  tx: Any
  ckpt: Checkpointer
  state: Any
  shardings: Any
  start: int
  lead: bool  # process 0: writes the run's files


def start_run(cfg, workdir: str) -> RunStart:
  """Resolves and checks the config, refuses a resume with another config
  before anything compiles, writes the run's files (process 0), creates
  or restores the state."""
  spec = data.load_spec(cfg.data_dir)
  saved_cfg = _saved(workdir, "config.json")  # before this start rewrites it
  cfg = configs.resolve(cfg, spec, jax.device_count(), jax.process_count(),
                        jax.default_backend(), saved_cfg)
  check_same_run(cfg)
  # before anything compiles: data shape and view checks
  pipe = data.InputPipeline(cfg.data_dir, spec, cfg, jax.process_index(),
                            jax.process_count())
  lead = jax.process_index() == 0
  if lead:  # process 0 writes the run's files (local or gs://)
    storage.makedirs(workdir)
    print("resolved config:\n" + cfg.to_json())
    print(_batch_line(cfg, spec, pipe))
  mesh = sharding.make_mesh(cfg)
  tx = make_optimizer(cfg)
  ckpt = Checkpointer(storage.join(workdir, "checkpoints"),
                      cfg.keep_checkpoints)
  start = ckpt.latest_step()
  if start is not None and saved_cfg is not None:  # refused before compiling
    configs.check_resume(saved_cfg, cfg, workdir,
                         _saved(workdir, "dataset_spec.json"), spec)
  if start is None:
    state, _, shardings = create_state(cfg, spec, tx, mesh,
                                       jax.random.key(cfg.seed))
  else:  # restored below: no fresh init (nor init_from) to throw away
    abstract, shardings, _ = abstract_state(cfg, spec, tx, mesh)
  if lead:  # after the check: a refused resume leaves the run as it was
    storage.write_text(storage.join(workdir, "config.json"), cfg.to_json())
    # the run carries its tokenizer and record spec: an export never needs
    # the data directory. The tokenizer's files are copied as data_prep
    # wrote them (loading it would import transformers, seconds per start)
    storage.write_text(storage.join(workdir, "dataset_spec.json"),
                       json.dumps(spec, indent=2))
    storage.copy_tree(storage.join(cfg.data_dir, spec["tokenizer_dir"]),
                      storage.join(workdir, "tokenizer"))
  if start is not None:
    state, meta = ckpt.restore(start, abstract)
    print(f"resumed from step {start} (epoch, batch) = "
          f"{tuple(meta['position'])}")
  return RunStart(cfg, spec, pipe, mesh, tx, ckpt, state, shardings,
                  start or 0, lead)


class StepReporter:
  """Reads back a step's metrics (one step late, after the next step is
  dispatched, so the host never waits for the device between steps), adds
  the throughput figures, logs them, and applies the NaN/Inf policy's stop
  rule over consecutive skipped steps."""

  def __init__(self, run: RunStart, writer, padded_flops: float,
               peak: float):
    cfg, b = run.cfg, run.spec["budgets"]
    g_rows, g_len, _ = flops_lib.graph_rows(cfg)  # names, or linear rows
    self.padded = cfg.batch_size * (b["seq_len"] + b[g_rows] * b[g_len])
    self.run, self.writer = run, writer
    self.padded_flops, self.peak = padded_flops, peak
    self.n_dev = jax.device_count()
    self.bar = tqdm(total=cfg.steps, initial=run.start, desc="train",
                    unit="step", disable=not run.lead, file=sys.stderr)
    self.t = time.time()
    self.last: dict = {}
    self.bad_run = 0  # consecutive skipped (non-finite) steps

  def restart_clock(self) -> None:
    """Time spent between steps (evaluation) is not step time."""
    self.t = time.time()

  def __call__(self, done: int, m_dev, ids) -> None:
    cfg = self.run.cfg
    m = {k: float(v) for k, v in jax.device_get(m_dev).items()}
    now = time.time()
    dt, self.t = now - self.t, now
    n_dev, peak = self.n_dev, self.peak
    m.update(step_time=dt, tokens_per_s=self.padded / dt,
             real_tokens_per_s=m["real_tokens"] / dt,
             tflops_per_device=m["real_flops"] / dt / n_dev / 1e12,
             padded_tflops_per_device=self.padded_flops / dt / n_dev / 1e12)
    if peak:
      m["mfu"] = m["tflops_per_device"] / peak
      m["padded_mfu"] = m["padded_tflops_per_device"] / peak
    self.last = m
    if self.run.lead and (done % cfg.log_every == 0 or done == cfg.steps):
      self.writer.write(done, m)
      self.bar.write(self._line(done, m, dt))
    self.bar.update(1)
    self.bad_run = self.bad_run + 1 if m["skipped"] else 0
    if m["skipped"]:
      print(f"step {done}: non-finite loss, gradients or updated "
            f"parameters (loss {m['loss']}, grad_norm {m['grad_norm']}): "
            f"update skipped ({self.bad_run} in a row)", flush=True)
    if cfg.max_bad_steps and self.bad_run >= cfg.max_bad_steps:
      raise BadStepsError(
          f"{self.bad_run} consecutive steps with a non-finite loss, "
          f"gradients or updated parameters, the last at step {done} "
          f"(epoch, batch) = {tuple(self.run.pipe.position(done - 1))}, "
          f"example ids of this process's "
          f"rows {sorted(int(i) for i in ids)}; the latest checkpoint "
          f"(step {self.run.ckpt.latest_step()}) holds the last good state")

  def _line(self, done: int, m: dict, dt: float) -> str:
    return (f"step {done}: loss {m['loss']:.4f} mlm {m['mlm_loss']:.4f} "
            f"align {m['align_loss']:.4f} "
            + (f"g-mlm {m['gmlm_loss']:.4f} " if self.run.cfg.model.graph_mlm
               else "")
            + f"lr {m['lr_lm']:.2e} grad_norm "
            f"{m['grad_norm']:.3f} {dt:.2f}s/step "
            f"{m['real_tokens_per_s']:.0f} real tok/s "
            f"({m['tokens_per_s']:.0f} padded) "
            + (f"MFU {m['mfu']:.1%} (padded {m['padded_mfu']:.1%})"
               if self.peak else ""))

  def close(self) -> None:
    self.bar.close()


def train_and_evaluate(cfg, workdir: str, evaluators=None) -> dict:
  """Trains (or resumes) and returns the last step's metrics.

  `evaluators(cfg, spec)`, given by the entry point (as big_vision's
  trainers take theirs), returns the callables run at every eval point
  beside the validation losses: `(bert params, mesh) -> {name: value}`,
  written as `eval_<name>`. It is called once, with the config as this
  start resolved it; the loop imports no evaluation code.
  """
  run = start_run(cfg, workdir)
  cfg = run.cfg
  step_fn, eval_fn, example = jit_steps(cfg, run.spec, run.tx, run.mesh,
                                        run.shardings)
  rng = jax.random.key(cfg.seed + 1)
  compiled = step_fn.lower(run.state, example, rng).compile()
  padded_flops = metrics_lib.padded_train_flops(cfg, run.spec)
  peak = peak_lib.peak_tflops_per_device(cfg)
  if run.lead:
    _startup(cfg, run.mesh, run.state, compiled, padded_flops, peak,
             peak_lib.peak_source(cfg))
  hooks = list(evaluators(cfg, run.spec)) if evaluators is not None else []
  writer = metrics_lib.MetricsWriter(workdir, run.lead, start=run.start)
  reporter = StepReporter(run, writer, padded_flops, peak)
  evaluate = lambda state, step: _evaluate(eval_fn, state, run.pipe,
                                           run.mesh, writer, step, hooks)
  with Preemption() as preempt:  # the process's handler comes back after
    try:
      state, step = _steps(run, step_fn, rng, reporter, evaluate, preempt)
    except BadStepsError:
      run.ckpt.close()
      writer.close()
      raise
  reporter.close()
  if not preempt.requested and step >= cfg.steps - 1:
    evaluate(state, cfg.steps)
  run.ckpt.close()
  writer.close()
  if run.lead:
    from bali_jax.train.plots import plot_metrics
    png = plot_metrics(workdir)
    print(f"run directory: {storage.display(workdir)}"
          + (f" (curves: {png})" if png else ""))
  return reporter.last


def _steps(run: RunStart, step_fn, rng, reporter: StepReporter, evaluate,
           preempt: Preemption):
  """The steps from `run.start` to the end or to an agreed SIGTERM, with
  the periodic evaluations and saves; (last state, last step index)."""
  cfg, state = run.cfg, run.state
  batches = data.Prefetch(
      run.pipe.train_batches(run.start, with_ids=True, stop=cfg.steps),
      lambda item: (item[0], sharding.global_batch(item[1], run.mesh),
                    item[2]))
  pending = None
  step = run.start
  try:
    for step, batch, ids in batches:
      if step >= cfg.steps:
        break
      state, m_dev = step_fn(state, batch, rng)
      if pending is not None:
        reporter(*pending)
      done = step + 1
      pending = (done, m_dev, ids)
      stop = preempt.agreed()
      evals = done < cfg.steps and any(
          every and done % every == 0
          for every in (cfg.eval_every, cfg.el_eval_every))
      save = done % cfg.save_every == 0 or stop or done == cfg.steps
      if evals or save or done == cfg.steps:
        reporter(*pending)  # in order, before eval lines and saves
        pending = None
      if evals:
        evaluate(state, done)
        reporter.restart_clock()
      if save and (not reporter.bad_run or stop or done == cfg.steps):
        # a skipped step's state is the last good one; periodic saves wait
        # for a good step so the directory holds good steps only
        run.ckpt.save(done, state, {"position": list(run.pipe.position(done)),
                                    "step": done},
                      force=stop or done == cfg.steps)
      if stop:
        print(f"SIGTERM: saved step {done}, stopping", flush=True)
        break
    if pending is not None:
      reporter(*pending)
  finally:
    batches.close()
  return state, step


def _evaluate(eval_fn, state, pipe, mesh, writer, step, hooks=()):
  """Validation losses and the entry point's evaluators (held-out-synonym
  linking) -> eval_* lines."""
  batches = pipe.eval_batches()
  rng = jax.random.key(0)
  acc = {}
  for b in batches:
    m = jax.device_get(eval_fn(state.params,
                               sharding.global_batch(b, mesh), rng))
    for k, v in m.items():
      acc[k] = acc.get(k, 0.0) + float(v) / len(batches)
  keep = ("loss", "mlm_loss", "align_loss", "mlm_accuracy", "align_accuracy")
  out = {k: acc[k] for k in keep if k in acc}
  for hook in hooks:
    out.update(hook(state.params["bert"], mesh))
  if not out:
    return
  writer.write(step, out, prefix="eval_")
  if jax.process_index() == 0:
    print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}"
                                               for k, v in out.items()))
