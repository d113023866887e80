"""`python -m bali_jax finetune`: a BERT fine-tuned on a downstream task.

What the authors' task scripts (HF `Trainer`) and HF's run_glue / run_swag
do, on our sharded jitted step: AdamW (LR 1e-5, weight decay 0.01 on
weights, not on biases and LayerNorm), linear warm-up over 10% of the steps
then linear decay, gradient clipping at norm 1, batch 16, up to 50 epochs,
evaluation on dev after every epoch, the best-on-dev model kept (and
exported), early stopping after `patience` epochs without a better dev
score (0: run every epoch, as the authors' Trainer). One compiled step:
every batch has the same shape. Resumable: a checkpoint at every epoch end
and on SIGTERM (at a step boundary); the data order of epoch e depends only
on (seed, e), so a resumed run takes exactly the steps an uninterrupted one
takes. `folds=k` runs the k-fold protocol over the train file (PubMedQA,
BioASQ: dev = the held-out fold), `seeds=n` repeats with seeds seed..seed+n-1;
mean and std of the test score over the runs.

Deviation noted: the authors' PubMedQA / BioASQ scripts pass one-hot float
labels, which makes HF pick a sigmoid (BCE) loss over the classes; we train
single-label tasks with softmax cross-entropy, as run_glue does.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from bali_jax import storage
from bali_jax.finetune import batches as tb
from bali_jax.finetune.tasks import folds as make_folds, read_task


@dataclasses.dataclass
class FinetuneConfig:
  lr: float = 1e-5
  batch_size: int = 16
  eval_batch_size: int = 0  # 0: batch_size
  epochs: int = 50
  warmup_ratio: float = 0.1
  weight_decay: float = 0.01
  max_grad_norm: float = 1.0
  max_length: int = 512
  patience: int = 5  # epochs without a better dev score; 0 = never stop
  seed: int = 42
  seeds: int = 1  # runs with seed, seed+1, ...
  folds: int = 0  # k-fold over the train file; dev = the held-out fold
  metric: str = ""  # best-on-dev metric (default accuracy; multi: micro_f1)
  negative_label: str = ""  # a "no relation" class: adds PRF1 (ChemProt)
  classifier_dropout: float = -1.0  # < 0: the BERT's hidden dropout
  snippets: bool = False  # bioasq-yesno: append the snippets to the question
  dtype: str = "float32"  # compute dtype (params stay float32)
  export: bool = True  # write the best model as an HF task model

  def __post_init__(self):
    for name, low in (("epochs", 1), ("batch_size", 1), ("seeds", 1),
                      ("max_length", 8)):
      if getattr(self, name) < low:
        raise ValueError(f"{name}={getattr(self, name)}: must be >= {low}")
    if self.folds == 1 or self.folds < 0:
      raise ValueError(f"folds={self.folds}: 0 (use --dev) or >= 2")
    if not 0 <= self.warmup_ratio < 1:
      raise ValueError(f"warmup_ratio={self.warmup_ratio}: in [0, 1)")

  def negative(self, labels) -> int | None:
    if not self.negative_label:
      return None
    if self.negative_label not in labels:
      raise ValueError(f"negative_label={self.negative_label!r} is not a "
                       f"label of the task: {list(labels)}")
    return list(labels).index(self.negative_label)

  def best_metric(self, kind: str) -> str:
    return self.metric or ("micro_f1" if kind == "multi" else "accuracy")


def parse_overrides(items) -> FinetuneConfig:
  cfg = FinetuneConfig()
  types = {f.name: f.type for f in dataclasses.fields(cfg)}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or key not in types:
      raise ValueError(f"override {item!r}: expected key=value with key in "
                       f"{sorted(types)}")
    t = types[key]
    if t == "bool":
      v = value.lower() in ("1", "true", "yes")
    elif t == "int":
      v = int(value)
    elif t == "float":
      v = float(value)
    else:
      v = value
    cfg = dataclasses.replace(cfg, **{key: v})
  return cfg


@dataclasses.dataclass
class Run:
  name: str
  seed: int
  train: tb.Encoded
  dev: tb.Encoded | None
  test: tb.Encoded | None


def plan_runs(cfg: FinetuneConfig, train: tb.Encoded, dev, test) -> list:
  """One run per (fold, seed): k-fold over the train file when folds > 0."""
  runs = []
  for s in range(cfg.seeds):
    seed = cfg.seed + s
    if cfg.folds:
      parts = make_folds(len(train), cfg.folds, cfg.seed)
      for k, held in enumerate(parts):
        keep = sorted(set(range(len(train))) - set(held))
        runs.append(Run(f"fold{k}-seed{seed}", seed, train.take(keep),
                        train.take(held), test))
    else:
      runs.append(Run(f"seed{seed}", seed, train, dev, test))
  return runs


def _mean_std(xs):
  return (float(np.mean(xs)), float(np.std(xs))) if xs else (None, None)


def finetune(task: str, model_src: str, train: str, dev: str | None,
             test: str | None, workdir: str, cfg: FinetuneConfig) -> dict:
  """Fine-tunes one model on one task; returns (and writes) the results."""
  from bali_jax.eval import models
  from bali_jax.finetune.run import run_one
  if not cfg.folds and not dev:
    raise ValueError("--dev is required (or folds=k: dev = held-out folds)")
  loaded = models.load(model_src)
  length = min(cfg.max_length, loaded.config.max_position_embeddings)
  data = read_task(task, train, snippets=cfg.snippets)
  other = {name: read_task(task, p, like=data, snippets=cfg.snippets)
           for name, p in (("dev", dev), ("test", test)) if p}
  enc = {"train": tb.encode(data, loaded.tokenizer, length),
         **{k: tb.encode(d, loaded.tokenizer, length)
            for k, d in other.items()}}
  _save_config(workdir, task, model_src, train, dev, test, cfg)
  if cfg.folds and dev:
    print(f"folds={cfg.folds}: dev is each held-out fold; --dev ignored")
  print(f"{task}: {len(data.examples)} train"
        + "".join(f", {len(d.examples)} {k}" for k, d in other.items())
        + (f" ({data.skipped} non-yes/no skipped)" if data.skipped else "")
        + f"; {data.kind}, labels {data.labels}; max_length {length}")
  runs = plan_runs(cfg, enc["train"], enc.get("dev"), enc.get("test"))
  per_run = []
  for r in runs:  # SIGTERM stops the job, not just the run it hit
    result = run_one(r, data, loaded, cfg, storage.join(workdir, r.name),
                     length)
    if result is None:  # preempted: the same command resumes
      return {"preempted": True}
    per_run.append(result)
  metric = cfg.best_metric(data.kind)
  dev_m, dev_s = _mean_std([r["dev"][metric] for r in per_run])
  tests = [r["test"][metric] for r in per_run if r.get("test")]
  test_m, test_s = _mean_std(tests)
  out = {"task": task, "model": loaded.label, "source": loaded.source,
         "metric": metric, "runs": per_run, "dev_mean": dev_m,
         "dev_std": dev_s, "test_mean": test_m, "test_std": test_s,
         "labels": data.labels, "config": dataclasses.asdict(cfg)}
  storage.write_text(storage.join(workdir, "results.json"),
                     json.dumps(out, indent=2) + "\n")
  line = markdown_line(out)
  storage.write_text(storage.join(workdir, "results.md"),
                     markdown_header() + line + "\n")
  print(markdown_header() + line)
  return out


def _save_config(workdir, task, model_src, train, dev, test, cfg) -> None:
  """Prints and saves the resolved job; a resume (same workdir) with other
  data or settings is refused, naming the keys (`export` may change)."""
  job = {"task": task, "model": model_src, "train": train, "dev": dev,
         "test": test, **dataclasses.asdict(cfg)}
  path = storage.join(workdir, "finetune_config.json")
  if storage.exists(path):
    old = json.loads(storage.read_text(path))
    diff = sorted(k for k in set(old) | set(job)
                  if k != "export" and old.get(k) != job.get(k))
    if diff:
      raise ValueError(f"{workdir} holds a fine-tuning job with other "
                       "settings; differing: " + ", ".join(
                           f"{k} ({old.get(k)!r} -> {job.get(k)!r})"
                           for k in diff) + "; use a new --workdir")
  storage.makedirs(workdir)
  storage.write_text(path, json.dumps(job, indent=2) + "\n")
  print("fine-tuning job: " + json.dumps(job))


def markdown_header() -> str:
  return ("| task | model | metric | runs | dev | test |\n"
          "|---|---|---|---|---|---|\n")


def markdown_line(r: dict) -> str:
  def ms(m, s):
    return "-" if m is None else f"{100 * m:.1f} ± {100 * s:.1f}"
  return (f"| {r['task']} | {r['model']} | {r['metric']} | {len(r['runs'])} "
          f"| {ms(r['dev_mean'], r['dev_std'])} "
          f"| {ms(r['test_mean'], r['test_std'])} |")


def compare(task, model_srcs, train, dev, test, workdir, cfg) -> list:
  """Each model fine-tuned with the same seeds and data order; one table."""
  results = []
  for i, src in enumerate(model_srcs):
    name = f"model{i}-{os.path.basename(os.path.normpath(src)) or src}"
    results.append(finetune(task, src, train, dev, test,
                            storage.join(workdir, name), cfg))
    if results[-1].get("preempted"):  # SIGTERM: no further model starts
      return results
  table = markdown_header() + "".join(markdown_line(r) + "\n"
                                      for r in results)
  storage.write_text(storage.join(workdir, "comparison.md"), table)
  print("\n" + table)
  return results

