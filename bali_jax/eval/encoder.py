"""Encoding names and in-sentence mentions with a BERT, fast and fixed-shape.

Everything to encode is an *item*: a token sequence ([CLS] ... [SEP]) and one
or more *outputs*, each a set of token positions whose last-layer states are
averaged. A concept name or a query string is one item with one output (its
tokens pooled as training pools concept names: `mean` over every token incl.
[CLS]/[SEP], `mean1` without [CLS], or `cls`); a sentence is one item with
one output per mention (the mention's subtokens, as training pools
mentions: a subtoken belongs to a mention when its character span lies
inside the mention's).

Items are packed several per row like training rows (segment ids keep them
apart: attention stays inside an item and positions restart), longest
first, into a fixed (rows, row_len) batch with fixed link and output slots:
one compilation for names (in rows of 2 x max_name_tokens) and one for
sentences, whatever the number of calls, batches sharded over all local
devices.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

from bali_jax.model.bert import BertModel
from bali_jax.model.pooling import mention_pool

# inputs (strings or sentences) tokenized, packed and encoded at once
ENCODE_CHUNK = 32_768


@dataclasses.dataclass
class Item:
  ids: list[int]
  outputs: list[list[int]]  # token positions (within ids) per output


@dataclasses.dataclass(frozen=True)
class PackShape:
  rows_per_device: int = 8
  row_len: int = 128
  max_outputs: int = 48  # outputs (names / mentions) per row
  max_links: int = 256  # (token, output) pairs per row


def pack(items: list[Item], shape: PackShape):
  """Packs items into rows; returns (rows, where) with `rows` a dict of
  (R, ...) arrays and `where[k]` = (row, slot) of the k-th output overall
  (items in order, outputs in order)."""
  order = sorted(range(len(items)), key=lambda i: -len(items[i].ids))
  rows = []  # [ids, seg, links (tok, slot), n_outputs]
  cur = None
  place = {}
  for i in order:
    it = items[i]
    n_links = sum(len(o) for o in it.outputs)
    if len(it.ids) > shape.row_len or len(it.outputs) > shape.max_outputs \
        or n_links > shape.max_links:
      raise ValueError(f"item {i} does not fit an empty row ({len(it.ids)} "
                       f"tokens, {len(it.outputs)} outputs, {n_links} "
                       f"links; row {shape})")
    if cur is None or (len(cur[0]) + len(it.ids) > shape.row_len
                       or cur[3] + len(it.outputs) > shape.max_outputs
                       or len(cur[2]) + n_links > shape.max_links):
      cur = [[], [], [], 0, 0]
      rows.append(cur)
    t0 = len(cur[0])
    cur[4] += 1
    cur[0].extend(it.ids)
    cur[1].extend([cur[4]] * len(it.ids))
    slots = []
    for o in it.outputs:
      slot = cur[3]
      cur[3] += 1
      cur[2].extend((t0 + t, slot) for t in o)
      slots.append((len(rows) - 1, slot))
    place[i] = slots
  n = len(rows)
  out = {"ids": np.zeros((n, shape.row_len), np.int32),
         "seg": np.zeros((n, shape.row_len), np.int32),
         "tok": np.zeros((n, shape.max_links), np.int32),
         "slot": np.zeros((n, shape.max_links), np.int32),
         "mask": np.zeros((n, shape.max_links), np.int32)}
  for r, (ids, seg, links, _, _) in enumerate(rows):
    out["ids"][r, :len(ids)] = ids
    out["seg"][r, :len(seg)] = seg
    if links:
      tok, slot = zip(*links)
      out["tok"][r, :len(tok)] = tok
      out["slot"][r, :len(slot)] = slot
      out["mask"][r, :len(tok)] = 1
  where = [p for i in range(len(items)) for p in place[i]]
  return out, where


def name_shape(shape: PackShape, max_name_tokens: int) -> PackShape:
  """Names are short (at most `max_name_tokens`), so they pack into rows
  of twice that length (rounded up to 16), with as many more rows as keep
  a batch's tokens: every row's attention is then 4x smaller than in a
  sentence-length row, for the same matrix products (measured 789 against
  707 names/s, starter MiniLM, 10,000 open-default names, 2-core CPU)."""
  row_len = min(shape.row_len, max(16, -(-2 * max_name_tokens // 16) * 16))
  return dataclasses.replace(
      shape, row_len=row_len,
      rows_per_device=max(1, shape.rows_per_device * shape.row_len
                          // row_len))


def _pool_positions(n_tokens: int, mode: str) -> list[int]:
  if mode == "mean":
    return list(range(n_tokens))
  if mode == "mean1":
    return list(range(1, n_tokens)) or [0]
  if mode == "cls":
    return [0]
  raise ValueError(f"pooling {mode!r}; expected mean, mean1 or cls")


class Encoder:
  """A BERT turned into an L2-normalised string / mention encoder.

  Args:
    config: BertConfig of the model.
    params: its "bert" parameter tree (host arrays are fine).
    tokenizer: its HF tokenizer.
    pooling: how names and query strings pool (`mean`, `mean1`, `cls`).
    max_name_tokens: names are cut to this many tokens incl. specials
      (training's budget, 32 by default as the authors).
    seq_len: sentences are cut to this many tokens (training's, 128).
  """

  def __init__(self, config, params, tokenizer, *, pooling: str = "mean",
               max_name_tokens: int = 32, seq_len: int = 128,
               shape: PackShape = PackShape(), progress: bool = True):
    self.tokenizer, self.pooling = tokenizer, pooling
    self.max_name_tokens, self.seq_len = max_name_tokens, seq_len
    self.shape, self.progress = shape, progress
    _pool_positions(1, pooling)  # validates
    devices = np.asarray(jax.local_devices())
    self.mesh = Mesh(devices, ("data",))
    # names in their own, shorter rows: a second compiled shape
    self.name_shape = name_shape(shape, max_name_tokens)
    row = NamedSharding(self.mesh, P("data"))
    self._replicated = NamedSharding(self.mesh, P())
    self.set_params(params)
    model = BertModel(config, add_pooler="pooler" in params)
    max_out = shape.max_outputs

    def encode_rows(p, ids, seg, tok, slot, mask):
      h = model.apply({"params": p}, ids, segment_ids=seg)[
          "last_hidden_state"]  # (R, L, D)
      v = mention_pool(h, tok, slot, mask, max_out)  # (R, S, D) f32
      return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True),
                             1e-12)

    self._fn = jax.jit(encode_rows, in_shardings=(None,) + (row,) * 5,
                       out_shardings=row)
    self.dim = config.hidden_size

  def set_params(self, params) -> None:
    """New weights of the same model (no recompilation)."""
    self.params = jax.device_put(params, self._replicated)

  def rows_per_call(self, shape: PackShape) -> int:
    """Rows of one jitted call in `shape`: every local device's."""
    return shape.rows_per_device * self.mesh.size

  def _run(self, items: list[Item], shape: PackShape) -> np.ndarray:
    """(number of outputs, D) float32 unit vectors, in item order (items:
    one chunk, never empty)."""
    rows, where = pack(items, shape)
    n = len(rows["ids"])
    per_call = self.rows_per_call(shape)
    pooled = np.zeros((n, shape.max_outputs, self.dim), np.float32)
    for s in range(0, n, per_call):
      chunk = {k: v[s:s + per_call] for k, v in rows.items()}
      got = len(chunk["ids"])
      if got < per_call:  # last batch: pad with empty rows, same shape
        chunk = {k: np.concatenate([v, np.zeros((per_call - got,)
                                                + v.shape[1:], v.dtype)])
                 for k, v in chunk.items()}
      out = self._fn(self.params, chunk["ids"], chunk["seg"], chunk["tok"],
                     chunk["slot"], chunk["mask"])
      pooled[s:s + got] = np.asarray(out)[:got]
    r, c = np.asarray(where).T
    return pooled[r, c]

  def _chunked(self, n: int, make_items, desc: str,
               shape: PackShape) -> np.ndarray:
    """Encodes n inputs ENCODE_CHUNK at a time (`make_items(lo, hi)` ->
    the items of inputs [lo, hi)), under one progress bar in inputs.

    Why: tokenized items, their packed rows and the pooled (rows, slots,
    D) outputs cost about 10 kB an input; a million queries or a
    dictionary shard encoded at once took a process to 11.9 GB. Chunks
    bound that whatever the caller hands in; only the (n, D) result
    grows with n.
    """
    parts = [np.zeros((0, self.dim), np.float32)]
    with tqdm(total=n, desc=desc, unit=" in", disable=not self.progress,
              leave=False, mininterval=2.0) as bar:
      for lo in range(0, n, ENCODE_CHUNK):
        hi = min(lo + ENCODE_CHUNK, n)
        parts.append(self._run(make_items(lo, hi), shape))
        bar.update(hi - lo)
    return np.concatenate(parts)

  def name_items(self, strings: list[str]) -> list[Item]:
    enc = self.tokenizer(list(strings), truncation=True,
                         max_length=self.max_name_tokens)["input_ids"]
    return [Item(ids, [_pool_positions(len(ids), self.pooling)])
            for ids in enc]

  def encode_strings(self, strings: list[str], desc: str = "names"):
    """Each string encoded alone, pooled as training pools concept names."""
    return self._chunked(len(strings),
                         lambda lo, hi: self.name_items(strings[lo:hi]),
                         desc, self.name_shape)

  def mention_items(self, sentences: list[str],
                    spans: list[list[tuple[int, int]]]):
    """(items, ok): one item per sentence, one output per mention span;
    ok marks the mentions that kept at least one subtoken."""
    enc = self.tokenizer(list(sentences), truncation=True,
                         max_length=self.seq_len,
                         return_offsets_mapping=True)
    items, ok = [], []
    for ids, offsets, sp in zip(enc["input_ids"], enc["offset_mapping"],
                                spans):
      outs = []
      for start, end in sp:
        toks = [t for t, (a, b) in enumerate(offsets)
                if b > a and a >= start and b <= end]
        ok.append(bool(toks))
        outs.append(toks or [0])
      items.append(Item(ids, outs))
    return items, ok

  def encode_mentions(self, sentences: list[str],
                      spans: list[list[tuple[int, int]]],
                      desc: str = "sentences"):
    """Mentions pooled from their sentence's encoding (BALI's text side).

    Returns (total mentions, D) in order, and a bool array marking the
    mentions that kept at least one subtoken (a mention cut off by the
    `seq_len` truncation has none and a zero vector).
    """
    ok = []

    def make_items(lo, hi):
      items, kept = self.mention_items(sentences[lo:hi], spans[lo:hi])
      ok.extend(kept)
      return items
    vecs = self._chunked(len(sentences), make_items, desc, self.shape)
    return vecs, np.asarray(ok, bool)
