"""Training curves as a PNG beside metrics.jsonl (people look, not read)."""

from __future__ import annotations

import json

from bali_jax import storage


def plot_metrics(workdir: str) -> str | None:
  """Writes DIR/metrics.png (losses, accuracies, throughput); returns it."""
  path = storage.join(workdir, "metrics.jsonl")
  if not storage.exists(path):
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  train, evals = {}, {}
  for line in storage.read_text(path).splitlines():
    if line.strip():
      row = json.loads(line)
      is_eval = any(k.startswith("eval_") for k in row)
      (evals if is_eval else train)[row["step"]] = row
  if not train:
    return None
  steps = sorted(train)
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for key, style in (("loss", "-"), ("mlm_loss", "--"), ("align_loss", ":")):
    axes[0].plot(steps, [train[s][key] for s in steps], style, label=key)
  for s in sorted(evals):
    if "eval_loss" in evals[s]:
      axes[0].plot([s], [evals[s]["eval_loss"]], "ko")
  axes[0].set(title="losses (dots: validation loss)", xlabel="step")
  axes[0].legend()
  for key in ("mlm_accuracy", "align_accuracy"):
    axes[1].plot(steps, [train[s][key] for s in steps], label=key)
  el = [s for s in sorted(evals) if "eval_el_acc@1" in evals[s]]
  if el:
    axes[1].plot(el, [evals[s]["eval_el_acc@1"] for s in el], "o-",
                 label="held-out synonym linking acc@1")
  axes[1].set(title="accuracies", xlabel="step", ylim=(0, 1))
  axes[1].legend()
  axes[2].plot(steps, [train[s]["real_tokens_per_s"] for s in steps],
               label="real tokens/s")
  axes[2].plot(steps, [train[s]["tokens_per_s"] for s in steps],
               label="padded tokens/s")
  axes[2].set(title="throughput", xlabel="step")
  axes[2].legend()
  out = storage.join(workdir, "metrics.png")
  storage.write_png(out, fig)
  return out
