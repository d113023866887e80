"""The Hugging Face model card (`README.md`) of an exported BERT.

An exported directory is uploaded as is, and the Hub shows its README.md
as the model's page: YAML metadata (base model, library, licence, tags,
datasets) that the Hub indexes, then what a reader needs to trust and use
the weights: what they were trained on (the data card's sources and
licences), how long, with which settings (the resolved config), how they
link concepts (the evaluation tables with their intervals, when the run
has been evaluated) and how to load them. Rendered from plain values so
that this module stays below `train/` and `eval/`: the CLI gathers them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from huggingface_hub import ModelCard, ModelCardData

# The starter's Hub id (its package ships the weights without saying it).
STARTER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
TAGS = ("bert", "biomedical", "entity-linking", "knowledge-graph", "bali",
        "bali_jax", "feature-extraction")
CITATION = """@inproceedings{sakhovskiy2025bali,
  title = {Biomedical Knowledge Graph and Language Model Alignment},
  author = {Sakhovskiy, Andrey and Tutubalina, Elena},
  booktitle = {Proceedings of the 48th International ACM SIGIR Conference
               on Research and Development in Information Retrieval},
  year = {2025},
  note = {arXiv:2509.07588}
}"""
# a Hub cache snapshot: .../models--ORG--NAME/snapshots/HASH
_CACHE = re.compile(r"models--([^/]+)--([^/]+)/snapshots/[^/]+/?$")


@dataclasses.dataclass
class CardInputs:
  """What the card says; None where the export does not know it."""
  base_model: str | None  # Hub id of the starting BERT
  license: str  # the base model's licence ("unknown" if not found)
  architecture: dict  # layers, hidden, heads, parameters
  step: int | None = None  # training steps (None: a converted HF model)
  config: dict | None = None  # the run's resolved config.json
  data_card: dict | None = None  # the dataset's data_card.json
  evaluations: list[tuple[str, str]] = dataclasses.field(
      default_factory=list)  # (title, markdown) per evaluate report
  graph_files: list[str] = dataclasses.field(default_factory=list)
  pooling: str = "mean"


def describe_base(model_dir: str | None, alias: str | None = None,
                  hub_id: str | None = None) -> tuple[str | None, str]:
  """(Hub id, licence) of a starting BERT directory: the id given, the
  starter's, or one read from a Hub cache path; the licence from the
  directory's own card (its YAML `license`)."""
  if not hub_id and alias == "starter":
    hub_id = STARTER_HUB_ID
  if not hub_id and model_dir:
    m = _CACHE.search(os.path.abspath(model_dir))
    hub_id = f"{m.group(1)}/{m.group(2)}" if m else None
  lic = "unknown"
  card = os.path.join(model_dir or "", "README.md")
  if model_dir and os.path.isfile(card):
    lic = ModelCard.load(card).data.to_dict().get("license") or lic
  return hub_id, str(lic)


def _metadata(c: CardInputs) -> ModelCardData:
  sources = (c.data_card or {}).get("sources", [])
  return ModelCardData(
      base_model=c.base_model, library_name="transformers",
      license=c.license, language="en", tags=list(TAGS),
      datasets=list(dict.fromkeys(s["name"] for s in sources)) or None,
      pipeline_tag="feature-extraction")


def _data_section(dc: dict | None) -> list[str]:
  if not dc:
    return ["## Training data", "",
            "Not recorded (the run's data directory has no data_card.json)."]
  g, corpus = dc["graph"], dc["corpus"]
  lines = ["## Training data", "", "| source | version | licence |",
           "|---|---|---|"]
  lines += [f"| {s['name']} | {s['version']} | {s['licence']} |"
            for s in dc["sources"]]
  lines += [""] + [f"> {s['credit']}" for s in dc["sources"]
                   if s.get("credit")]
  lines += ["", f"Graph: {g['concepts']:,} concepts, {g['names']:,} names, "
            f"{g['edges']:,} directed edges. Corpus: "
            f"{corpus['documents_read']:,} documents read.", "",
            "| split | documents | sentences | entities |", "|---|---|---|---|"]
  lines += [f"| {k} | {v['documents']:,} | {v['sentences']:,} | "
            f"{v['entities']:,} |" for k, v in corpus["splits"].items()]
  return lines


def _training_section(c: CardInputs) -> list[str]:
  a = c.architecture
  lines = ["## Training", ""]
  if c.step is None:
    return lines + ["Converted by bali_jax from the Hugging Face model "
                    "above; no training."]
  cfg = c.config or {}
  lines += [f"BALI pre-training (masked language modelling plus alignment "
            f"of each linked mention with a graph encoding of its concept's "
            f"sampled 1-hop subgraph, NT-Xent), {c.step:,} steps from "
            f"`{c.base_model or cfg.get('init_from') or 'fresh weights'}`.",
            "", f"- BERT: {a['layers']} layers, hidden size {a['hidden']}, "
            f"{a['heads']} heads, {a['parameters']:,} parameters",
            f"- graph encoder: {(cfg.get('model') or {}).get('graph_encoder', '?')}"
            + (f" (saved beside the BERT: {', '.join(c.graph_files)}; only "
               "the BERT loads in transformers)" if c.graph_files else "")]
  if cfg:
    lines += ["", "<details><summary>Resolved training config</summary>",
              "", "```json", json.dumps(cfg, indent=2), "```", "",
              "</details>"]
  return lines


def _use_section(c: CardInputs) -> list[str]:
  pool = ("out.last_hidden_state[:, 0]" if c.pooling == "cls" else
          "(out.last_hidden_state * m).sum(1) / m.sum(1)")
  return ["## How to use", "", "Plain `transformers`, no custom code:", "",
          "```python", "import torch",
          "from transformers import AutoModel, AutoTokenizer", "",
          'tok = AutoTokenizer.from_pretrained("PATH_OR_HUB_ID")',
          'model = AutoModel.from_pretrained("PATH_OR_HUB_ID").eval()',
          'batch = tok(["myocardial infarction", "heart attack"], '
          'padding=True, return_tensors="pt")',
          "with torch.no_grad():", "  out = model(**batch)",
          'm = batch["attention_mask"].unsqueeze(-1)',
          f"emb = {pool}  # the pooling the run trained names with "
          f"({c.pooling})", "```"]


def render(c: CardInputs) -> str:
  """The card's text: YAML metadata, then the sections."""
  lines = ["# BALI BERT" + (f" from {c.base_model}" if c.base_model else ""),
           "", "A BERT aligned with a biomedical knowledge graph by BALI "
           "(Sakhovskiy & Tutubalina, SIGIR 2025), trained and exported by "
           "bali_jax. Only the BERT is needed downstream.", ""]
  lines += _training_section(c) + [""] + _data_section(c.data_card) + [""]
  lines += ["## Evaluation", ""]
  for title, table in c.evaluations:
    lines += [f"### {title}", "", table, ""]
  if not c.evaluations:
    lines += ["Not evaluated at export time: `python -m bali_jax evaluate "
              "--model RUN` then `export-hf` again adds the table.", ""]
  lines += _use_section(c) + ["", "## Citation", "", "```bibtex", CITATION,
                              "```", ""]
  return ModelCard(f"---\n{_metadata(c).to_yaml()}\n---\n\n"
                   + "\n".join(lines)).content
