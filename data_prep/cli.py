"""Command line of data_prep (stable: users script it).

  python -m data_prep open-default --out DIR [--max-documents N]
  python -m data_prep umls --mrconso MRCONSO.RRF --mrrel MRREL.RRF \
      --corpus FILE --corpus-format bern2|pubtator --out DIR
  python -m data_prep kg --ontology FILE.obo|FILE.json [--ontology ...] \
      [--edges TSV] --corpus FILE|DIR \
      --corpus-format pubmed-xml|text|pubtator|bern2 --out DIR
  python -m data_prep add-views --data DIR --views N
  python -m data_prep synth --concepts N --documents M --out DIR \
      [--seed S] [--format pubtator|bern2]

Common options: --tokenizer (HF dir or `starter`), --views, --seed,
--budgets default|tiny, --workers, --on-bad-record error|skip,
--packing-order shuffled|document, --runner local|direct|dataflow|flink|spark
(Apache Beam; --beam-options k=v,... --beam-temp DIR), --pack-chunk N.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from bali_jax import storage

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _options(args):
  from bali_jax.features import Budgets, tiny_budgets
  from data_prep.pipelines.build import BuildOptions
  budgets = tiny_budgets() if args.budgets == "tiny" else Budgets()
  if args.name_rows != "auto":
    budgets = dataclasses.replace(budgets, name_rows=int(args.name_rows))
  if args.no_linear:
    budgets = dataclasses.replace(budgets, lin_rows=0)
  elif args.lin_rows != "auto":
    budgets = dataclasses.replace(budgets, lin_rows=int(args.lin_rows))
  budgets = dataclasses.replace(
      budgets, lin_len=args.lin_len or budgets.lin_len,
      max_lin_tokens=args.lin_len or budgets.max_lin_tokens)
  return BuildOptions(budgets=budgets, open_rows=args.open_rows,
                      size_name_rows=args.name_rows == "auto",
                      size_lin_rows=args.lin_rows == "auto",
                      linear_format=args.linear_format,
                      views=args.views, seed=args.seed,
                      validation_percent=args.validation_percent,
                      test_percent=args.test_percent, workers=args.workers,
                      file_format=args.file_format,
                      heldout_synonyms=args.heldout_synonyms,
                      packing_order=args.packing_order,
                      pack_chunk=args.pack_chunk, runner=args.runner,
                      beam_options=args.beam_options,
                      beam_temp=args.beam_temp)


def _tokenizer(name):
  from bali_jax.open_data import resolve_model_dir
  from bali_jax.hf.tokenizer import load_tokenizer
  return load_tokenizer(resolve_model_dir(name))


def _relation_names(args, kg, required: bool = False) -> None:
  """Readable relation names for the linearised rows (spec 1.5)."""
  from bali_jax.readers.errors import BadInputError
  if args.relation_names:
    kg.name_relations(args.relation_names)
  elif required and not args.no_linear and kg.relations:
    raise BadInputError(
        "UMLS relations are REL/RELA codes ("
        f"{', '.join(kg.relations[:8])}{' ...' if len(kg.relations) > 8 else ''}"
        "): the linearised subgraphs write a readable name for each; give "
        "--relation-names FILE (code<TAB>name lines, the authors' "
        "rela2rela_name file), or --no-linear to build without linear rows")


def _preamble(args):
  """What every build command does first: refuse an existing --out
  (nothing is read before), and the bad-record policy."""
  from bali_jax.readers.errors import BadRecords
  if storage.exists(args.out):
    raise FileExistsError(f"--out {args.out} exists; choose a new directory")
  return BadRecords(skip=args.on_bad_record == "skip")


def _hold_out(args, kg) -> None:
  """Reserves the held-out synonyms (evaluation only) and says so."""
  held = kg.reserve_synonyms(args.heldout_synonyms, args.seed)
  print(f"graph: {len(kg):,} concepts, {kg.num_edges():,} edges; "
        f"{held:,} synonyms held out for evaluation")


def _build(args, docs, kg, bad, **kw) -> int:
  """Builds the dataset at --out and prints its card."""
  from data_prep.pipelines.build import build_dataset
  from data_prep.records.card import to_markdown
  card = build_dataset(docs, kg, _tokenizer(args.tokenizer), args.out,
                       _options(args), bad, **kw)
  print(to_markdown(card))
  print(f"dataset written to {storage.display(args.out)}")
  return 0


def cmd_open_default(args) -> int:
  from bali_jax import open_data
  from bali_jax.readers import sources
  from data_prep.linking.linker import DictionaryLinker
  bad = _preamble(args)
  print("reading MONDO + HPO ...")
  kg = sources.open_default_graph(bad, extra_ontologies=args.with_ontology)
  files = open_data.pubmed_files()
  kg.sources += sources.pubmed_sources(files)
  _hold_out(args, kg)
  _relation_names(args, kg)
  linker = DictionaryLinker(kg)
  stats: dict = {}
  docs = sources.pubmed_documents(bad, args.max_documents, stats, files)
  return _build(args, docs, kg, bad, linker=linker, extra={"pubmed": stats})


def cmd_umls(args) -> int:
  from bali_jax.readers import sources
  bad = _preamble(args)
  kg, docs, n_mentioned = sources.umls_graph_and_corpus(
      args.mrconso, args.mrrel, args.corpus, args.corpus_format, bad,
      args.max_documents)
  _relation_names(args, kg, required=True)
  return _build(args, docs, kg, bad,
                extra={"mentioned_concepts": n_mentioned})


def cmd_kg(args) -> int:
  from bali_jax.readers.kg import Source
  from data_prep.linking.linker import DictionaryLinker
  from data_prep.readers.user_data import user_documents, user_graph
  bad = _preamble(args)
  kg = user_graph(args.ontology, args.edges, bad)
  if not len(kg):
    raise FileNotFoundError("the ontologies hold no concept")
  _hold_out(args, kg)
  _relation_names(args, kg)
  kg.sources.append(Source(f"corpus ({args.corpus_format})", "user-supplied",
                           "user-supplied", args.corpus))
  raw = args.corpus_format in ("pubmed-xml", "text")
  stats: dict = {}
  docs = user_documents(args.corpus, args.corpus_format, bad, stats)
  if args.max_documents:
    import itertools
    docs = itertools.islice(docs, args.max_documents)
  return _build(args, docs, kg, bad,
                linker=DictionaryLinker(kg) if raw else None,
                extra={"corpus_reader": stats}
                if args.corpus_format == "pubmed-xml" else {})


def cmd_add_views(args) -> int:
  from data_prep.pipelines.add_views import add_views
  spec = add_views(args.data, args.views)
  rows = [spec["splits"][f"train_view{v}"] for v in range(spec["views"])]
  print(f"{args.data}: {spec['views']} train views, rows per view {rows}")
  return 0


def _common(p):
  p.add_argument("--out", required=True, help="output dataset directory")
  p.add_argument("--tokenizer", default="starter",
                 help="HF model dir whose tokenizer to use, or `starter`")
  p.add_argument("--max-documents", type=int, default=None,
                 help="read at most N documents (quick builds, tests)")
  p.add_argument("--views", type=int, default=2,
                 help="sampled views of the train split: epoch e of a run "
                 "reads view e, so plan one per epoch (more can be added "
                 "later with `add-views`)")
  p.add_argument("--packing-order", choices=("shuffled", "document"),
                 default="shuffled",
                 help="order sentences are packed into rows: a seeded "
                 "random order per view (default, as the authors shuffle "
                 "sentences) or file order (ablation only)")
  p.add_argument("--seed", type=int, default=29)
  p.add_argument("--budgets", choices=("default", "tiny"), default="default")
  p.add_argument("--name-rows", default="auto",
                 help="concept-name rows per record: `auto` (default) sizes "
                 "them from the data's name tokens per sentence token, so "
                 "neither budget is mostly padding; or a number")
  p.add_argument("--lin-rows", default="auto",
                 help="linearised-subgraph rows per record (the `linear` "
                 "graph encoder's input): `auto` (default) sizes them from "
                 "the data, or a number")
  p.add_argument("--lin-len", type=int, default=0,
                 help="tokens per linearised-subgraph row and the cut of one "
                 "subgraph (default 128, the authors' lin_graph_max_length)")
  p.add_argument("--linear-format", choices=("v1", "v2"), default="v1",
                 help="the authors' linearisation formats (default v1)")
  p.add_argument("--no-linear", action="store_true",
                 help="leave the linearised subgraphs out (smaller records; "
                 "only the gat/sage graph encoders can train on them)")
  p.add_argument("--relation-names", default=None,
                 help="TSV of relation<TAB>readable name for the linearised "
                 "subgraphs; required for UMLS (RELA codes), optional "
                 "elsewhere (default: the relation with _ as spaces)")
  p.add_argument("--open-rows", type=int, default=8,
                 help="rows the packer keeps open: each sentence goes to the "
                 "first with room, the fullest is emitted when none has "
                 "(default 8; 1 = plain greedy)")
  p.add_argument("--validation-percent", type=int, default=5)
  p.add_argument("--test-percent", type=int, default=5)
  p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
  p.add_argument("--on-bad-record", choices=("error", "skip"),
                 default="error")
  p.add_argument("--file-format", choices=("tfrecord", "array_record"),
                 default="tfrecord")
  p.add_argument("--runner", default="local",
                 choices=("local", "direct", "dataflow", "flink", "spark"),
                 help="local: this machine's process pool (default, fastest "
                 "on small inputs); or an Apache Beam runner: tokenizing, "
                 "views and packing run as Beam pipelines (direct uses "
                 "--workers processes) and write the same records")
  p.add_argument("--beam-options", default="",
                 help="Beam pipeline options passed through, "
                 "comma-separated key=value (e.g. project=P,region=R,"
                 "temp_location=gs://B/tmp,sdk_container_image=IMAGE)")
  p.add_argument("--beam-temp", default=None,
                 help="directory every Beam worker can read and write "
                 "(gs://... on a cluster; default: beside the output)")
  p.add_argument("--pack-chunk", type=int, default=16384,
                 help="sentences per packing chunk: each chunk of a view's "
                 "order is packed on its own (the unit Beam distributes); "
                 "0 packs a view as one chunk")
  p.add_argument("--heldout-synonyms", type=float, default=0.1,
                 help="fraction of synonyms reserved (seeded, at most one "
                 "per concept) as zero-shot evaluation queries; they never "
                 "reach the records or the linker (default 0.1)")


def cmd_synth(args) -> int:
  from data_prep import synth
  return synth.main_args(args)


def build_parser():
  p = argparse.ArgumentParser(prog="python -m data_prep",
                              description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  o = sub.add_parser("open-default", help="MONDO + HPO + PubMed (from PyPI)")
  _common(o)
  o.add_argument("--with-ontology", action="append", default=[],
                 choices=("UBERON", "CL"),
                 help="also add this cellxgene ontology (repeatable)")
  o.set_defaults(func=cmd_open_default)
  u = sub.add_parser("umls", help="UMLS RRF + an annotated corpus")
  u.add_argument("--mrconso", required=True)
  u.add_argument("--mrrel", required=True)
  u.add_argument("--corpus", required=True)
  u.add_argument("--corpus-format", choices=("bern2", "pubtator"),
                 required=True)
  _common(u)
  u.set_defaults(func=cmd_umls)
  k = sub.add_parser("kg", help="your own ontologies (OBO / OBO-graph "
                     "JSON) + edges + a raw or pre-linked corpus")
  k.add_argument("--ontology", action="append", required=True,
                 help=".obo or OBO-graph .json (optionally .gz); repeatable")
  k.add_argument("--edges", action="append", default=[],
                 help="extra head<TAB>relation<TAB>tail edges; repeatable")
  k.add_argument("--corpus", required=True, help="a file or a directory")
  k.add_argument("--corpus-format", required=True,
                 choices=("pubmed-xml", "text", "pubtator", "bern2"),
                 help="pubmed-xml and text are linked by the dictionary "
                 "linker; pubtator and bern2 carry their own links")
  _common(k)
  k.set_defaults(func=cmd_kg)
  a = sub.add_parser("add-views", help="sample more train views of a built "
                     "dataset (no source is re-read)")
  a.add_argument("--data", required=True, help="a built dataset directory")
  a.add_argument("--views", type=int, required=True,
                 help="views wanted in all (more than it has)")
  a.set_defaults(func=cmd_add_views)
  y = sub.add_parser("synth", help="a synthetic UMLS-shaped MRCONSO/MRREL "
                     "and an annotated corpus (scale tests without UMLS)")
  y.add_argument("--concepts", type=int, required=True)
  y.add_argument("--documents", type=int, required=True)
  y.add_argument("--out", required=True, help="a new directory")
  y.add_argument("--seed", type=int, default=0)
  y.add_argument("--format", choices=("pubtator", "bern2"),
                 default="pubtator", help="the corpus format")
  y.set_defaults(func=cmd_synth)
  return p


def main(argv=None) -> int:
  from bali_jax.readers.errors import BadInputError
  parser = build_parser()
  args = parser.parse_args(argv)
  if getattr(args, "runner", "local") not in ("local", "direct") and \
      not args.beam_temp:
    parser.error(f"--runner {args.runner} needs --beam-temp: a directory "
                 "every Beam worker and this driver can read and write "
                 "(e.g. gs://BUCKET/tmp)")
  try:
    return args.func(args)
  except (BadInputError, FileExistsError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
