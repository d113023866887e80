"""From documents and a graph to a finished dataset directory, atomically.

Pipeline: documents -> (link raw text) -> sentences -> tokenized, linked
sentences (streamed to per-split JSON lines, split by document so evaluation
never sees training text) -> per view: sentences in a seeded random order,
sampled subgraphs and names -> packed rows -> tensorflow-datasets
TFRecords (`data_prep.records.views`). Everything is written under a
temporary sibling of the output directory, renamed into place at the end.

Output directory:
  bali_records/1.0.0/...   the tfds dataset (splits train_view{i},
                           validation, test)
  bali_dataset.json        budgets, tokenizer, counts: what training checks
  tokenizer/               the tokenizer the ids were made with
  concepts.tsv, relations.tsv, edges.tsv, DATA_CARD.md, data_card.json
  sentences_train.jsonl    the tokenized, linked train sentences: what
                           `python -m data_prep add-views` samples more
                           views from without re-reading the sources
  names.tsv                every name nodes are sampled with (the
                           evaluation dictionary), aliases.tsv
  heldout_synonyms.tsv     synonyms reserved before linking and sampling:
                           zero-shot queries for `bali_jax evaluate`
  test_mentions.jsonl      the test split's sentences with their mentions
                           (character spans, node ids): evaluation queries
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import tempfile
import time

import numpy as np
from tqdm import tqdm

from bali_jax import storage
from bali_jax.features import Budgets
from bali_jax.hf.tokenizer import save_tokenizer
from data_prep.records import card
from bali_jax.readers.errors import BadInputError, BadRecords
from bali_jax.records.examples import NameTokens
from bali_jax.readers.kg import KnowledgeGraph
from data_prep.linking.linker import DictionaryLinker
from data_prep.pipelines.tokenize_worker import (SPLITS, CorpusTally,
                                                init_pool_worker,
                                                init_worker,
                                                process_document)
from bali_jax.records.linearize import FORMATS, Linearizer
from data_prep.records.views import ORDERS, ViewRows, size_rows

DATASET_NAME = "bali_records"
RUNNERS = ("local", "direct", "dataflow", "flink", "spark")
SPEC_FILE = "bali_dataset.json"


@dataclasses.dataclass
class BuildOptions:
  budgets: Budgets = Budgets()
  views: int = 2
  seed: int = 29
  validation_percent: int = 5
  test_percent: int = 5
  workers: int = 2
  file_format: str = "tfrecord"
  heldout_synonyms: float = 0.1  # fraction reserved for evaluation
  packing_order: str = "shuffled"  # or "document" (file order; ablation)
  open_rows: int = 8  # packer window (1 = plain greedy)
  # size budgets.name_rows (and lin_rows) from the data's name (linear)
  # tokens per sentence token (`views.size_rows`) instead of taking the
  # given values
  size_name_rows: bool = False
  size_lin_rows: bool = False
  # linearised subgraphs (budgets.lin_rows > 0): the authors' format
  linear_format: str = "v1"
  # sentences per packing chunk (views.ViewRows; 0 = a view is one chunk):
  # the unit of work the Beam path distributes
  pack_chunk: int = 16384
  # "local" (process pool) or a Beam runner (data_prep.pipelines.beam_build)
  runner: str = "local"
  beam_options: str = ""  # pass-through pipeline options, "k=v,k=v"
  beam_temp: str | None = None  # where Beam workers exchange files

  def __post_init__(self):
    if self.packing_order not in ORDERS:
      raise ValueError(f"packing_order {self.packing_order!r}; expected "
                       f"{ORDERS}")
    if self.pack_chunk < 0:
      raise ValueError(f"pack_chunk must be >= 0, got {self.pack_chunk}")
    if self.runner not in RUNNERS:
      raise ValueError(f"runner {self.runner!r}; expected {RUNNERS}")
    if self.linear_format not in FORMATS:
      raise ValueError(f"linear_format {self.linear_format!r}; expected "
                       f"{FORMATS}")


def make_linearizer(tokenizer, kg, budgets, fmt: str):
  """What sample_view needs for the budgets' masking variants and linear
  rows (None: neither)."""
  if not (budgets.masked_variants or budgets.lin_rows):
    return None
  return Linearizer(tokenizer, kg.display_relations(), fmt,
                    budgets.max_lin_tokens, linear=budgets.lin_rows > 0)


def _tokenize_corpus(documents, kg, tokenizer, linker, o, tmp, bad,
                     beam=None):
  """Streams documents through the workers into per-split JSON lines
  (Beam's workers when `beam`, the build's BeamPacking, is given)."""
  if beam is not None:
    from data_prep.pipelines.beam_build import tokenize_corpus
    return tokenize_corpus(documents, kg, tokenizer, linker, o, tmp, bad,
                           beam.temp)
  files = {s: open(os.path.join(tmp, f"sentences_{s}.jsonl"), "w")
           for s in SPLITS}
  tally = CorpusTally(files)
  args = (kg, tokenizer, linker, o.budgets.seq_len, bad.skip)
  pool = None
  try:
    if o.workers > 1:  # fork: workers share the graph read-only
      pool = multiprocessing.get_context("fork").Pool(
          o.workers, initializer=init_pool_worker, initargs=args)
      results = pool.imap(process_document, documents, chunksize=16)
    else:
      init_worker(*args)
      results = map(process_document, documents)
    for result in tqdm(results, desc="documents", unit="doc"):
      tally.add(result, o, bad)
  finally:
    if pool is not None:
      pool.terminate()
      pool.join()
    for f in files.values():
      f.close()
  return tally.result()


def _write_test_mentions(tmp: str) -> None:
  """test_mentions.jsonl: the test sentences as text + mention spans."""
  with open(os.path.join(tmp, "sentences_test.jsonl")) as src, open(
      os.path.join(tmp, "test_mentions.jsonl"), "w") as dst:
    for line in src:
      s = json.loads(line)
      dst.write(json.dumps({k: s[k] for k in ("doc", "sent", "text",
                                               "mentions")},
                           separators=(",", ":")) + "\n")


def train_row_means(pack: dict) -> dict:
  """Sentences, entities and nodes per train row (mean over the views):
  what converts a batch in sentences to rows."""
  views = [p for k, p in pack.items() if k.startswith("train_view")]
  key = {"sentences": "mean_sentences_per_row",
         "entities": "mean_entities_per_row", "nodes": "mean_nodes_per_row"}
  return {k: float(np.mean([p[v] for p in views])) for k, v in key.items()}


def build_dataset(documents, kg: KnowledgeGraph, tokenizer, out_dir: str,
                  o: BuildOptions, bad: BadRecords,
                  linker: DictionaryLinker | None = None,
                  extra: dict | None = None) -> dict:
  """Builds the dataset; returns the data card dict. Atomic on `out_dir`.

  `out_dir` may be a URL (gs://...): the dataset is built in a local
  temporary directory and uploaded, `bali_dataset.json` last, so a reader
  (who checks for it) never sees a partial dataset."""
  if not storage.is_url(out_dir):
    return _build_local(documents, kg, tokenizer, out_dir, o, bad, linker,
                        extra)
  if storage.exists(out_dir):
    raise FileExistsError(f"{out_dir} exists; choose a new directory")
  with tempfile.TemporaryDirectory(prefix="bali-data-") as tmp:
    local = os.path.join(tmp, "dataset")
    data_card = _build_local(documents, kg, tokenizer, local, o, bad, linker,
                             extra)
    storage.makedirs(out_dir)
    names = sorted(n for n in os.listdir(local) if n != SPEC_FILE)
    for name in names + [SPEC_FILE]:  # the spec last: readers look for it
      src, dst = os.path.join(local, name), storage.join(out_dir, name)
      if os.path.isdir(src):
        storage.copy_tree(src, dst)
      else:
        storage.copy_file(src, dst)
  return data_card


def _build_local(documents, kg, tokenizer, out_dir, o, bad, linker, extra):
  from data_prep.records.tfds_builder import BaliRecords, prepare
  t0 = time.time()
  if kg.heldout is None:  # before the linker and the name sampler see names
    kg.reserve_synonyms(o.heldout_synonyms, o.seed)
  if linker is not None and not linker.built_after_reserve:
    linker = linker.rebuilt(kg)
  out_dir = os.path.abspath(out_dir)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-",
                         dir=parent)
  beam = None
  try:
    if o.runner != "local":
      from data_prep.pipelines import beam_build
      beam = beam_build.BeamPacking(o, beam_build.temp_dir(o, tmp))
    counts, link_stats, docs_seen = _tokenize_corpus(
        documents, kg, tokenizer, linker, o, tmp, bad, beam)
    if counts["train"]["sentences"] == 0:
      raise BadInputError(
          f"empty corpus: {docs_seen} documents read, no sentence with a "
          "linked mention went to the train split")
    names = NameTokens(tokenizer, kg, o.budgets.max_name_tokens)
    lin = make_linearizer(tokenizer, kg, o.budgets, o.linear_format)
    sizing = None
    if o.size_name_rows or (o.size_lin_rows and o.budgets.lin_rows):
      sizing = size_rows(os.path.join(tmp, "sentences_train.jsonl"),
                         kg, names, o.budgets, o.seed, o.packing_order, lin)
      b = o.budgets
      if o.size_name_rows:
        b = dataclasses.replace(b, name_rows=sizing["name_rows"])
        print(f"name rows sized from the data: {sizing['name_rows']} x "
              f"{b.name_len} tokens ("
              f"{sizing['name_tokens_per_sentence_token']:.2f} name tokens "
              f"per sentence token over {sizing['sampled_sentences']} "
              "sentences)")
      if o.size_lin_rows and b.lin_rows:
        b = dataclasses.replace(b, lin_rows=sizing["lin_rows"])
        print(f"linear rows sized from the data: {sizing['lin_rows']} x "
              f"{b.lin_len} tokens ("
              f"{sizing['linear_tokens_per_sentence_token']:.2f} per "
              "sentence token)")
      o = dataclasses.replace(o, budgets=b)
    gens = {}
    for split in SPLITS:
      if counts[split]["sentences"] == 0:
        continue  # tfds cannot write an empty split; the card shows 0
      views = o.views if split == "train" else 1
      g = ViewRows(os.path.join(tmp, f"sentences_{split}.jsonl"), kg, names,
                   o.budgets, o.seed, o.packing_order, o.open_rows, lin,
                   o.pack_chunk)
      for v in range(views):
        name = f"train_view{v}" if split == "train" else split
        gens[name] = (g, v)
    builder = BaliRecords(gens=gens, budgets=o.budgets,
                          data_dir=os.path.join(tmp, "tfds"),
                          file_format=o.file_format, beam=beam)
    prepare(builder)
    if beam is not None:
      beam.collect_stats(gens)
      storage.remove_tree(beam.temp)
    # the tfds dir keeps its layout; move it to the top of the output
    src = os.path.join(tmp, "tfds", DATASET_NAME)
    os.rename(src, os.path.join(tmp, DATASET_NAME))
    shutil.rmtree(os.path.join(tmp, "tfds"))
    pack = {name: g.stats[v].to_dict(o.budgets)
            for name, (g, v) in gens.items()}
    _write_test_mentions(tmp)
    for split in ("validation", "test"):
      os.remove(os.path.join(tmp, f"sentences_{split}.jsonl"))
    save_tokenizer(tokenizer, os.path.join(tmp, "tokenizer"))
    kg.write_tsv(tmp)
    spec = {
        "dataset": DATASET_NAME, "version": str(builder.VERSION),
        "tfds_dir": f"{DATASET_NAME}/{builder.VERSION}",
        "budgets": o.budgets.to_dict(), "views": o.views, "seed": o.seed,
        "packing_order": o.packing_order, "open_rows": o.open_rows,
        "pack_chunk": o.pack_chunk,
        "name_rows_sizing": sizing,
        "linear_format": o.linear_format if o.budgets.lin_rows else None,
        "splits": {k: pack[k]["rows"] for k in pack},
        "train_row_means": train_row_means(pack),
        "vocab_size": len(tokenizer.get_vocab()),
        "num_concepts": len(kg), "num_relations": len(kg.relations),
        "tokenizer_dir": "tokenizer",
        "special_token_ids": sorted(set(tokenizer.all_special_ids)),
        "mask_token_id": tokenizer.mask_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "heldout_synonyms": len(kg.heldout),
        "test_mentions": counts["test"]["mentions"],
    }
    with open(os.path.join(tmp, SPEC_FILE), "w") as f:
      json.dump(spec, f, indent=2)
    data_card = card.make_card(
        kg=kg, counts=counts, docs_seen=docs_seen, pack=pack, bad=bad,
        link=({**link_stats.to_dict(kg),
               "precision_rules": linker.rules_removed()}
              if linker is not None else None),
        options=o, extra={**(extra or {}), "name_rows_sizing": sizing},
        seconds=time.time() - t0)
    card.write_card(tmp, data_card)
    if os.path.exists(out_dir):
      raise FileExistsError(f"{out_dir} appeared while building")
    os.rename(tmp, out_dir)
  except BaseException:
    if beam is not None:
      storage.remove_tree(beam.temp)
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return data_card
