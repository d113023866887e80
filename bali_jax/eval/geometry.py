"""`python -m bali_jax probe-geometry`: where the alignment moves a run's
spaces, read from its kept checkpoints on the validation rows.

Why: linking compares a mention (its string, or its tokens pooled in the
sentence) with names encoded alone, which is what the dictionary holds.
The alignment pulls each in-sentence mention e_v towards g_v, the graph
tower's output, not towards v's name. When g_v stops depending on the
target's own name, e_v follows g_v out of the names' space: in-sentence
linking collapses while the alignment loss improves. `evaluate` shows the
collapse; this measures the geometry behind it at any kept step, with no
training and no dictionary. Step 0 is the run's initial state, rebuilt
from its config and seed as the run built it.

Per step, over the linked entities of the first `batches` validation
batches (uncorrupted, no dropout), cosines:
  text_graph    cos(e_v, g_v): what the alignment pulls together
  text_name     cos(e_v, n_v): e_v against v's sampled name encoded alone
  graph_name    cos(g_v, n_v): how much g_v still depends on its target
  *_spread      mean cos between entities of different concepts
                (anisotropy: 1 means every vector points the same way)
  text_name_top1, text_graph_top1  in-sample retrieval: the nearest of all
                entities' names (graph vectors) to e_v is one of v's
  text_name_top1_centered  the same after removing each side's mean
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bali_jax import storage

SIDES = ("text", "graph", "names")


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def geometry(emb: dict[str, np.ndarray], concepts: np.ndarray) -> dict:
  """The figures above from M valid entities: emb["text"|"graph"|"names"]
  (M, D) and their concept ids (M,). Pure NumPy."""
  unit = {k: _unit(emb[k]) for k in SIDES}  # (M, D) each
  same = concepts[:, None] == concepts[None, :]  # (M, M)
  if same.all():
    raise ValueError("geometry needs entities of at least two concepts")
  out = {}
  for a, b, name in (("text", "graph", "text_graph"),
                     ("text", "names", "text_name"),
                     ("graph", "names", "graph_name")):
    out[name] = float(np.mean(np.sum(unit[a] * unit[b], -1)))
  for k, name in (("text", "text"), ("graph", "graph"), ("names", "name")):
    sims = unit[k] @ unit[k].T  # (M, M)
    out[f"{name}_spread"] = float(sims[~same].mean())
  for k, name in (("names", "text_name_top1"), ("graph", "text_graph_top1")):
    nearest = np.argmax(unit["text"] @ unit[k].T, axis=1)  # (M,)
    out[name] = float(np.mean(concepts[nearest] == concepts))
  # the same with each side's mean direction removed: if this recovers
  # what text_name_top1 lost, the information is there and a shared
  # direction (the spread) hides it
  cen = {k: _unit(unit[k] - unit[k].mean(0)) for k in ("text", "names")}
  nearest = np.argmax(cen["text"] @ cen["names"].T, axis=1)
  out["text_name_top1_centered"] = float(np.mean(concepts[nearest]
                                                 == concepts))
  out["entities"] = int(len(concepts))
  out["concepts"] = int(len(np.unique(concepts)))
  return out


def initial_params(cfg, spec, mesh):
  """A run's state before its first step, rebuilt from its config and
  seed (init_from and a fresh graph tower) as `train` built it."""
  import jax
  from bali_jax.train.state import create_state
  from bali_jax.train.step import make_optimizer
  state, _, _ = create_state(cfg, spec, make_optimizer(cfg), mesh,
                             jax.random.key(cfg.seed))
  return jax.device_get(state.params)


def embed_fn(cfg, spec):
  """jit(params, batch) -> the three (B, E, D) sides and the entity ids:
  the model's own forward (names = the target nodes' features, as T-TCL
  reads them), on rows with no MLM or mention masking."""
  import jax
  from bali_jax.model.bali import BaliModel
  from bali_jax.train.step import corrupt
  if cfg.model.graph_encoder == "linear":
    raise ValueError("probe-geometry needs a GNN graph encoder (gat or "
                     "sage): the linear kind encodes no target name alone")
  model = BaliModel(dataclasses.replace(cfg.model,
                                        textual_contrastive_weight=1.0))
  clean = cfg.replace(mlm_probability=0.0, mention_masking_prob=0.0,
                      concept_name_masking_prob=0.0)

  @jax.jit
  def embed(params, batch):
    batch = corrupt(clean, spec, batch, jax.random.key(0))
    emb = model.apply({"params": params}, batch, deterministic=True,
                      embeddings_only=True)
    return {k: emb[k] for k in (*SIDES, "entity_concept", "entity_mask")}
  return embed


def measure(embed, params, batches: list) -> dict:
  """geometry() of `params` over the valid entities of `batches`."""
  import jax
  parts = [jax.device_get(embed(params, b)) for b in batches]
  mask = np.concatenate([p["entity_mask"].reshape(-1) for p in parts]) > 0
  d = parts[0]["text"].shape[-1]
  emb = {k: np.concatenate([p[k].reshape(-1, d) for p in parts])[mask]
         for k in SIDES}
  ids = np.concatenate([p["entity_concept"].reshape(-1) for p in parts])
  return geometry(emb, ids[mask])


def probe_run(run: str, steps: list[int] | None, batches: int,
              data_dir: str = "") -> list[dict]:
  """One row per step of one run, on the first `batches` validation
  batches of `data_dir` (default: the run's own data); steps default to
  0 and every kept step. The batches are read and `embed` compiled once
  per run; only the params change from step to step."""
  from bali_jax.eval import models
  from bali_jax.train.input_pipeline import InputPipeline
  if not models.is_run_dir(run):
    raise ValueError(f"--run {run}: not a training run directory "
                     "(config.json + checkpoints/)")
  kept = models.kept_steps(run)
  steps = [0] + kept if steps is None else steps
  for s in steps:  # every step checked before anything is computed
    if s:
      models.check_kept(run, s, kept)
  cfg, spec, mesh = models.run_setup(run)
  cfg = cfg.replace(eval_batches=batches, data_dir=data_dir or cfg.data_dir)
  embed = embed_fn(cfg, spec)  # refuses a linear graph encoder
  rows = InputPipeline(cfg.data_dir, spec, cfg, 0, 1).eval_batches()
  if not rows:
    raise ValueError(f"{cfg.data_dir}: its validation split has fewer rows "
                     f"than one batch of {cfg.batch_size}")
  out = []
  for s in steps:
    params = initial_params(cfg, spec, mesh) if s == 0 else \
        models.restore_params(run, cfg, spec, mesh, s)[0]
    out.append({"run": storage.display(run), "step": s,
                **measure(embed, params, rows)})
  return out


def probe(runs: list[str], steps: list[int] | None, batches: int,
          data_dir: str = "") -> list[dict]:
  """One row per (run, step)."""
  return [r for run in runs for r in probe_run(run, steps, batches,
                                               data_dir)]


COLUMNS = ("text_graph", "text_name", "graph_name", "text_spread",
           "name_spread", "graph_spread", "text_name_top1",
           "text_name_top1_centered", "text_graph_top1")


def to_markdown(rows: list[dict]) -> str:
  head = "| run | step | " + " | ".join(COLUMNS) + " | entities |"
  lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
  for r in rows:
    lines.append(f"| {r['run']} | {r['step']} | " + " | ".join(
        f"{r[c]:.3f}" for c in COLUMNS) + f" | {r['entities']} |")
  return "\n".join(lines)


PANELS = (("positive pairs: mean cosine", ("text_graph", "text_name",
                                            "graph_name")),
          ("spread and in-sample retrieval", ("text_spread", "graph_spread",
                                              "name_spread", "text_name_top1",
                                              "text_name_top1_centered")))


def plot(rows: list[dict], out: str) -> None:
  """The figures against step: a row of two panels per run (the pairs the
  alignment ties; the spreads and what retrieval makes of them)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  runs = list(dict.fromkeys(r["run"] for r in rows))
  fig, axes = plt.subplots(len(runs), 2, figsize=(10, 3.4 * len(runs)),
                           squeeze=False)
  for row_axes, run in zip(axes, runs):
    pts = sorted((r for r in rows if r["run"] == run),
                 key=lambda r: r["step"])
    name = run.rstrip("/").split("/")[-1]
    for ax, (title, cols) in zip(row_axes, PANELS):
      for col in cols:
        ax.plot([r["step"] for r in pts], [r[col] for r in pts], "o-",
                label=col, ms=3)
      ax.set_title(f"{name}\n{title}", fontsize=9)
      ax.set(xlabel="training step", ylim=(-0.05, 1.05))
      ax.legend(fontsize=7)
  storage.write_png(out, fig, dpi=80)
