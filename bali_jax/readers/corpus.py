"""Corpus readers (streaming) and sentence splitting.

* PubMed baseline XML (`.xml.gz`): title + abstract of English citations.
* BERN2-style JSON lines: {pmid, text, annotations: [{id: [...], mention,
  span: {begin, end}}]}.
* PubTator: `PMID|t|title`, `PMID|a|abstract`, then `PMID<TAB>start<TAB>end
  <TAB>mention<TAB>type<TAB>ids` lines; offsets over title + " " + abstract.
* BioC XML (`.xml` or `.xml.gz`, as BC5CDR ships): passages at their
  document offsets, annotations with a type, an id infon and a location.

Sentences are split with pysbd (rule-based, keeps "e.g.", "et al.", decimals
together); mentions that cross a sentence boundary are dropped, as the
authors drop them.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import xml.etree.ElementTree as ET
import zlib

from bali_jax.readers.errors import BadRecords, read_lines


@dataclasses.dataclass
class Mention:
  start: int  # character offsets in the document (or sentence) text
  end: int
  concepts: list[str]  # concept ids (several for multi-id mentions)
  text: str | None = None  # the annotation's mention string, if it has one
  where: str = ""  # file:line of the annotation (for messages)
  # a discontinuous mention (BioC, several locations): start-end cover all
  # of its parts and `text` is the annotation's string, not the span's
  discontinuous: bool = False


@dataclasses.dataclass
class Document:
  doc_id: str
  text: str
  mentions: list[Mention] | None = None  # None: raw text, to be linked


@dataclasses.dataclass
class Sentence:
  doc_id: str
  index: int  # sentence number in the document
  text: str
  mentions: list[Mention]


def _text(elem) -> str:
  return " ".join("".join(elem.itertext()).split()) if elem is not None else ""


def read_pubmed_xml(path: str, bad: BadRecords, stats: dict | None = None):
  """Yields English citations with an abstract from a PubMed .xml(.gz)."""
  stats = stats if stats is not None else {}
  opener = gzip.open if path.endswith(".gz") else open
  last = "start of file"
  try:
    with opener(path, "rb") as f:
      for _, elem in ET.iterparse(f, events=("end",)):
        if elem.tag != "PubmedArticle":
          continue
        pmid = elem.findtext("MedlineCitation/PMID") or ""
        last = f"after PMID {pmid}"
        stats["citations"] = stats.get("citations", 0) + 1
        art = elem.find("MedlineCitation/Article")
        langs = [l.text for l in art.findall("Language")] if art is not None \
            else []
        abstract = " ".join(_text(a) for a in elem.findall(
            "MedlineCitation/Article/Abstract/AbstractText"))
        title = _text(elem.find("MedlineCitation/Article/ArticleTitle"))
        elem.clear()
        if not abstract:
          continue
        if "eng" not in langs:
          stats["non_english"] = stats.get("non_english", 0) + 1
          continue
        stats["english_abstracts"] = stats.get("english_abstracts", 0) + 1
        text = f"{title} {abstract}".strip() if title else abstract
        yield Document(f"PMID:{pmid}", text)
  except (EOFError, zlib.error, OSError, ET.ParseError) as e:
    bad.report("truncated-or-corrupt-xml", f"{path} ({last})",
               f"cannot read further: {type(e).__name__}: {e}")


def _check_span(doc: Document, m: Mention, where: str, bad: BadRecords):
  if m.start == m.end:
    bad.report("empty-mention", where, f"mention at offset {m.start} of "
               f"{doc.doc_id} is empty (start == end)")
    return False
  if not (0 <= m.start < m.end <= len(doc.text)):
    bad.report("offsets-outside-text", where,
               f"mention offsets {m.start}-{m.end} outside the text of "
               f"{doc.doc_id} (length {len(doc.text)})")
    return False
  return True


def read_bern2_jsonl(path: str, bad: BadRecords, map_ids=lambda ids: ids):
  """Yields annotated documents from BERN2-style JSON lines."""
  for lineno, line in read_lines(path, bad):
    if not line.strip():
      continue
    where = f"{path}:{lineno}"
    try:
      rec = json.loads(line)
      doc = Document(f"PMID:{rec['pmid']}", rec["text"], [])
      anns = rec.get("annotations") or []
      for a in anns:
        ids = a["id"] if isinstance(a["id"], list) else [a["id"]]
        m = Mention(int(a["span"]["begin"]), int(a["span"]["end"]),
                    map_ids(ids), a.get("mention"), where)
        if _check_span(doc, m, where, bad) and m.concepts:
          doc.mentions.append(m)
    except (ValueError, KeyError, TypeError) as e:
      bad.report("malformed-json-record", where, f"not a BERN2 record: {e}")
      continue
    yield doc


def read_pubtator(path: str, bad: BadRecords, map_ids=lambda ids: ids):
  """Yields annotated documents from a PubTator file."""
  doc, title = None, ""
  pending = []  # (lineno, fields) of annotations of the current document

  def finish():
    if doc is None:
      return None
    for lineno, f in pending:
      where = f"{path}:{lineno}"
      try:
        m = Mention(int(f[1]), int(f[2]),
                    map_ids([i for i in f[5].replace(",", ";").split(";")
                             if i and i != "-"]), f[3], where)
      except ValueError:
        bad.report("malformed-annotation", where, "offsets are not integers")
        continue
      if _check_span(doc, m, where, bad) and m.concepts:
        doc.mentions.append(m)
    return doc

  for lineno, line in read_lines(path, bad):
    if not line.strip():
      continue
    if "|t|" in line[:40] or "|a|" in line[:40]:
      pmid, kind, text = line.split("|", 2)
      if kind == "t":
        done = finish()
        if done is not None:
          yield done
        doc, title, pending = None, text, []
        doc = Document(f"PMID:{pmid}", title, [])
      elif doc is not None:
        doc.text = f"{title} {text}" if title else text
      continue
    f = line.split("\t")
    if len(f) < 6 or doc is None:
      bad.report("malformed-annotation", f"{path}:{lineno}",
                 f"expected 6 tab-separated fields, got {len(f)}")
      continue
    pending.append((lineno, f))
  done = finish()
  if done is not None:
    yield done


def _passages_text(doc_el) -> str:
  """The passages' texts placed at their offsets (spaces in between)."""
  text = ""
  for p in doc_el.findall("passage"):
    offset = int(p.findtext("offset", "0"))
    text = text.ljust(offset) + (p.findtext("text") or "")
  return text


def read_bioc(path: str, bad: BadRecords, map_ids=lambda ids: ids,
              types=None, id_key: str = "MESH", stats: dict | None = None):
  """Yields annotated documents from a BioC XML collection.

  `types` keeps annotations of those types only. A composite mention
  (infon CompositeRole = CompositeMention, ids "D1|D2") is replaced by its
  IndividualMention annotations, each with its own id, as the SapBERT /
  BioSyn evaluation splits composite mentions; other multi-id mentions
  keep every id (any one counts). Ids are prefixed with `id_key` ("MESH:
  D003693"); "-1" is no id. `stats` counts what was left out and why.
  """
  stats = {} if stats is None else stats
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:  # a user's corpus (or a wheel's file)
    for _, el in ET.iterparse(f):
      if el.tag != "document":
        continue
      doc = Document(f"PMID:{el.findtext('id', '')}", _passages_text(el), [])
      for a in el.iter("annotation"):
        infons = {i.get("key"): (i.text or "") for i in a.findall("infon")}
        where = f"{path}: document {doc.doc_id}, annotation {a.get('id')}"
        if types is not None and infons.get("type") not in types:
          stats["other-type"] = stats.get("other-type", 0) + 1
          continue
        if infons.get("CompositeRole") == "CompositeMention":
          stats["composite-split-into-parts"] = stats.get(
              "composite-split-into-parts", 0) + 1
          continue
        try:
          spans = [(int(loc.get("offset")), int(loc.get("offset"))
                    + int(loc.get("length"))) for loc in a.findall(
                        "location")]
        except (TypeError, ValueError):
          spans = []
        if not spans:
          bad.report("malformed-annotation", where,
                     "no integer location offset/length")
          continue
        ids = [f"{id_key}:{i.strip()}" for i in
               infons.get(id_key, "").split("|") if i.strip() not in
               ("", "-1", "-")]
        m = Mention(min(s for s, _ in spans), max(e for _, e in spans),
                    map_ids(ids), a.findtext("text"), where,
                    discontinuous=len(spans) > 1)
        if _check_span(doc, m, where, bad):
          doc.mentions.append(m)
      el.clear()
      yield doc


_SEGMENTER = None


def split_sentences(doc: Document) -> list[Sentence]:
  """Splits a document; mention offsets become sentence-relative."""
  global _SEGMENTER
  if _SEGMENTER is None:
    import pysbd
    _SEGMENTER = pysbd.Segmenter(language="en", clean=False)
  out, pos = [], 0
  for i, piece in enumerate(_SEGMENTER.segment(doc.text)):
    start = doc.text.find(piece, pos)
    if start < 0:  # pysbd never rewrites with clean=False; be safe anyway
      start = pos
    end = start + len(piece)
    pos = end
    stripped = piece.rstrip()
    lead = len(piece) - len(piece.lstrip())
    text = stripped.lstrip()
    if not text:
      continue
    s0 = start + lead
    mentions = None
    if doc.mentions is not None:
      mentions = [Mention(m.start - s0, m.end - s0, m.concepts, m.text,
                          m.where)
                  for m in doc.mentions
                  if m.start >= s0 and m.end <= s0 + len(text)]
    out.append(Sentence(doc.doc_id, i, text, mentions))
  return out
