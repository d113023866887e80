"""`python -m bali_jax bench`: one JSON report and a short table.

What a team choosing a stack asks (and MaxText / Levanter logs report):
step time (median, min, max) after one timed compilation and a warm-up;
sentences/s and entities/s (the paper's units); real and padded tokens/s;
analytic TFLOP/s on real tokens and on padded tokens, and the MFU of each
against the peak (measured on CPU in the same run, `train.peak`); compiled
memory and peak host RSS; the input pipeline's own rows/s measured alone;
where the step's time goes (`ours.phase_times`); device, versions. With
`--compare-torch`, the authors' PyTorch stack runs the very same batches in
the same process, alternating with ours, and the ratios are reported.

Weights are random (the time of a step does not depend on them), so any
preset runs without checkpoints; `--synthetic` runs without data.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

import bali_jax
from bali_jax import configs, storage
from bali_jax.tf_host import host_tfds
from bali_jax.train import flops as flops_lib
from bali_jax.train import input_pipeline as data
from bali_jax.train import peak as peak_lib


def _stats(times: list[float]) -> dict:
  return {"median": round(statistics.median(times), 5),
          "min": round(min(times), 5), "max": round(max(times), 5),
          "n": len(times)}


def _record_batches(data_dir: str, spec: dict, rows: int, n: int):
  """The first n batches of train view 0, raw records (every key)."""
  tfds = host_tfds()
  builder = tfds.builder_from_directory(storage.join(data_dir,
                                                     spec["tfds_dir"]))
  ds = builder.as_dataset(split="train_view0", shuffle_files=False)
  out = list(tfds.as_numpy(ds.batch(rows, drop_remainder=True).take(n)))
  if len(out) < n:
    raise ValueError(f"{data_dir}: train_view0 has fewer than {n} batches "
                     f"of {rows} rows")
  return out


def _pipeline_rows_per_s(cfg, spec, batches: int = 30) -> float:
  """The training input pipeline alone (records -> host batches)."""
  cfg = cfg.replace(allow_view_reuse=True)  # any batch size: views cycle
  pipe = data.InputPipeline(cfg.data_dir, spec, cfg, 0, 1)
  it = pipe.train_batches(0)
  next(it)  # start-up (file open, first shuffle fill) is not throughput
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * cfg.batch_size / (time.perf_counter() - t0)


def _prepare(args):
  """(cfg, spec, raw batches, data description)."""
  cfg = configs.apply_overrides(configs.get_config(args.config),
                                args.overrides)
  cfg = cfg.replace(init_from="")  # random weights: same time per step
  cfg = configs.resolve_dtype(cfg, jax.default_backend())
  kind = cfg.model.graph_encoder
  if args.compare_torch and kind != "gat":
    raise ValueError(f"--compare-torch: the authors' stack here is their "
                     f"GATv2 model; graph_encoder={kind} has no peer")
  if kind == "linear" and not args.data:
    raise ValueError("graph_encoder=linear: synthetic rows carry the GNN "
                     "kind's keys only; bench records with --data DIR")
  n = max(1, min(args.steps, args.distinct_batches))
  if args.data:
    spec = data.load_spec(args.data)
    cfg = configs.resolve_batch(cfg.replace(data_dir=args.data), spec,
                                jax.device_count())
    configs.validate(cfg, jax.device_count(), spec)
    batches = _record_batches(args.data, spec, cfg.batch_size, n)
    return cfg, spec, batches, {"kind": "records", "dir": args.data}
  from bali_jax.bench import synthetic
  from bali_jax.features import Budgets, tiny_budgets
  stats = synthetic.CorpusStats()
  if args.card:
    stats = synthetic.stats_from_card(json.loads(storage.read_text(
        args.card)))
  base = tiny_budgets() if args.config == "tiny" else Budgets()
  budgets = synthetic.sized_budgets(stats, base)
  bc = cfg.model.bert
  # the rows per step depend on sentences per row: measure them first
  _, pst = synthetic.synthetic_rows(budgets, stats, 64, bc.vocab_size,
                                    seed=1)
  means = {"sentences": pst.sentences / pst.rows,
           "entities": pst.entities / pst.rows, "nodes": pst.nodes / pst.rows}
  spec = synthetic.synthetic_spec(budgets, bc.vocab_size, row_means=means)
  cfg = configs.resolve_batch(cfg, spec, jax.device_count())
  configs.validate(cfg, jax.device_count(), spec)
  recs, st = synthetic.synthetic_rows(budgets, stats, n * cfg.batch_size,
                                      bc.vocab_size, seed=cfg.seed)
  batches = [synthetic.stack(recs[i * cfg.batch_size:
                                  (i + 1) * cfg.batch_size])
             for i in range(n)]
  return cfg, spec, batches, {
      "kind": "synthetic", "stats": stats.__dict__,
      "budgets": budgets.to_dict(),
      "packing": {k: v for k, v in st.to_dict(budgets).items()
                  if k.startswith(("pad_", "mean_"))}}


def _throughput(counts: dict, step_s: float, real_flops: float,
                padded_flops: float, peak_total: float) -> dict:
  out = {
      "sentences_per_s": counts["sentences"] / step_s,
      "entities_per_s": counts["entities"] / step_s,
      "real_tokens_per_s": (counts["sentence_tokens"]
                            + counts["name_tokens"]) / step_s,
      "padded_tokens_per_s": (counts["padded_sentence_tokens"]
                              + counts["padded_name_tokens"]) / step_s,
      "real_tflops_per_s": real_flops / step_s / 1e12,
      "padded_tflops_per_s": padded_flops / step_s / 1e12,
  }
  if peak_total:
    out["mfu_real"] = out["real_tflops_per_s"] / peak_total
    out["mfu_padded"] = out["padded_tflops_per_s"] / peak_total
  return {k: round(v, 4) for k, v in out.items()}


def run_bench(args) -> dict:
  from bali_jax.bench.ours import OurStep, batch_counts, peak_rss_mib, \
      phase_times
  t_start = time.time()
  cfg, spec, batches, described = _prepare(args)
  peak_dev = peak_lib.peak_tflops_per_device(cfg)
  peak_total = peak_dev * jax.device_count()
  ours = OurStep(cfg, spec, batches)
  ours.run(args.warmup)
  torch_step = None
  if args.compare_torch:
    from bali_jax.bench.torch_peer import TorchStep
    torch_step = TorchStep(cfg, spec, batches, seed=cfg.seed)
    torch_step.run(args.warmup)
  ours_t, torch_t = [], []
  per_round = max(1, args.steps // args.rounds)
  for _ in range(args.rounds):  # alternating: both see the same machine
    ours_t += ours.run(per_round)
    if torch_step is not None:
      torch_t += torch_step.run(per_round)
  counts = batch_counts(batches, cfg.model.graph_encoder == "linear")
  real = float(np.mean([m["real_flops"] for m in ours.last_metrics]))
  padded_by_phase = flops_lib.padded_flops(cfg, spec["budgets"],
                                           cfg.batch_size)
  padded = float(sum(padded_by_phase.values()))
  med = statistics.median(ours_t)
  report = {
      "bench": "bali_jax", "config": args.config,
      "overrides": args.overrides, "data": described,
      "batch": {**counts, "budgets": spec["budgets"]},
      "device": {"platform": jax.devices()[0].platform,
                 "kind": jax.devices()[0].device_kind,
                 "count": jax.device_count(),
                 "host_cores": os.cpu_count()},
      "peak_tflops_per_device": round(peak_dev, 5),
      "peak_source": peak_lib.peak_source(cfg),
      "compile_s": round(ours.compile_s, 2),
      "warmup_steps": args.warmup,
      "step_s": _stats(ours_t),
      "throughput": _throughput(counts, med, real, padded, peak_total),
      "flops_per_step": {"real": real, "padded": padded,
                         "padded_by_phase": padded_by_phase},
      "compiled_memory": ours.memory(),
      "losses_finite": bool(all(np.isfinite(m["loss"])
                                for m in ours.last_metrics)),
  }
  if described["kind"] == "records":
    rps = _pipeline_rows_per_s(cfg, spec)
    report["input_pipeline"] = {
        "rows_per_s": round(rps, 1),
        "step_rows_per_s": round(cfg.batch_size / med, 2),
        "ratio_to_step": round(rps * med / cfg.batch_size, 1)}
  else:
    report["input_pipeline"] = {"rows_per_s": None,
                                "why": "synthetic batches are in memory"}
  if args.breakdown:
    ph = phase_times(ours)
    report["phases_s"] = ph
    report["phases_sum_s"] = round(sum(ph.values()), 5)
  if torch_step is not None:
    tmed = statistics.median(torch_t)
    tt = _throughput(counts, tmed, real, 0.0, peak_total)
    report["torch"] = {
        "step_s": _stats(torch_t),
        "sentences_per_s": tt["sentences_per_s"],
        "entities_per_s": tt["entities_per_s"],
        "real_tflops_per_s": tt["real_tflops_per_s"],
        "mfu_real": tt.get("mfu_real"),
        "shapes": torch_step.shapes(), "versions": torch_step.versions(),
        "losses_finite": bool(np.isfinite(torch_step.last_losses).all())}
    report["ratio_ours_over_torch"] = {
        "sentences_per_s": round(tmed / med, 3),
        "entities_per_s": round(tmed / med, 3)}
  report["peak_rss_mib"] = round(peak_rss_mib(), 1)
  report["versions"] = _versions()
  report["seconds"] = round(time.time() - t_start, 1)
  return report


def _versions() -> dict:
  import flax
  import jaxlib
  import optax
  return {"bali_jax": bali_jax.__version__, "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "numpy": np.__version__,
          "python": platform.python_version()}


def to_table(r: dict) -> str:
  t, s = r["throughput"], r["step_s"]
  rows = [
      ("stack", "step s (median)", "sentences/s", "entities/s",
       "real TFLOP/s", "MFU (real tokens)"),
      ("bali_jax", f"{s['median']:.3f}", f"{t['sentences_per_s']:.1f}",
       f"{t['entities_per_s']:.1f}", f"{t['real_tflops_per_s']:.4f}",
       f"{t['mfu_real']:.1%}" if "mfu_real" in t else "-"),
  ]
  if "torch" in r:
    q = r["torch"]
    rows.append(("authors' PyTorch", f"{q['step_s']['median']:.3f}",
                 f"{q['sentences_per_s']:.1f}", f"{q['entities_per_s']:.1f}",
                 f"{q['real_tflops_per_s']:.4f}",
                 f"{q['mfu_real']:.1%}" if q.get("mfu_real") else "-"))
  lines = ["| " + " | ".join(x) + " |" for x in rows]
  lines.insert(1, "|" + "---|" * len(rows[0]))
  b = r["batch"]
  notes = [
      f"{r['config']} on {r['device']['count']} x {r['device']['kind']}, "
      f"{b['rows']} rows = {b['sentences']:.0f} sentences, "
      f"{b['entities']:.0f} entities per step; compile {r['compile_s']} s; "
      f"peak {r['peak_tflops_per_device'] * r['device']['count']:.4g} "
      f"TFLOP/s ({r['peak_source']}).",
      f"padding: sentence tokens "
      f"{1 - b['sentence_tokens'] / b['padded_sentence_tokens']:.1%}, "
      f"graph-side tokens (names, or linearised subgraphs) "
      f"{1 - b['name_tokens'] / b['padded_name_tokens']:.1%}; "
      f"padded-token MFU {t.get('mfu_padded', 0):.1%}.",
  ]
  if "ratio_ours_over_torch" in r:
    notes.append(f"ours / authors' stack: "
                 f"{r['ratio_ours_over_torch']['sentences_per_s']:.2f}x "
                 "sentences/s (same sentences, entities and neighbours).")
  ip = r["input_pipeline"]
  if ip.get("rows_per_s"):
    notes.append(f"input pipeline alone: {ip['rows_per_s']:.0f} rows/s, "
                 f"{ip['ratio_to_step']:.0f}x what the step consumes.")
  if "phases_s" in r:
    notes.append("phases (fwd+bwd alone, s): " + ", ".join(
        f"{k} {v:.3f}" for k, v in r["phases_s"].items()))
  notes.append(f"compiled memory {r['compiled_memory']}; peak RSS "
               f"{r['peak_rss_mib']:.0f} MiB.")
  return "\n".join(lines + [""] + notes)


def main(args) -> int:
  report = run_bench(args)
  out = args.out
  storage.write_text(out, json.dumps(report, indent=2))
  print(to_table(report))
  print(f"report: {out}", file=sys.stderr)
  return 0
