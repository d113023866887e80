"""The `export-hf` command: a Hugging Face BERT directory from a training
run's latest checkpoint or from another HF BERT directory (a round trip
through our Flax model, verified on the way)."""

from __future__ import annotations

import json
import os
import sys
import time

from bali_jax import storage
from bali_jax.eval.models import is_hf_dir, is_run_dir, load_run


def cmd_export_hf(args) -> int:
  import jax
  from bali_jax import open_data
  from bali_jax.hf import export as hf_export, importer as hf_import
  src = open_data.resolve_model_dir(args.source)
  if not storage.isdir(src):
    raise FileNotFoundError(f"--source {src}: no such directory")
  if is_run_dir(src):
    return _export_run(args, src)
  if not is_hf_dir(src):
    raise ValueError(
        f"--source {src}: neither a Hugging Face BERT directory (config.json "
        "+ weights) nor a training run directory (config.json + "
        "checkpoints/)")
  t0 = time.time()
  print(f"importing {src}")
  pre = hf_import.load_pretrained(src)
  n_params = sum(x.size for x in jax.tree.leaves(pre.params))
  print(f"  {pre.config.num_hidden_layers} layers, d={pre.config.hidden_size},"
        f" {n_params:,} parameters, pooler={pre.has_pooler}, "
        f"mlm_head={pre.has_mlm_head}")
  from bali_jax.hf import model_card  # huggingface_hub: only when exporting
  base, lic = model_card.describe_base(src, args.source, args.base_model)
  card = model_card.render(model_card.CardInputs(
      base_model=base, license=args.license or lic,
      architecture=_architecture(pre.config, pre.params),
      evaluations=_evaluations(args.eval_report or [], src, None)))
  report = hf_export.export_hf(pre.config, pre.params, args.out,
                               pre.tokenizer, dtype=args.dtype,
                               max_shard_size=args.max_shard_size,
                               overwrite=args.overwrite, model_card=card)
  print(f"wrote {report.out_dir}: {', '.join(report.weight_files)} "
        f"({report.total_bytes / 1e6:.1f} MB, {report.num_tensors} tensors, "
        f"{args.dtype}, architectures {report.architectures})")
  for cls, skipped, fresh in (
      ("AutoModel", report.skipped_by_automodel, report.fresh_in_automodel),
      ("AutoModelForMaskedLM", report.skipped_by_masked_lm,
       report.fresh_in_masked_lm)):
    print(f"  transformers {cls}: "
          + (f"initialises {fresh} fresh (the source has none)" if fresh
             else "loads every weight it needs")
          + (f"; ignores {len(skipped)} tensors of the other head"
             if skipped else ""))
  result = {"source": src, "out": report.out_dir, "dtype": args.dtype,
            "files": report.weight_files, "parameters": report.num_parameters}
  if args.verify:
    result.update(hf_export.verify_export(report.out_dir, pre.config,
                                          pre.params, pre.tokenizer,
                                          args.dtype))
    identical = result["params_identical"]
    print(f"verify: re-imported params identical={identical}, tokenizer ids "
          f"identical={result['tokenizer_identical']}, hidden-state max abs "
          f"diff on {len(hf_export.PROBE_SENTENCES)} probe sentences="
          f"{result['probe_max_abs_diff']:.3g}")
    if not identical or not result["tokenizer_identical"]:
      print("error: the export does not reproduce the source", file=sys.stderr)
      return 1
  print(f"done in {time.time() - t0:.1f}s. Load it with "
        f"transformers.AutoModel.from_pretrained({report.out_dir!r})")
  print(json.dumps(result))
  return 0



def _export_run(args, workdir: str) -> int:
  """Exports the BERT (+ MLM head) of a run's latest checkpoint."""
  from bali_jax.hf import export as hf_export
  bert_cfg, params, tok, step, cfg, _ = load_run(workdir)
  print(f"restored step {step} of {workdir}")
  report = hf_export.export_hf(bert_cfg, params, args.out, tok,
                               dtype=args.dtype,
                               max_shard_size=args.max_shard_size,
                               overwrite=args.overwrite,
                               model_cfg=cfg.model,
                               model_card=_run_card(args, workdir, bert_cfg,
                                                    params, step, cfg))
  result = {"source": workdir, "step": step, "out": report.out_dir,
            "files": report.weight_files,
            "parameters": report.num_parameters,
            "graph_encoder": report.graph_files}
  print("graph encoder: " + (
      f"{', '.join(report.graph_files)} (load with bali_jax.model.graph_io."
      "load_graph_encoder)" if report.graph_files else
      "none (graph_encoder=linear has no GNN)"))
  if args.verify:
    diff = hf_export.verify_export(
        report.out_dir, bert_cfg, params, tok, exact=False,
        scan_layers=bert_cfg.scan_layers)["probe_max_abs_diff"]
    result["probe_max_abs_diff"] = diff
    print(f"verify: hidden-state max abs diff on the probe sentences "
          f"{diff:.3g}")
    if args.dtype == "float32" and diff > 1e-5:
      print("error: the export does not reproduce the checkpoint",
            file=sys.stderr)
      return 1
  print(f"wrote {report.out_dir}")
  print(json.dumps(result))
  return 0


def _architecture(config, params) -> dict:
  import jax
  return {"layers": config.num_hidden_layers, "hidden": config.hidden_size,
          "heads": config.num_attention_heads,
          "parameters": int(sum(x.size for x in
                                jax.tree.leaves(params["bert"])))}


def _run_card(args, workdir: str, bert_cfg, params, step: int, cfg) -> str:
  """The card of a run's export: its starting BERT, data card, resolved
  config, step, evaluation reports (the run's own eval_el.json unless
  --eval-report names others) and graph encoder files."""
  from bali_jax import open_data
  from bali_jax.hf import model_card
  from bali_jax.model import graph_io
  init = cfg.init_from
  base, lic = model_card.describe_base(
      open_data.resolve_model_dir(init) if init else None, init,
      args.base_model)
  data_card = storage.join(cfg.data_dir, "data_card.json")
  own = storage.join(workdir, "eval_el.json")
  reports = args.eval_report or ([own] if storage.exists(own) else [])
  return model_card.render(model_card.CardInputs(
      base_model=base, license=args.license or lic,
      architecture=_architecture(bert_cfg, params), step=step,
      config=json.loads(storage.read_text(storage.join(workdir,
                                                       "config.json"))),
      data_card=(json.loads(storage.read_text(data_card))
                 if storage.exists(data_card) else None),
      evaluations=_evaluations(reports, workdir, step),
      graph_files=graph_io.graph_files(cfg.model, params.get("gnn")),
      pooling=cfg.model.name_pooling))


def _evaluations(paths: list[str], source: str, step: int | None
                 ) -> list[tuple[str, str]]:
  """(title, markdown table) of each `evaluate` report; a report of this
  run at another step than the exported one says so."""
  from bali_jax.eval import report as el_report
  out = []
  for path in paths:
    try:
      rep = json.loads(storage.read_text(path))
      table = el_report.to_markdown(rep)
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ValueError(f"--eval-report {path}: not an `evaluate` report "
                       f"({type(e).__name__}: {e})") from e
    title = ", ".join(q["name"] for q in rep["query_sets"])
    stale = [m["step"] for m in rep["models"] if step is not None and
             m.get("step") not in (None, step) and
             os.path.abspath(m.get("source", "")) == os.path.abspath(source)]
    if stale:
      table = (f"Evaluated at step {stale[0]}; this export is step "
               f"{step}.\n\n{table}")
    out.append((title, table))
  return out
