"""The per-document work of a build, shared by the local loop
(data_prep/pipelines/build.py, in a process pool) and Beam's workers
(data_prep/pipelines/beam_build.py): split sentences, link them when the corpus
has no mentions, tokenize; and the per-split tally both keep. Neither
pipeline imports the other for it."""

from __future__ import annotations

import hashlib
import json
import signal

from bali_jax.readers.corpus import split_sentences
from bali_jax.readers.errors import BadRecords
from bali_jax.records.examples import tokenize_document
from data_prep.linking.linker import LinkStats


def split_of(doc_id: str, o) -> str:
  """The split of a document: a hash of its id against the options'
  validation and test percentages (stable across runs and runners)."""
  h = int(hashlib.md5(doc_id.encode()).hexdigest(), 16) % 100
  if h < o.validation_percent:
    return "validation"
  if h < o.validation_percent + o.test_percent:
    return "test"
  return "train"


# --------------------------------------------------------------- workers
_W: dict = {}


def init_pool_worker(*args):
  """`init_worker` in a forked pool worker. A forked worker inherits its
  parent's Python SIGTERM handler (an in-process training run's, in a
  notebook or the tests), and `Pool.terminate()` must stop it: SIGTERM
  takes its default action here."""
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  init_worker(*args)


def init_worker(kg, tokenizer, linker, seq_len, skip_bad):
  _W.update(kg=kg, tokenizer=tokenizer, linker=linker, seq_len=seq_len,
            skip_bad=skip_bad)


def process_document(doc):
  """Document -> (doc id, tokenized sentences, bad counts, link stats)."""
  bad = BadRecords(skip=_W["skip_bad"])
  linker = _W["linker"]
  stats = LinkStats()
  if doc.mentions is None:
    linker.stats = stats
  sentences = split_sentences(doc)
  if doc.mentions is None:
    for s in sentences:
      s.mentions = linker.link(s.text)
  sentences = [s for s in sentences if s.mentions]
  out = tokenize_document(sentences, _W["tokenizer"], _W["kg"],
                          _W["seq_len"], bad)
  return doc.doc_id, out, bad, stats


SPLITS = ("train", "validation", "test")


class CorpusTally:
  """Per-split counts, concepts and link statistics of tokenized documents,
  and the sentences written to per-split JSON lines: what the local loop
  and each Beam shard keep, merged in document order."""

  def __init__(self, files: dict | None = None):
    self.files = files  # split -> writable text file (None: count only)
    self.counts = {s: {"documents": 0, "sentences": 0, "mentions": 0,
                       "entities": 0, "token_links": 0} for s in SPLITS}
    self.concepts = {s: set() for s in SPLITS}
    self.link_stats = LinkStats()
    self.docs_seen = 0

  def add(self, result, o, bad: BadRecords) -> None:
    """One `process_document` result: counts it and writes its sentences."""
    doc_id, sents, doc_bad, stats = result
    self.docs_seen += 1
    bad.merge(doc_bad)
    self.link_stats.merge(stats)
    if not sents:
      return
    split = split_of(doc_id, o)
    c = self.counts[split]
    c["documents"] += 1
    c["sentences"] += len(sents)
    for s in sents:
      c["mentions"] += len(s["mentions"])
      c["entities"] += len(s["concepts"])
      c["token_links"] += len(s["links"])
      self.concepts[split].update(s["concepts"])
      self.files[split].write(json.dumps(s, separators=(",", ":")) + "\n")

  def merge(self, o: "CorpusTally") -> None:
    for split in SPLITS:
      for k, v in o.counts[split].items():
        self.counts[split][k] += v
      self.concepts[split] |= o.concepts[split]
    self.link_stats.merge(o.link_stats)
    self.docs_seen += o.docs_seen

  def result(self):
    """(counts with distinct concepts, link stats, documents read)."""
    for split, c in self.concepts.items():
      self.counts[split]["distinct_concepts"] = len(c)
    return self.counts, self.link_stats, self.docs_seen

  def __getstate__(self):  # a shard's tally travels without its files
    return {**self.__dict__, "files": None}
