"""Entity-linking queries: what to link, its gold concepts, its sentence.

Three kinds, each scored on its own:
  heldout_synonyms  synonyms data_prep reserved before linking and sampling
                    (`heldout_synonyms.tsv`): the clean zero-shot test,
                    independent of our linker.
  test_mentions     the mentions of the dataset's test split
                    (`test_mentions.jsonl`: sentence text + spans).
  corpus            a user's gold-linked PubTator or BERN2 file; ids are
                    mapped onto the KG (prefix spelling, alt ids, replaced
                    ids, joined database ids). Mentions that cannot be
                    used are counted by reason, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import json
import os

from bali_jax import storage
from bali_jax.eval.dictionary import Dictionary, normalize

NO_ID = "\0no-id"  # marks a corpus mention that carried no concept id


@dataclasses.dataclass
class Query:
  text: str  # the mention string
  gold: tuple[int, ...]  # gold nodes (any of them counts)
  sentence: str | None = None  # its sentence, when known
  span: tuple[int, int] | None = None  # character span in `sentence`
  hard: bool = False  # normalised text is no name of a gold concept
  group: str | None = None  # its document (the bootstrap's unit), if any


@dataclasses.dataclass
class QuerySet:
  name: str
  queries: list[Query]
  source: str
  skipped: dict = dataclasses.field(default_factory=dict)  # reason -> info
  documents: int | None = None  # corpus documents read
  notes: dict = dataclasses.field(default_factory=dict)  # reader counts

  def skip(self, reason: str, where: str, detail: str) -> None:
    s = self.skipped.setdefault(reason, {"count": 0,
                                         "first": f"{where}: {detail}"})
    s["count"] += 1

  def summary(self) -> dict:
    return {"name": self.name, "source": self.source,
            "queries": len(self.queries),
            "hard": sum(q.hard for q in self.queries),
            "with_sentence": sum(q.sentence is not None
                                 for q in self.queries),
            **({"documents": self.documents} if self.documents is not None
               else {}),
            **({"notes": self.notes} if self.notes else {}),
            "skipped": self.skipped}


def finish(qs: QuerySet, d: Dictionary, where=None) -> QuerySet:
  """Drops queries whose gold concept has no name in the dictionary
  (counted) and marks the hard ones."""
  has = d.concepts_with_names()
  norm = d.normalized_names()
  kept = []
  for i, q in enumerate(qs.queries):
    gold = tuple(g for g in q.gold if has[g])
    if not gold:
      qs.skip("gold-concept-not-in-dictionary",
              where(i) if where else f"query {i}",
              f"{q.text!r}: none of its concepts has a name in "
              f"{d.source}")
      continue
    q.gold = gold
    q.hard = not any(normalize(q.text) in norm[g] for g in gold)
    kept.append(q)
  qs.queries = kept
  return qs


def _dataset_file(data_dir: str, name: str) -> str:
  path = storage.join(data_dir, name)
  if not storage.exists(path):
    raise FileNotFoundError(f"{path}: missing; rebuild the dataset with "
                            "this version of data_prep")
  return path


def heldout_synonyms(data_dir: str, d: Dictionary,
                     limit: int | None = None, seed: int = 0) -> QuerySet:
  """Held-out synonyms of a dataset (optionally a seeded sample of them)."""
  import numpy as np
  path = _dataset_file(data_dir, "heldout_synonyms.tsv")
  qs = QuerySet("heldout_synonyms", [], path)
  with storage.open_file(path) as f:
    next(f, None)
    rows = [(n, line.rstrip("\n").split("\t")) for n, line in
            enumerate(f, 2) if line.strip()]
  if limit and len(rows) > limit:
    pick = np.sort(np.random.default_rng(seed).choice(len(rows), limit,
                                                      replace=False))
    rows = [rows[i] for i in pick]
  for lineno, cols in rows:
    if len(cols) != 3 or not cols[2].strip():
      qs.skip("malformed-line", f"{path}:{lineno}",
              "expected node_id, concept_id, synonym")
      continue
    qs.queries.append(Query(cols[2], (int(cols[0]),)))
  return finish(qs, d, lambda i: f"{path} query {i}")


def test_mentions(data_dir: str, d: Dictionary) -> QuerySet:
  """The mentions of a dataset's test split, with their sentences."""
  path = _dataset_file(data_dir, "test_mentions.jsonl")
  qs = QuerySet("test_mentions", [], path)
  with storage.open_file(path) as f:
    for lineno, line in enumerate(f, 1):
      s = json.loads(line)
      for start, end, nodes in s["mentions"]:
        qs.queries.append(Query(s["text"][start:end], tuple(nodes),
                                s["text"], (start, end),
                                group=s.get("doc", f"line {lineno}")))
  return finish(qs, d)


def _id_candidates(raw: str):
  """Spellings of one corpus id to try against the KG's ids and aliases:
  as given, `HP_0001` -> `HP:0001`, upper-case prefix, OMIM `MIM:`."""
  raw = raw.strip()
  yield raw
  prefix, sep, local = raw.replace("_", ":", 1).partition(":")
  if sep:
    for p in (prefix, prefix.upper()):
      yield f"{p}:{local}"
    if prefix.upper() in ("MIM", "OMIM"):
      yield f"OMIM:{local}"
    if prefix.upper() == "MESH":
      yield f"MESH:{local}"


def map_id(raw: str, d: Dictionary) -> int | None:
  for c in _id_candidates(raw):
    if c in d.index:
      return d.index[c]
  return None


def corpus(path: str, fmt: str, d: Dictionary, strict: bool = False,
           types=None, name: str | None = None) -> QuerySet:
  """A gold-linked PubTator or BERN2 file as queries.

  Bad annotations (offsets out of range, empty mentions, a mention string
  that differs from the text at its offsets, malformed lines) raise with
  file and line when `strict`, else are counted per reason with the first
  place they occur; so are mentions without an id, with ids not in the KG,
  and mentions that cross a sentence boundary (those still count for the
  mention-string representation, not the in-sentence one).
  """
  import functools
  from bali_jax.readers.corpus import read_bern2_jsonl, read_bioc, \
      read_pubtator, split_sentences
  from bali_jax.readers.errors import BadRecords
  if not os.path.exists(path):  # a user's corpus file, read by data_prep
    raise FileNotFoundError(f"--corpus {path}: no such file")
  qs = QuerySet(name or f"corpus:{os.path.basename(path)}", [], path)
  reader = {"pubtator": read_pubtator, "bern2": read_bern2_jsonl,
            "bioc": functools.partial(read_bioc, types=types,
                                      stats=qs.notes)}[fmt]
  bad = BadRecords(skip=not strict)
  keep_ids = lambda ids: list(ids) or [NO_ID]
  where_of = {}
  qs.documents = 0
  for doc in reader(path, bad, keep_ids):
    qs.documents += 1
    sentence_of, pos = {}, 0
    for s in split_sentences(doc):
      s0 = doc.text.find(s.text, pos)
      pos = s0 + len(s.text)
      for m in s.mentions:
        sentence_of[(m.where, s0 + m.start, s0 + m.end)] = (
            s.text, (m.start, m.end))
    for m in doc.mentions:
      # a discontinuous mention's string is the annotation's (its parts);
      # it has no one span to pool in its sentence
      text = m.text if m.discontinuous else doc.text[m.start:m.end]
      if not text.strip():
        bad.report("empty-mention", m.where,
                   f"mention {m.start}-{m.end} of {doc.doc_id} is empty")
        continue
      if m.text is not None and not m.discontinuous and " ".join(
          m.text.split()) != " ".join(text.split()):
        bad.report("mention-text-mismatch", m.where,
                   f"annotation says {m.text!r} but the text at "
                   f"{m.start}-{m.end} is {text!r}")
        continue
      if m.concepts == [NO_ID]:
        qs.skip("mention-without-id", m.where, f"{text!r} has no id")
        continue
      gold = tuple(dict.fromkeys(n for n in (map_id(c, d) for c in
                                             m.concepts) if n is not None))
      if not gold:
        qs.skip("id-not-in-kg", m.where,
                f"{text!r}: {'|'.join(m.concepts)} not in {d.source}")
        continue
      sent, span = sentence_of.get((m.where, m.start, m.end), (None, None))
      if m.discontinuous:
        sent, span = None, None
        qs.skip("discontinuous (string only)", m.where,
                f"{text!r} is in several pieces")
      elif sent is None:
        qs.skip("crosses-sentence-boundary (string only)", m.where,
                f"{text!r} is not inside one sentence")
      where_of[len(qs.queries)] = m.where
      qs.queries.append(Query(text, gold, sent, span, group=doc.doc_id))
  for reason, info in bad.to_dict().items():
    qs.skipped[reason] = info
  return finish(qs, d, lambda i: where_of.get(i, path))

