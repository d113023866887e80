"""data_prep on Apache Beam: the same build, distributed.

`--runner direct|dataflow|flink|spark` runs the two heavy stages of
`data_prep.pipelines.build` as Beam pipelines; the graph is read on the
driver and written once as flat arrays (`bali_jax.readers.graph_files`)
that every worker maps instead of unpickling a copy; the rest of a
worker's context (tokenizer, options, linker) is a small pickled file. Workers and the driver exchange files under a shared temporary
directory (`--beam-temp`, a gs:// or other shared path on a cluster; by
default a directory beside the output for DirectRunner).

1. Tokenize and link: the driver streams documents into shards of
   `DOCS_PER_SHARD`; each worker sentence-splits, links and tokenizes a
   shard (`tokenize_worker.process_document`, as the local path does) into
   per-split JSON lines and a `CorpusTally`. The driver concatenates the
   shards in document order, so `sentences_{split}.jsonl` is byte for
   byte the local path's file and every sentence keeps its serial (line
   number), which seeds its samples.
2. Views and packing: the tfds builder (`BaliRecords`) generates each
   split with a Beam transform instead of a Python generator: the chunks
   of a view's packing order (`views.ViewRows.chunks`) are packed on
   workers by the same `ViewRows.pack`; a side input of rows per chunk
   turns each chunk's row numbers into global example ids; tfds's
   `BeamWriter` sorts by that id (shuffling is disabled) and shards.

What comes out: the same records as the local path, in the same example-id
order, with the same split counts. Not byte-identical files: tfds cuts
Beam shards by example-id buckets where the local writer cuts equal
shards, and serialized tf.train.Examples need not order their feature map
the same in two processes; so the guarantee (and the test) is: every
split, read in order, parses to identical arrays, record by record.
"""

from __future__ import annotations

import os
import pickle
import sys
import uuid

import apache_beam as beam

from bali_jax import storage
from bali_jax.records.packing import PackStats

DOCS_PER_SHARD = 256
RUNNER_CLASS = {"direct": "DirectRunner", "dataflow": "DataflowRunner",
                "flink": "FlinkRunner", "spark": "SparkRunner"}


def pipeline_options(o):
  """PipelineOptions for `o.runner` plus `o.beam_options` ("k=v,k=v",
  passed through as --k=v, the way `tfds build --beam_pipeline_options`
  takes them). DirectRunner runs `o.workers` processes when > 1."""
  from apache_beam.options.pipeline_options import PipelineOptions
  args = [f"--runner={RUNNER_CLASS[o.runner]}"]
  if o.runner == "direct" and o.workers > 1:
    args += ["--direct_running_mode=multi_processing",
             f"--direct_num_workers={o.workers}",
             "--default_sdk_harness_log_level=WARNING"]  # quiet workers
  for kv in filter(None, (x.strip() for x in o.beam_options.split(","))):
    args.append(kv if kv.startswith("--") else f"--{kv}")
  return PipelineOptions(args)


def temp_dir(o, tmp: str) -> str:
  """A fresh directory for this build's worker files: in the build's
  local temporary directory, or a new one under `--beam-temp`."""
  if not o.beam_temp:
    path = os.path.join(tmp, "beam-work")
  else:
    path = storage.join(o.beam_temp, f"bali-{uuid.uuid4().hex[:12]}")
  storage.makedirs(path)
  return path


def _importable() -> None:
  """DirectRunner's worker processes import our modules by name: give
  them the directory this package lives in."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))  # data_prep/pipelines/ -> the checkout
  paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
  if root not in paths:
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths
                                                         if p])
  if root not in sys.path:
    sys.path.insert(0, root)


def _dump(path: str, obj) -> None:
  storage.write_bytes(path, pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


def _load(path: str):
  with storage.open_file(path, "rb") as f:
    return pickle.load(f)


def _run(pipeline_fn, o) -> None:
  _importable()
  with beam.Pipeline(options=pipeline_options(o)) as p:
    pipeline_fn(p)


# ------------------------------------------------------- stage 1: sentences
class TokenizeShard(beam.DoFn):
  """One shard of documents -> its per-split sentence files and tally.

  A bad record (when the build does not skip them) is written as the
  shard's error instead of failing the worker, so the driver can raise the
  first one in document order, as the local path would."""

  def __init__(self, temp: str, o, skip_bad: bool):
    self.temp, self.o, self.skip_bad = temp, o, skip_bad

  def setup(self):
    from data_prep.pipelines.tokenize_worker import init_worker
    init_worker(*_load(storage.join(self.temp, "context.pkl")))

  def process(self, shard: int):
    import io
    from data_prep.pipelines.tokenize_worker import (SPLITS, CorpusTally,
                                          process_document)
    from bali_jax.readers.errors import BadInputError, BadRecords
    docs = _load(storage.join(self.temp, "docs", f"{shard:06d}.pkl"))
    files = {s: io.StringIO() for s in SPLITS}
    tally = CorpusTally(files)
    bad = BadRecords(skip=self.skip_bad)
    out = storage.join(self.temp, "sentences")
    try:
      for doc in docs:
        tally.add(process_document(doc), self.o, bad)
    except BadInputError as e:
      storage.write_text(storage.join(out, f"{shard:06d}.error"), str(e))
      return
    for s, f in files.items():  # atomic: a retried bundle rewrites them
      storage.write_text(storage.join(out, f"{shard:06d}-{s}.jsonl"),
                         f.getvalue())
    _dump(storage.join(out, f"{shard:06d}.tally.pkl"), (tally, bad))
    yield shard


def _shard_documents(documents, temp: str) -> int:
  """Streams the documents into pickled shards; returns how many."""
  from tqdm import tqdm
  shards, batch = 0, []
  for doc in tqdm(documents, desc="documents to shards", unit="doc"):
    batch.append(doc)
    if len(batch) == DOCS_PER_SHARD:
      _dump(storage.join(temp, "docs", f"{shards:06d}.pkl"), batch)
      shards, batch = shards + 1, []
  if batch:
    _dump(storage.join(temp, "docs", f"{shards:06d}.pkl"), batch)
    shards += 1
  return shards


def tokenize_corpus(documents, kg, tokenizer, linker, o, tmp, bad,
                    temp: str):
  """Stage 1 (see the module doc); returns what the local loop returns.
  `temp`: the build's worker directory (`temp_dir`)."""
  from data_prep.pipelines.tokenize_worker import SPLITS, CorpusTally
  from bali_jax.readers.errors import BadInputError
  kg.map_to(storage.join(temp, "graph"))  # workers map it, every stage
  _dump(storage.join(temp, "context.pkl"),
        (kg, tokenizer, linker, o.budgets.seq_len, bad.skip))
  shards = _shard_documents(documents, temp)
  print(f"tokenizing {shards} shards of up to {DOCS_PER_SHARD} documents "
        f"on Beam ({RUNNER_CLASS[o.runner]})")
  _run(lambda p: (p | "Shards" >> beam.Create(range(shards))
                  | "Spread" >> beam.Reshuffle()
                  | "Tokenize" >> beam.ParDo(TokenizeShard(temp, o,
                                                           bad.skip))), o)
  out = storage.join(temp, "sentences")
  for shard in range(shards):  # the first bad record in document order
    err = storage.join(out, f"{shard:06d}.error")
    if storage.exists(err):
      raise BadInputError(storage.read_text(err))
  total = CorpusTally()
  files = {s: open(os.path.join(tmp, f"sentences_{s}.jsonl"), "w")
           for s in SPLITS}
  try:
    for shard in range(shards):  # document order: serials as the local path
      tally, shard_bad = _load(storage.join(out, f"{shard:06d}.tally.pkl"))
      total.merge(tally)
      bad.merge(shard_bad)
      for s in SPLITS:
        files[s].write(storage.read_text(storage.join(
            out, f"{shard:06d}-{s}.jsonl")))
  finally:
    for f in files.values():
      f.close()
  return total.result()


# ------------------------------------------------- stage 2: views, packing
class PackChunk(beam.DoFn):
  """One chunk of a view's packing order -> its records one by one, keyed
  (chunk, row in chunk), and the chunk's row count on the "sizes" output;
  writes the chunk's PackStats for the driver. One element per record: a
  chunk's records as one element were 0.6-0.8 GB at UMLS size, which the
  runner buffers whole."""

  def __init__(self, ctx: str, view: int, stats: str):
    self.ctx, self.view, self.stats = ctx, view, stats

  def setup(self):
    self.gen = _load(self.ctx)
    self.chunks = self.gen.chunks(self.view)  # the view's order, once

  def process(self, c: int):
    stats = PackStats()
    n = 0
    for n, rec in enumerate(self.gen.pack(self.view, self.chunks[c], stats),
                            1):
      yield (c, n - 1), rec
    _dump(f"{self.stats}-{c:06d}.pkl", stats)
    yield beam.pvalue.TaggedOutput("sizes", (c, n))


def _number(keyed, sizes: dict):
  """Chunk c's row i gets the example id after all rows of chunks < c."""
  (c, i), rec = keyed
  first = sum(n for k, n in sizes.items() if k < c)
  rec["example_id"][...] = first + i
  return first + i, rec


@beam.ptransform_fn
def _pack_view(begin, ctx: str, view: int, chunks: int, stats: str):
  packed = (begin | "Chunks" >> beam.Create(range(chunks))
            | "Spread" >> beam.Reshuffle()
            | "Pack" >> beam.ParDo(PackChunk(ctx, view, stats)).with_outputs(
                "sizes", main="rows"))
  sizes = packed.sizes | "RowsPerChunk" >> beam.combiners.ToDict()
  return packed.rows | "Number" >> beam.Map(
      _number, sizes=beam.pvalue.AsSingleton(sizes))


class BeamPacking:
  """What `BaliRecords` needs to generate its splits with Beam (stage 2)."""

  def __init__(self, o, temp: str):
    self.o = o  # runner, workers, beam_options
    self.temp = temp  # the build's worker directory (`temp_dir`)
    self._chunks: dict = {}  # split name -> number of chunks
    self._ctx: dict = {}  # id(ViewRows) -> its pickled file (views share)

  def options(self):
    _importable()
    return pipeline_options(self.o)

  def _stats(self, name: str) -> str:
    return storage.join(self.temp, "stats", name)

  def transform(self, name: str, gen, view: int):
    """The PTransform (pipeline begin -> (example id, record)) of one
    split: its view's chunks packed on workers, numbered in chunk order."""
    ctx = self._ctx.get(id(gen))
    if ctx is None:  # once per sentence file: the train views share it
      base = os.path.basename(gen.sentences.path)
      if storage.is_url(self.temp):  # workers read the sentences there
        remote = storage.join(self.temp, base)
        storage.copy_file(gen.sentences.path, remote)
        gen.sentences.path = remote
      ctx = self._ctx[id(gen)] = storage.join(self.temp, f"{base}.views.pkl")
      _dump(ctx, gen)
    self._chunks[name] = len(gen.chunks(view))
    return _pack_view(ctx, view, self._chunks[name], self._stats(name))  # pylint: disable=no-value-for-parameter

  def collect_stats(self, gens: dict) -> None:
    """After the pipeline: each split's PackStats, merged in chunk order
    (what the local generator leaves in `gen.stats[view]`)."""
    for name, (gen, view) in gens.items():
      stats = PackStats()
      for c in range(self._chunks[name]):
        stats.merge(_load(f"{self._stats(name)}-{c:06d}.pkl"))
      gen.stats[view] = stats

