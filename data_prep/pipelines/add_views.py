"""More views for a built dataset, without re-reading the sources.

`python -m data_prep add-views --data DIR --views N` samples views
`train_view{V}` .. `train_view{N-1}` from the dataset's own tokenized
sentences (`sentences_train.jsonl`) and graph (`*.tsv`), with the seed and
packing order it was built with, so a view added later holds the same
records as the same view built at once (byte for byte within one process;
across processes protobuf may order the feature map differently). A run
of E epochs needs E views (the trainer says so before compiling).

Safe on failure: the new record files get names no reader knows yet; then
`dataset_info.json` (tfds) and `bali_dataset.json` (what training reads)
are replaced atomically, in that order, so an interruption at any point
leaves a dataset that reads exactly as before.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile

from bali_jax.features import spec_budgets
from bali_jax.hf.tokenizer import load_tokenizer
from data_prep.records import card
from data_prep.pipelines.build import (SPEC_FILE, make_linearizer,
                                       train_row_means)
from bali_jax.readers.errors import BadInputError
from bali_jax.records.examples import NameTokens
from bali_jax.readers.kg import read_tsv
from data_prep.records.views import ViewRows


def _replace_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def add_views(data_dir: str, views: int) -> dict:
  """Adds train views up to `views` in all; returns the updated spec."""
  from bali_jax import storage
  from data_prep.records.tfds_builder import BaliRecords, prepare
  if storage.is_url(data_dir):
    raise BadInputError(
        f"add-views --data {data_dir}: works on a local dataset (it "
        "rewrites the tfds metadata in place); copy it down, add views, "
        "and copy it back (e.g. gcloud storage cp -r)")
  with open(os.path.join(data_dir, SPEC_FILE)) as f:
    spec = json.load(f)
  have = spec["views"]
  if views <= have:
    raise BadInputError(f"{data_dir} already has {have} views; ask for more "
                     f"than {have}")
  sentences = os.path.join(data_dir, "sentences_train.jsonl")
  if not os.path.exists(sentences):
    raise FileNotFoundError(
        f"{data_dir}: no sentences_train.jsonl (built by an older "
        "data_prep); rebuild the dataset to add views to it")
  kg = read_tsv(data_dir)
  budgets = spec_budgets(spec)
  tokenizer = load_tokenizer(os.path.join(data_dir, spec["tokenizer_dir"]))
  names = NameTokens(tokenizer, kg, budgets.max_name_tokens)
  lin = make_linearizer(tokenizer, kg, budgets,
                        spec.get("linear_format") or "v1")
  gen = ViewRows(sentences, kg, names, budgets, spec["seed"],
                 spec.get("packing_order", "shuffled"),
                 spec.get("open_rows", 1), lin, spec.get("pack_chunk", 0))
  version_dir = os.path.join(data_dir, spec["tfds_dir"])
  with open(os.path.join(version_dir, "dataset_info.json")) as f:
    info = json.load(f)
  tmp = tempfile.mkdtemp(prefix=".add-views.tmp-", dir=data_dir)
  try:
    builder = BaliRecords(
        gens={f"train_view{v}": (gen, v) for v in range(have, views)},
        budgets=budgets, data_dir=tmp,
        file_format=info.get("fileFormat", "tfrecord"))
    prepare(builder)
    new_dir = os.path.join(tmp, spec["tfds_dir"])
    with open(os.path.join(new_dir, "dataset_info.json")) as f:
      new_splits = json.load(f)["splits"]
    added = {s["name"] for s in new_splits}
    # files first: under names that the current info does not list
    for path in glob.glob(os.path.join(new_dir, f"{spec['dataset']}-*")):
      os.replace(path, os.path.join(version_dir, os.path.basename(path)))
    info["splits"] = [s for s in info["splits"] if s["name"] not in added]
    info["splits"] += new_splits
    _replace_json(os.path.join(version_dir, "dataset_info.json"), info)
    data_card_path = os.path.join(data_dir, "data_card.json")
    with open(data_card_path) as f:
      data_card = json.load(f)
    pack = {f"train_view{v}": gen.stats[v].to_dict(budgets)
            for v in range(have, views)}
    data_card["packing"].update(pack)
    train_pack = {k: p for k, p in data_card["packing"].items()
                  if k.startswith("train_view")}
    spec = {**spec, "views": views,
            "splits": {**spec["splits"],
                       **{k: p["rows"] for k, p in pack.items()}},
            "train_row_means": train_row_means(train_pack)}
    _replace_json(os.path.join(data_dir, SPEC_FILE), spec)
    data_card["options"]["views"] = views
    _replace_json(data_card_path, data_card)
    with open(os.path.join(data_dir, "DATA_CARD.md"), "w") as f:
      f.write(card.to_markdown(data_card))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return spec
