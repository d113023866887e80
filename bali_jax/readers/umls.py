"""UMLS Metathesaurus readers: MRCONSO.RRF (names) and MRREL.RRF (edges).

Filtering follows the authors (method spec 2.3): English names only,
(CUI, name) pairs deduplicated, no source or suppress filter; MRREL rows kept
when CUI1 or CUI2 is a concept mentioned in the linked corpus (the graph is
the mentioned concepts plus their 1-hop neighbourhood); the relation is RELA,
or REL when RELA is empty. Both files are streamed line by line.
"""

from __future__ import annotations

from bali_jax.readers.errors import BadRecords, read_lines
from bali_jax.readers.kg import KnowledgeGraph

MRCONSO_COLUMNS = 18  # CUI|LAT|TS|LUI|STT|SUI|ISPREF|AUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF
MRREL_COLUMNS = 16  # CUI1|AUI1|STYPE1|REL|CUI2|AUI2|STYPE2|RELA|RUI|SRUI|SAB|SL|RG|DIR|SUPPRESS|CVF
# BERN2 / PubTator id prefixes -> MRCONSO source (SAB) for CODE -> CUI
PREFIX_TO_SAB = {"mesh": "MSH", "omim": "OMIM", "mim": "OMIM",
                 "ncbitaxon": "NCBI", "ncbi": "NCBI",
                 "cellosaurus": "NCI_CELLOSAURUS", "cvcl": "NCI_CELLOSAURUS"}


def _rrf_rows(path: str, columns: int, bad: BadRecords):
  for lineno, line in read_lines(path, bad):
    if not line:
      continue
    cols = line.split("|")
    if cols[-1] == "":
      cols = cols[:-1]  # RRF lines end with a '|'
    if len(cols) != columns:
      bad.report("wrong-column-count", f"{path}:{lineno}",
                 f"{len(cols)} columns, expected {columns}")
      continue
    yield lineno, cols


def read_mrconso(path: str, kg: KnowledgeGraph, bad: BadRecords,
                 restrict_to: set[str] | None = None) -> dict:
  """Adds English names; returns the (SAB, CODE) -> CUI map for linking."""
  code_to_cui: dict[tuple[str, str], str] = {}
  for _, c in _rrf_rows(path, MRCONSO_COLUMNS, bad):
    cui, lat, sab, code, name = c[0], c[1], c[11], c[13], c[14]
    if lat != "ENG":
      continue
    if sab in PREFIX_TO_SAB.values():
      code_to_cui.setdefault((sab, code), cui)
    if restrict_to is not None and cui not in restrict_to:
      continue
    kg.add_concept(cui, [name])
  return code_to_cui


def read_mrrel(path: str, kg: KnowledgeGraph, bad: BadRecords,
               mentioned: set[str]) -> int:
  """Adds edges touching a mentioned CUI; returns the rows kept."""
  kept = 0
  for _, c in _rrf_rows(path, MRREL_COLUMNS, bad):
    cui1, rel, cui2, rela = c[0], c[3], c[4], c[7]
    if cui1 not in mentioned and cui2 not in mentioned:
      continue
    if cui1 not in kg.index or cui2 not in kg.index:
      continue  # no English name: cannot be a node (no feature)
    kg.add_edge(kg.index[cui1], kg.index[cui2], rela or rel)
    kept += 1
  return kept


def mrrel_concepts(path: str, bad: BadRecords, mentioned: set[str]) -> set:
  """First pass over MRREL: the mentioned CUIs and their 1-hop neighbours."""
  out = set(mentioned)
  for _, c in _rrf_rows(path, MRREL_COLUMNS, bad):
    if c[0] in mentioned or c[4] in mentioned:
      out.add(c[0])
      out.add(c[4])
  return out


def map_to_cui(ids: list[str], code_to_cui: dict) -> list[str]:
  """BERN2/PubTator ids ("mesh:D009369", "OMIM:114480") -> CUIs.

  Unmapped prefixes (NCBIGene, CHEBI, CL, ...) give nothing, as in the
  authors' remapping (they become CUI-less and are dropped).
  """
  out = []
  for i in ids:
    if i.startswith("C") and i[1:].isdigit() and len(i) == 8:
      out.append(i)  # already a CUI
      continue
    prefix, _, code = i.partition(":")
    sab = PREFIX_TO_SAB.get(prefix.lower())
    cui = code_to_cui.get((sab, code)) if sab else None
    if cui:
      out.append(cui)
  return list(dict.fromkeys(out))
