"""Views: every sentence with freshly sampled subgraphs and names, packed.

A *view* of a split is one pass over all its tokenized sentences in which
each sentence gets its own neighbour and synonym sample (method spec 1.4:
the authors draw afresh every time a sentence is read); epoch e of a run
reads view e, so no sample is reused unless a run asks for it.

Packing order: sentences are packed in a seeded random permutation per
view (`order="shuffled"`, the default), the way the authors' loader
shuffles individual sentences, so the sentences of one row (and one batch)
come from unrelated documents about as often as chance says.
`order="document"` keeps file order (consecutive sentences of one abstract
share a row): kept for the ablation only. The permutation is over the whole
split through an index of line offsets into the sentence file, so memory is
one integer per sentence, not the sentences.

The sample of sentence `serial` in view v depends only on (seed, serial,
v), whatever the packing order (`examples.sample_view`: fresh in every
view, without replacement across views), so views are reproducible,
independent of worker count, and a view added later (`add-views`) is
record for record the same view as one built at once.

Packing runs over chunks of a view's order (`ViewRows`), so the rows of a
chunk depend only on its sentences: the local and the Beam path pack the
same chunks and write the same records.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from bali_jax import storage
from bali_jax.records.examples import sample_view
from bali_jax.records.packing import PackStats, RowPacker

ORDERS = ("shuffled", "document")


class SentenceFile:
  """A JSON-lines file of tokenized sentences, read in any order."""

  def __init__(self, path: str):
    self.path = path
    offsets, pos = [], 0
    with open(path, "rb") as f:
      for line in f:
        offsets.append(pos)
        pos += len(line)
    self.offsets = np.asarray(offsets, np.int64)

  def __len__(self) -> int:
    return len(self.offsets)

  def read(self, order: np.ndarray):
    """Yields (serial, sentence dict) in `order` (serials = line numbers)."""
    with storage.open_file(self.path, "rb") as f:  # a URL on a Beam cluster
      for serial in order:
        f.seek(int(self.offsets[serial]))
        yield int(serial), json.loads(f.readline())


def packing_order(n: int, seed: int, view: int, order: str) -> np.ndarray:
  if order == "document":
    return np.arange(n)
  if order != "shuffled":
    raise ValueError(f"packing order {order!r}; expected {ORDERS}")
  return np.random.default_rng([seed, view, 0x5EED]).permutation(n)


def doc_code(doc_id: str) -> int:
  """A document's integer code for the packing statistics (same document
  or not), the same in every chunk and process."""
  return int(hashlib.md5(doc_id.encode()).hexdigest()[:15], 16)


class ViewRows:
  """Generator factory: `gen(view)` yields (example id, record) rows of one
  split; after a view is exhausted, `gen.stats[view]` holds its PackStats.

  A view's packing order is cut into chunks of `chunk` sentences (0: one
  chunk), each packed by a fresh packer whose open rows are emitted at the
  chunk's end. Chunks are independent, so the Beam path
  (`data_prep.pipelines.beam_build`) packs them on different workers and
  gets the same rows; example ids number the rows in chunk order. A split
  smaller than one chunk packs exactly as an unchunked packer would.
  `open_rows` is the packer's window (1 = plain greedy, older datasets);
  `linearizer` (bali_jax.records.linearize) adds the masking variants and linear
  rows the budgets ask for."""

  def __init__(self, path: str, kg, names, budgets, seed: int, order: str,
               open_rows: int = 1, linearizer=None, chunk: int = 0):
    self.sentences = SentenceFile(path)
    self.kg, self.names, self.budgets = kg, names, budgets
    self.seed, self.order, self.open_rows = seed, order, open_rows
    self.linearizer, self.chunk = linearizer, chunk
    self.stats: dict = {}

  def max_rows(self) -> int:
    """An upper bound on a view's rows: every row holds a sentence."""
    return max(1, len(self.sentences))

  def chunks(self, view: int) -> list[np.ndarray]:
    """The serials of each chunk of `view`, in packing order."""
    perm = packing_order(len(self.sentences), self.seed, view, self.order)
    if not self.chunk:
      return [perm]
    return [perm[i:i + self.chunk] for i in range(0, len(perm), self.chunk)]

  def pack(self, view: int, serials, stats: PackStats):
    """Yields the records of one chunk (example ids unset); adds the
    chunk's statistics to `stats` at the end."""
    packer = RowPacker(self.budgets, self.open_rows)
    for serial, s in self.sentences.read(serials):
      v = sample_view(s, self.kg, self.names, self.budgets.max_neighbors,
                      self.seed, view, serial, self.linearizer)
      yield from packer.add(v, doc_code(s["doc"]))
    yield from packer.finish()
    stats.merge(packer.stats)

  def __call__(self, view: int):
    stats = PackStats()
    rows = 0
    for serials in self.chunks(view):
      for rec in self.pack(view, serials, stats):
        rec["example_id"][...] = rows
        rows += 1
        yield rows - 1, rec
    self.stats[view] = stats


def size_rows(path: str, kg, names, budgets, seed: int, order: str,
              linearizer=None, sample: int = 2000) -> dict:
  """Name (and linear) rows for this data: enough name tokens per row for
  the concept names that a full row of sentence tokens brings, measured on
  the first `sample` sentences of view 0 (slots as the packer reserves
  them); the same for linearised subgraphs. Sized so the sentence and name
  budgets bind about equally often; a fixed guess wastes one or the other
  (6 x 64 name slots left 64% of name tokens as padding on the open
  default)."""
  from bali_jax.records.packing import lin_sizes, name_sizes
  sentences = SentenceFile(path)
  order_ = packing_order(len(sentences), seed, 0, order)[:sample]
  tok = name_tok = lin_tok = 0
  for serial, s in sentences.read(order_):
    v = sample_view(s, kg, names, budgets.max_neighbors, seed, 0, serial,
                    linearizer)
    tok += len(v.ids)
    name_tok += sum(name_sizes(v))
    lin_tok += sum(lin_sizes(v))
  ratio = name_tok / max(tok, 1)
  rows = max(1, math.ceil(ratio * budgets.seq_len / budgets.name_len))
  out = {"name_rows": rows, "name_tokens_per_sentence_token": ratio,
         "sampled_sentences": len(order_)}
  if linearizer is not None and linearizer.linear:
    lratio = lin_tok / max(tok, 1)
    out.update(lin_rows=max(1, math.ceil(lratio * budgets.seq_len
                                         / budgets.lin_len)),
               linear_tokens_per_sentence_token=lratio)
  return out
