"""Command line: `python -m bali_jax <command> [options]`.

Commands (stable: users script them):
  train      --config PRESET --workdir DIR [key=value ...]
             pre-train (same DIR again = resume).
  export-hf  --source SRC --out OUT   export a BERT to a Hugging Face directory.
  evaluate   --model SRC [--model SRC ...] [--data DIR | --kg KG]
             [--corpus FILE --corpus-format pubtator|bern2|bioc] [--out FILE]
             zero-shot entity linking, models side by side.
  ablate     --data DIR --workdir DIR [--steps N] [--variant NAME:k=v,...]
             short runs with one key changed each, one evaluated table.
  bench      --config PRESET [--data DIR | --synthetic] [--steps N]
             [--compare-torch] [--out FILE] [key=value ...]
             throughput, MFU, memory; the authors' PyTorch stack beside.
  finetune   --task pubmedqa|bioasq-yesno|medqa|seqcls --model SRC
             [--model SRC ...] --train FILE [--dev FILE] [--test FILE]
             --workdir DIR [key=value ...]
             downstream fine-tuning, exported as an HF task model;
             several models: one comparison table.

SRC is an HF BERT directory (a round trip through our Flax model, verified
on the way) or `starter` for the open starter model. Training checkpoints
become exportable with the `train` command.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from bali_jax.eval.models import is_run_dir
from bali_jax.export_command import cmd_export_hf

def _init_distributed(args) -> None:
  """jax.distributed before any computation: explicit flags for localhost
  runs, auto-detection on TPU pods and under SLURM."""
  import jax
  if args.num_processes and args.num_processes > 1:
    jax.distributed.initialize(args.coordinator,
                               num_processes=args.num_processes,
                               process_id=args.process_id)
  elif any(k in os.environ for k in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES",
                                     "JAX_COORDINATOR_ADDRESS")):
    if int(os.environ.get("SLURM_NTASKS", "2")) > 1:
      jax.distributed.initialize()


def cmd_train(args) -> int:
  _init_distributed(args)
  from bali_jax import configs
  from bali_jax.eval.in_training import evaluators
  from bali_jax.train.loop import train_and_evaluate
  cfg = configs.apply_overrides(configs.get_config(args.config),
                                args.overrides)
  if not cfg.data_dir:
    raise ValueError("data_dir= is required (a `python -m data_prep` "
                     "output directory)")
  last = train_and_evaluate(cfg, args.workdir, functools.partial(
      evaluators, workdir=args.workdir))
  print(json.dumps({"workdir": os.path.abspath(args.workdir), **last}))
  return 0


def _seed_groups(patterns) -> dict[str, list[str]]:
  """--models-from GLOB: the run directories it matches, one group."""
  import glob
  out = {}
  for pattern in patterns or []:
    runs = sorted(p for p in glob.glob(pattern) if is_run_dir(p))
    if not runs:
      raise ValueError(f"--models-from {pattern}: matches no training run "
                       "directory")
    out[pattern] = runs
  return out


def cmd_evaluate(args) -> int:
  from bali_jax.eval import report as report_lib, search
  if args.bootstrap < 0:
    raise ValueError(f"--bootstrap {args.bootstrap}: resamples must be >= 0 "
                     "(0: no intervals)")
  from bali_jax.eval import vector_cache
  opts = report_lib.SearchOptions(
      args.vectors_dir, search.parse_bytes(args.memory_budget),
      args.vector_dtype, (args.cache_dir or vector_cache.cache_root())
      if args.cache else None)
  rep = report_lib.evaluate(
      args.model, data_dir=args.data, kg=args.kg, corpus=args.corpus,
      corpus_format=args.corpus_format, restrict=args.restrict,
      limit=args.limit, strict=args.strict, out=args.out,
      search_options=opts, resamples=args.bootstrap, seed=args.seed,
      seed_groups=_seed_groups(args.models_from), benchmark=args.benchmark,
      split=args.split)
  for qs in rep["query_sets"]:
    for reason, info in qs["skipped"].items():
      print(f"warning: {qs['name']}: skipped {info['count']} ({reason}); "
            f"first: {info['first']}", file=sys.stderr)
  print(report_lib.to_markdown(rep))
  for m in rep["models"]:
    cache = m["search"].get("cache")
    if cache:
      print(f"{m['label']}: dictionary vectors "
            + ("read from" if cache["hit"] else "cached in")
            + f" {cache['directory']} (--no-cache to skip)")
  print(f"evaluated {len(args.model)} model(s) in {rep['seconds']} s"
        + (f"; JSON report: {args.out}" if args.out else ""))
  return 0


def cmd_plot_curve(args) -> int:
  from bali_jax.eval import curve
  panels = curve.plot_curve(args.report, args.out)
  for title, pts in panels.items():
    print(f"{title}: " + ", ".join(
        f"step {p[0]} {100 * p[1]:+.1f}" + (
            f" [{100 * p[2]:+.1f}, {100 * p[3]:+.1f}]" if p[2] is not None
            and p[0] else "") for p in pts))
  print(f"plot: {args.out}")
  return 0


def cmd_probe_geometry(args) -> int:
  from bali_jax import storage
  from bali_jax.eval import geometry
  steps = ([int(s) for s in args.steps.split(",")] if args.steps else None)
  rows = geometry.probe(args.run, steps, args.batches, args.data)
  print(geometry.to_markdown(rows))
  if args.out:
    storage.write_text(args.out, json.dumps(rows, indent=2))
    print(f"JSON: {args.out}")
  if args.plot:
    geometry.plot(rows, args.plot)
    print(f"plot: {args.plot}")
  return 0


def cmd_ablate(args) -> int:
  from bali_jax.eval import ablation
  variants = None
  if args.variant:
    variants = dict(ablation.parse_variant(v) for v in args.variant)
  out = ablation.run_ablation(args.data, args.workdir, config=args.config,
                              steps=args.steps, variants=variants,
                              extra=args.overrides,
                              baseline=args.baseline)
  print(ablation.to_markdown(out))
  print(f"table: {os.path.join(args.workdir, 'ablation.md')}")
  return 0


def cmd_bench(args) -> int:
  if bool(args.data) == bool(args.synthetic):
    raise ValueError("bench: give --data DIR or --synthetic (one of them)")
  from bali_jax.bench import runner
  return runner.main(args)


def cmd_bench_search(args) -> int:
  from bali_jax.bench import search as bench_search
  return bench_search.main(args)


def cmd_finetune(args) -> int:
  from bali_jax.finetune import runner as finetune
  cfg = finetune.parse_overrides(args.overrides)
  if len(args.model) > 1:  # a preempted job resumes with the same command
    finetune.compare(args.task, args.model, args.train, args.dev, args.test,
                     args.workdir, cfg)
  else:
    finetune.finetune(args.task, args.model[0], args.train, args.dev,
                      args.test, args.workdir, cfg)
  return 0


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m bali_jax",
                              description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  t = sub.add_parser("train", help="pre-train with BALI (resumable)")
  t.add_argument("--config", default="open_default",
                 help="preset: tiny, open_default, pubmedbert_base, "
                 "biolinkbert_large")
  t.add_argument("--workdir", required=True, help="run directory")
  t.add_argument("overrides", nargs="*", help="key=value config overrides")
  t.add_argument("--coordinator", default="127.0.0.1:12355",
                 help="host:port of process 0 (multi-process runs)")
  t.add_argument("--num-processes", type=int, default=0)
  t.add_argument("--process-id", type=int, default=0)
  t.add_argument("--num-cpu-devices", type=int, default=0,
                 help="fake CPU devices for this process (tests, laptops)")
  t.set_defaults(func=cmd_train)
  e = sub.add_parser("export-hf", help="export a BERT to a Hugging Face dir")
  e.add_argument("--source", required=True,
                 help="HF BERT directory, or `starter` (open starter model)")
  e.add_argument("--out", required=True, help="output directory")
  e.add_argument("--dtype", default="float32",
                 choices=("float32", "bfloat16"), help="weight dtype")
  e.add_argument("--max-shard-size", default="5GB",
                 help="shard weights above this size (default 5GB)")
  e.add_argument("--overwrite", action="store_true",
                 help="replace OUT if it exists (atomically)")
  e.add_argument("--no-verify", dest="verify", action="store_false",
                 help="skip re-importing the export and comparing")
  e.add_argument("--eval-report", action="append", default=None,
                 help="an `evaluate` JSON report for the model card "
                 "(repeatable; default: the run's own eval_el.json)")
  e.add_argument("--base-model", default=None,
                 help="Hub id of the starting BERT for the model card "
                 "(found for `starter` and Hub cache paths)")
  e.add_argument("--license", default=None,
                 help="licence in the model card (default: the starting "
                 "BERT's own card's)")
  e.set_defaults(func=cmd_export_hf)
  v = sub.add_parser("evaluate", help="zero-shot entity linking (SapBERT "
                     "protocol), several models side by side")
  v.add_argument("--model", action="append", required=True,
                 help="run directory (RUN@STEP: a kept earlier checkpoint), "
                 "HF BERT directory or `starter` (repeat for a side-by-side "
                 "table; the first is the baseline)")
  v.add_argument("--data", default=None,
                 help="a data_prep dataset: its dictionary, held-out "
                 "synonyms and test mentions")
  v.add_argument("--kg", default=None,
                 help="instead of --data: open-default, FILE.obo or a "
                 "cellxgene FILE.json.zst (dictionary only)")
  v.add_argument("--benchmark", choices=("bc5cdr-disease",
                                         "bc5cdr-chemical"), default=None,
                 help="BC5CDR mentions against MeSH, SapBERT protocol "
                 "(instead of --data/--kg/--corpus)")
  v.add_argument("--split", choices=("train", "test"), default="test",
                 help="with --benchmark: train is the development set")
  v.add_argument("--corpus", default=None, help="a gold-linked corpus")
  v.add_argument("--corpus-format", choices=("pubtator", "bern2", "bioc"))
  v.add_argument("--restrict", default=None, metavar="PREFIX",
                 help="only concepts whose id starts with PREFIX (e.g. HP:)")
  v.add_argument("--limit", type=int, default=None,
                 help="a seeded sample of at most N held-out synonyms")
  v.add_argument("--strict", action="store_true",
                 help="a bad corpus annotation is an error, not a count")
  v.add_argument("--out", default=None, help="write the JSON report here")
  v.add_argument("--models-from", action="append", default=[],
                 metavar="GLOB", help="run directories that differ only in "
                 "seed (e.g. 'runs/seed*'): also reported together as mean "
                 "± sd with the pooled interval (repeatable)")
  v.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                 help="bootstrap resamples for the 95%% intervals (0: none)")
  v.add_argument("--seed", type=int, default=0,
                 help="seed of the resamples and of McNemar's tie draws")
  v.add_argument("--memory-budget", default="4GiB",
                 help="host memory for the name-vector search (e.g. 4GiB, "
                 "512MiB): shards and query blocks are sized to it")
  v.add_argument("--vectors-dir", default=None,
                 help="keep each model's name-vector shards here (default: "
                 "a temporary directory, removed afterwards)")
  v.add_argument("--vector-dtype", choices=("float32", "bfloat16"),
                 default="float32", help="name vectors as stored (bfloat16 "
                 "halves the disk and the reads)")
  v.add_argument("--cache-dir", default=None,
                 help="the name-vector cache of models that are not runs "
                 "(default: $BALI_JAX_CACHE, $XDG_CACHE_HOME/bali_jax or "
                 "~/.cache/bali_jax)")
  v.add_argument("--no-cache", dest="cache", action="store_false",
                 help="encode every dictionary again, read and write no "
                 "cache")
  v.add_argument("--num-cpu-devices", type=int, default=0,
                 help="fake CPU devices for this process")
  v.set_defaults(func=cmd_evaluate)
  c = sub.add_parser("plot-curve", help="Δ acc@1 [95%%] against training "
                     "step from evaluate reports of a run's checkpoints "
                     "(--model BASE --model RUN@STEP ...)")
  c.add_argument("--report", action="append", required=True,
                 help="an evaluate JSON report (repeat: one panel per "
                 "query set of each)")
  c.add_argument("--out", required=True, help="PNG path")
  c.set_defaults(func=cmd_plot_curve)
  g = sub.add_parser("probe-geometry", help="cosines between in-sentence "
                     "mentions, graph vectors and names alone at a run's "
                     "kept steps (why a curve turns)")
  g.add_argument("--run", action="append", required=True,
                 help="a training run directory (repeat)")
  g.add_argument("--steps", default="",
                 help="comma-separated steps; 0 = the run's initial state "
                 "(default: 0 and every kept step)")
  g.add_argument("--batches", type=int, default=8,
                 help="validation batches read (the first ones, fixed)")
  g.add_argument("--data", default="",
                 help="a data_prep dataset (default: the run's own)")
  g.add_argument("--out", default="", help="JSON rows")
  g.add_argument("--plot", default="", help="PNG: cosines against step")
  g.set_defaults(func=cmd_probe_geometry)
  a = sub.add_parser("ablate", help="train short runs with one key changed "
                     "each and evaluate them in one table")
  a.add_argument("--data", required=True, help="a data_prep dataset")
  a.add_argument("--workdir", required=True,
                 help="one run directory per variant, ablation.md/.json")
  a.add_argument("--config", default="open_default")
  a.add_argument("--steps", type=int, default=150)
  a.add_argument("--variant", action="append", default=[],
                 help="NAME:key=value,key=value (repeat); default: the "
                 "built-in set (authors, no_mlm, frozen_warmup, "
                 "masking_0.15, lr_lm_1e-5, tau_0.2, t_tcl, t_tcl_no_mlm)")
  a.add_argument("--baseline", default=None,
                 help="first row (default: the preset's init_from)")
  a.add_argument("overrides", nargs="*",
                 help="key=value applied to every variant")
  a.set_defaults(func=cmd_ablate)
  b = sub.add_parser("bench", help="throughput and MFU of the train step, "
                     "optionally beside the authors' PyTorch stack")
  b.add_argument("--config", default="open_default", help="preset")
  b.add_argument("--data", default=None, help="a data_prep dataset: its "
                 "train_view0 records are the batches")
  b.add_argument("--synthetic", action="store_true",
                 help="no data: records with a data card's statistics "
                 "(`--card`, default the open default's)")
  b.add_argument("--card", default=None, help="data_card.json for "
                 "--synthetic")
  b.add_argument("--steps", type=int, default=12, help="timed steps")
  b.add_argument("--warmup", type=int, default=2)
  b.add_argument("--rounds", type=int, default=3,
                 help="alternations of ours and torch (steps split over "
                 "them)")
  b.add_argument("--distinct-batches", type=int, default=4,
                 help="batches cycled through")
  b.add_argument("--compare-torch", action="store_true",
                 help="also run the authors' PyTorch stack on the same "
                 "batches (pip install -r requirements-bench.txt)")
  b.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                 help="skip timing each phase alone")
  b.add_argument("--out", default="runs/bench/report.json",
                 help="JSON report path")
  b.add_argument("--num-cpu-devices", type=int, default=0)
  b.add_argument("overrides", nargs="*", help="key=value config overrides")
  b.set_defaults(func=cmd_bench)
  s = sub.add_parser("bench-search", help="evaluate's streamed name-vector "
                     "search: at scale on random vectors, or against the "
                     "in-memory ranking on a dataset")
  s.add_argument("--random", type=int, default=0, metavar="N",
                 help="N random unit name vectors (e.g. 10000000)")
  s.add_argument("--concepts", type=int, default=0,
                 help="with --random: concepts (default N x 10 / 29, "
                 "UMLS's names per concept)")
  s.add_argument("--dim", type=int, default=768)
  s.add_argument("--data", default=None, help="a data_prep dataset: its "
                 "dictionary and held-out synonyms, encoded with --model")
  s.add_argument("--model", default="starter")
  s.add_argument("--queries", type=int, default=1000,
                 help="queries (with --data: a seeded sample; 0 = all)")
  s.add_argument("--no-compare", dest="compare", action="store_false",
                 help="with --data: skip the in-memory ranking")
  s.add_argument("--compare-torch", action="store_true",
                 help="with --data: encode the same names with PyTorch "
                 "transformers too (same pooling and batching; "
                 "requirements-bench.txt) and report both names/s")
  s.add_argument("--memory-budget", default="4GiB")
  s.add_argument("--vector-dtype", choices=("float32", "bfloat16"),
                 default="float32")
  s.add_argument("--vectors-dir", default=None,
                 help="keep the shards here (default: a temporary "
                 "directory)")
  s.add_argument("--out", default=None, help="JSON report path")
  s.add_argument("--num-cpu-devices", type=int, default=0)
  s.set_defaults(func=cmd_bench_search)
  f = sub.add_parser("finetune", help="fine-tune on a downstream task and "
                     "export an HF task model (resumable)")
  f.add_argument("--task", required=True,
                 choices=("pubmedqa", "bioasq-yesno", "medqa", "seqcls"))
  f.add_argument("--model", action="append", required=True,
                 help="run directory, HF BERT directory or `starter`; "
                 "repeat to compare models with the same seeds and data")
  f.add_argument("--train", required=True, help="train file")
  f.add_argument("--dev", default=None,
                 help="dev file (best epoch; not needed with folds=k)")
  f.add_argument("--test", default=None, help="test file")
  f.add_argument("--workdir", required=True,
                 help="run directory (same again = resume)")
  f.add_argument("--num-cpu-devices", type=int, default=0)
  f.add_argument("overrides", nargs="*",
                 help="key=value: lr, batch_size, epochs, warmup_ratio, "
                 "weight_decay, max_length, patience, seed, seeds, folds, "
                 "metric, classifier_dropout, snippets, dtype, export")
  f.set_defaults(func=cmd_finetune)
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  if getattr(args, "num_cpu_devices", 0):  # before jax makes its devices
    import jax
    jax.config.update("jax_num_cpu_devices", args.num_cpu_devices)
  try:
    return args.func(args)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except RuntimeError as e:
    # loaded if they were raised: a run that stopped itself, an ablation
    # variant whose run failed (its log kept)
    from bali_jax.eval.ablation import VariantFailedError
    from bali_jax.train.loop import BadStepsError
    if not isinstance(e, (BadStepsError, VariantFailedError)):
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
