"""The linking gain against training steps, read from `evaluate` reports.

`evaluate --model BASE --model RUN@250 --model RUN@500 ...` scores a run's
kept checkpoints against a baseline (the starting BERT: the run's step 0)
with paired intervals. Whether more steps buy more is a question people
answer by looking, so this draws each query set's Δ acc@1 [95%] against
step, one panel per (queries, representation), from one or several reports
(e.g. the dataset's held-out sets and a benchmark's development split),
or from one report per checkpoint (evaluated as each is saved), merged by
step.
"""

from __future__ import annotations

import json

from bali_jax import storage


def curve_points(report: dict) -> dict:
  """{(queries, representation): [(step, Δ, lo, hi, acc@1), ...]} of the
  report's models that have a step, sorted by step, plus the baseline's
  (the first model) at step 0 with Δ 0. Rows of other models are left
  out."""
  models = report["models"]
  base = models[0]["label"]
  step_of = {m["label"]: m["step"] for m in models[1:]
             if m.get("step") is not None}
  out: dict = {}
  for r in report["results"]:
    key = (r["queries"], r["representation"])
    if r["model"] == base:
      out.setdefault(key, []).append((0, 0.0, 0.0, 0.0, r["acc@1"]))
    elif r["model"] in step_of and r.get("delta_acc@1") is not None:
      lo, hi = r.get("delta_acc@1_ci") or (None, None)
      out.setdefault(key, []).append((step_of[r["model"]], r["delta_acc@1"],
                                      lo, hi, r["acc@1"]))
  return {k: sorted(v) for k, v in out.items() if len(v) > 1}


def plot_curve(reports: list[str], out: str) -> dict:
  """Writes the PNG; returns the points plotted ({"queries/repr": [...]})."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels, base = {}, None
  for path in reports:  # one report per checkpoint works too: merged
    rep = json.loads(storage.read_text(path))
    label = rep["models"][0]["label"]
    if base not in (None, label):
      raise ValueError(f"{path}: baseline {label!r}, but an earlier report's "
                       f"is {base!r}; a curve needs one baseline")
    base = label
    for (q, rep_kind), pts in curve_points(rep).items():
      merged = dict((p[0], p) for p in panels.get(f"{q} / {rep_kind}", []))
      merged.update((p[0], p) for p in pts)
      panels[f"{q} / {rep_kind}"] = [merged[k] for k in sorted(merged)]
  if not panels:
    raise ValueError(f"{', '.join(reports)}: no model with a training step "
                     "beside the baseline (evaluate --model BASE "
                     "--model RUN@STEP ...)")
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6),
                           squeeze=False)
  for ax, (title, pts) in zip(axes[0], panels.items()):
    steps = [p[0] for p in pts]
    delta = [100 * p[1] for p in pts]
    ax.axhline(0, color="grey", lw=0.8)
    ax.plot(steps, delta, "o-", label="Δ acc@1")
    band = [p for p in pts if p[2] is not None]
    if band:
      ax.fill_between([p[0] for p in band], [100 * p[2] for p in band],
                      [100 * p[3] for p in band], alpha=0.25,
                      label="95% interval")
    ax.set(title=f"{title}\n({base} acc@1 {100 * pts[0][4]:.1f})",
           xlabel="training step", ylabel="Δ acc@1 vs baseline (points)")
    ax.legend(fontsize=8)
  storage.write_png(out, fig)
  return {k: [list(p) for p in v] for k, v in panels.items()}
