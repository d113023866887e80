"""`python -m bali_jax ablate`: short runs with one key changed, one table.

Every variant trains from the same data, seed and preset with its
`key=value` overrides (a `python -m bali_jax train` subprocess per variant,
so each row's command is exactly what a user would type), then all of them
and the starting BERT are linked by `evaluate` in one pass: held-out
synonyms and test mentions, both representations. A variant whose run
directory already holds a finished run is not trained again, so an
interrupted ablation resumes where it stopped.

Writes WORKDIR/ablation.md (the table, the commands) and
WORKDIR/ablation.json (the full evaluate report plus per-run training
figures).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from bali_jax import storage

# name -> overrides; the first is the preset, the second the authors'
# exact configuration (the open_default preset differs only in lr_lm).
# Data-side knobs need their own datasets: pass them as
# --variant document_order:data_dir=DIR (a build with --packing-order
# document), as README's table does.
DEFAULT_VARIANTS = {
    "open_default": [],
    "authors": ["lr_lm=2e-5"],
    "no_mlm": ["mlm_probability=0"],
    "frozen_warmup": ["freeze_bert_steps=30"],
    "masking_0.15": ["mention_masking_prob=0.15",
                     "concept_name_masking_prob=0.15"],
    "tau_0.2": ["model.temperature=0.2"],
    "t_tcl": ["model.textual_contrastive_weight=1"],
    "target_residual": ["gnn.target_residual=true"],
}


def parse_variant(text: str) -> tuple[str, list[str]]:
  """`name:key=v,key=v` -> (name, [key=v, ...])."""
  name, sep, rest = text.partition(":")
  if not sep or not name:
    raise ValueError(f"--variant {text!r}: expected NAME:key=value,...")
  return name, [kv for kv in rest.split(",") if kv]


def _finished(run: str, steps: int) -> bool:
  ckpt = storage.join(run, "checkpoints")
  if not storage.isdir(ckpt):
    return False
  done = [int(d) for d in storage.listdir(ckpt) if d.isdigit()]
  return bool(done) and max(done) >= steps


def _train_summary(run: str) -> dict:
  rows = [json.loads(l) for l in storage.read_text(
      storage.join(run, "metrics.jsonl")).splitlines() if l.strip()]
  train = [r for r in rows if "loss" in r]
  evals = [r for r in rows if "eval_align_accuracy" in r]
  out = {"final_loss": train[-1]["loss"], "final_mlm_loss":
         train[-1]["mlm_loss"], "final_align_loss": train[-1]["align_loss"],
         "median_step_s": sorted(r["step_time"] for r in train)[
             len(train) // 2]}
  if evals:
    out["val_align_accuracy"] = evals[-1]["eval_align_accuracy"]
  return out


class VariantFailedError(RuntimeError):
  """A variant's training run exited non-zero (its log names why)."""


def _train(cmd: list[str], log: str) -> str | None:
  """Runs one variant's `train` with its output in `log` (local, or a URL
  written when it ends); None, or the log's last error line."""
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, "log") if storage.is_url(log) else log
    with open(local, "w") as f:  # local: the subprocess writes it
      r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if local != log:
      storage.copy_file(local, log)
    if r.returncode == 0:
      return None
    text = storage.read_text(local)  # only a failure needs its log read
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  errs = [l for l in lines if l.startswith("error:") or "Error" in l]
  return f"exit {r.returncode}: " + (errs or lines or ["(empty log)"])[-1]


def _check(data_dir: str, config: str, steps: int, variants: dict,
           extra) -> None:
  """Refuses bad input before any variant trains (or any file is
  written): the data, the preset and every variant's overrides."""
  from bali_jax import configs
  from bali_jax.train.input_pipeline import load_spec
  base_cfg = configs.get_config(config)
  for name, overrides in variants.items():
    try:
      configs.apply_overrides(base_cfg, [f"steps={steps}", *extra,
                                         *overrides])
    except ValueError as e:
      raise ValueError(f"variant {name}: {e}") from None
  load_spec(data_dir)


def run_ablation(data_dir: str, workdir: str, config: str = "open_default",
                 steps: int = 150, variants: dict | None = None,
                 extra: list[str] = (), baseline: str | None = None) -> dict:
  from bali_jax import configs
  from bali_jax.eval import report as report_lib
  variants = variants or DEFAULT_VARIANTS
  _check(data_dir, config, steps, variants, extra)
  storage.makedirs(workdir)
  baseline = baseline or configs.get_config(config).init_from
  runs, info = [], {}
  for name, overrides in variants.items():
    run = storage.join(workdir, name)
    cmd = [sys.executable, "-m", "bali_jax", "train", "--config", config,
           "--workdir", run, f"data_dir={data_dir}", f"steps={steps}",
           f"save_every={steps}", *extra, *overrides]
    shown = "python -m bali_jax " + " ".join(shlex.quote(c)
                                            for c in cmd[3:])
    t0 = time.time()
    own = [int(kv.split("=", 1)[1]) for kv in (*extra, *overrides)
           if kv.startswith("steps=")]
    if _finished(run, own[-1] if own else steps):
      print(f"[ablate] {name}: finished run found, not retraining")
    else:
      print(f"[ablate] {name}: {shown}", flush=True)
      log = storage.join(workdir, f"{name}.log")
      failed = _train(cmd, log)
      if failed:
        raise VariantFailedError(f"variant {name} failed ({failed}); "
                                 f"log: {log}")
    info[name] = {"overrides": overrides, "command": shown,
                  "train_seconds": round(time.time() - t0, 1),
                  **_train_summary(run)}
    runs.append(run)
  models = ([baseline] if baseline else []) + runs
  rep = report_lib.evaluate(models, data_dir=data_dir,
                            out=storage.join(workdir, "ablation_eval.json"))
  out = {"config": config, "steps": steps, "data_dir": data_dir,
         "extra": list(extra), "baseline": baseline, "variants": info,
         "evaluate": rep}
  storage.write_text(storage.join(workdir, "ablation.json"),
                     json.dumps(out, indent=2))
  storage.write_text(storage.join(workdir, "ablation.md"), to_markdown(out))
  return out


def _get(rep, model, queries, representation, key):
  for r in rep["results"]:
    if (r["model"], r["queries"], r["representation"]) == (
        model, queries, representation):
      return r[key]
  return None


def to_markdown(out: dict) -> str:
  rep = out["evaluate"]
  labels = [m["label"] for m in rep["models"]]
  base = labels[0]
  cols = [("heldout_synonyms", "string", "acc@1"),
          ("heldout_synonyms", "string", "hard_acc@1"),
          ("heldout_synonyms", "string", "acc@5"),
          ("test_mentions", "string", "acc@1"),
          ("test_mentions", "sentence", "acc@1")]
  n = {c: _get(rep, base, c[0], c[1], "n") for c in cols}
  head = ["variant", "held-out syn. acc@1", "Δ", "hard acc@1", "acc@5",
          "test mentions acc@1 (string)", "test mentions acc@1 (sentence)",
          "Δ", "final MLM / align loss"]
  lines = [f"Preset `{out['config']}`, {out['steps']} steps, data "
           f"`{out['data_dir']}`; held-out synonyms n="
           f"{n[cols[0]]}, test mentions n={n[cols[3]]}. acc in %, Δ in "
           "points vs the first row.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  pct = lambda x: "-" if x is None else f"{100 * x:.1f}"
  names = ["(starting BERT)"] + list(out["variants"]) if out["baseline"] \
      else list(out["variants"])
  first = None
  for label, name in zip(labels, names):
    v = [_get(rep, label, *c) for c in cols]
    if first is None:
      first = v
    d1 = "" if v is first else f"{100 * (v[0] - first[0]):+.1f}"
    d2 = "" if v is first or v[4] is None else \
        f"{100 * (v[4] - first[4]):+.1f}"
    t = out["variants"].get(name)
    losses = "" if t is None else \
        f"{t['final_mlm_loss']:.2f} / {t['final_align_loss']:.2f}"
    lines.append(f"| {name} | {pct(v[0])} | {d1} | {pct(v[1])} | "
                 f"{pct(v[2])} | {pct(v[3])} | {pct(v[4])} | {d2} | "
                 f"{losses} |")
  lines += ["", "Commands:", ""]
  for name, t in out["variants"].items():
    lines.append(f"- `{name}`: `{t['command']}`")
  return "\n".join(lines) + "\n"
