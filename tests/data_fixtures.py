"""Small input files written by the tests: a UMLS-like RRF pair, an OBO, a
cellxgene-style JSON ontology, PubMed XML, BERN2 JSON lines, PubTator."""

from __future__ import annotations

import gzip
import json
import os

OBO = """format-version: 1.2
data-version: hp/releases/2099-01-01

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000118
name: Phenotypic abnormality
is_a: HP:0000001 ! All

[Term]
id: HP:0001903
name: Anemia
synonym: "Anaemia" EXACT []
synonym: "Low blood" RELATED []
is_a: HP:0000118 ! Phenotypic abnormality

[Term]
id: HP:0001744
name: Splenomegaly
synonym: "Enlarged spleen" EXACT []
is_a: HP:0000118

[Term]
id: HP:0012823
name: Clinical modifier
is_a: HP:0000001

[Term]
id: HP:0012828
name: Severe
is_a: HP:0012823

[Term]
id: HP:9999999
name: Old term
is_obsolete: true
"""

MONDO = {
    "MONDO:0000001": {"label": "disease", "synonyms": [], "ancestors": {},
                      "deprecated": False},
    "MONDO:0005148": {"label": "iron deficiency anemia",
                      "synonyms": ["IDA", "ida", "sideropenic anemia"],
                      "ancestors": {"MONDO:0000001": 1}, "deprecated": False},
    "MONDO:0006510": {"label": "hereditary hemochromatosis",
                      "synonyms": ["HH", "bronze diabetes"],
                      "ancestors": {"MONDO:0000001": 1}, "deprecated": False},
    "MONDO:0009999": {"label": "gone disease", "synonyms": [],
                      "ancestors": {}, "deprecated": True},
}

HPOA = ("#version: 2099-01-01\n"
        "database_id\tdisease_name\tqualifier\thpo_id\treference\tevidence\t"
        "onset\tfrequency\tsex\tmodifier\taspect\tbiocuration\n"
        "OMIM:1\tHereditary hemochromatosis\t\tHP:0001744\tPMID:1\tPCS\t\t\t"
        "\t\tP\tx\n"
        "OMIM:2\tIron deficiency anemia\tNOT\tHP:0001744\tPMID:1\tPCS\t\t\t"
        "\t\tP\tx\n")

ABSTRACTS = [
    ("101", "eng", "Iron overload in hereditary hemochromatosis.",
     "Patients with hereditary hemochromatosis often develop splenomegaly. "
     "Anemia was not seen, e.g. in 3.5 per cent of cases. Severe cases of "
     "HH need phlebotomy."),
    ("102", "eng", "Anemia in children.",
     "Iron deficiency anemia is common. Splenomegaly and anemia co-occur in "
     "some children. Enlarged spleen was rare."),
    ("103", "fre", "Anemie.", "Une anemie ferriprive."),
    ("104", "eng", "No findings.", "Nothing here links to the graph at all."),
]


def write_ontologies(d) -> dict[str, str]:
  import zstandard
  os.makedirs(d, exist_ok=True)
  paths = {"obo": os.path.join(d, "hp.obo"),
           "mondo": os.path.join(d, "MONDO-ontology-v2099-01-01.json.zst"),
           "hpoa": os.path.join(d, "phenotype.hpoa")}
  with open(paths["obo"], "w") as f:
    f.write(OBO)
  with open(paths["mondo"], "wb") as f:
    f.write(zstandard.ZstdCompressor().compress(json.dumps(MONDO).encode()))
  with open(paths["hpoa"], "w") as f:
    f.write(HPOA)
  return paths


def pubmed_xml(articles=ABSTRACTS) -> bytes:
  parts = ["<?xml version='1.0'?>\n<PubmedArticleSet>"]
  for pmid, lang, title, abstract in articles:
    parts.append(
        f"<PubmedArticle><MedlineCitation><PMID>{pmid}</PMID><Article>"
        f"<ArticleTitle>{title}</ArticleTitle><Abstract><AbstractText>"
        f"{abstract}</AbstractText></Abstract><Language>{lang}</Language>"
        "</Article></MedlineCitation></PubmedArticle>")
  parts.append("</PubmedArticleSet>\n")
  return "".join(parts).encode()


def write_pubmed(path, articles=ABSTRACTS, truncate=False) -> str:
  data = gzip.compress(pubmed_xml(articles))
  with open(path, "wb") as f:
    f.write(data[: len(data) * 2 // 3] if truncate else data)
  return path


# UMLS-like RRF: C1 anemia, C2 hemochromatosis, C3 spleen finding, C4
# iron (a neighbour never mentioned), C5 unrelated.
MRCONSO = [
    "C0000001|ENG|P|L1|PF|S1|Y|A1||M1|D1|MSH|MH|D000740|Anemia|0|N|256|",
    "C0000001|ENG|S|L2|PF|S2|Y|A2||M1|D1|MSH|ET|D000740|Anaemia|0|N|256|",
    "C0000001|FRE|P|L3|PF|S3|Y|A3||M1|D1|MSHFRE|MH|D000740|Anemie|0|N|256|",
    "C0000002|ENG|P|L4|PF|S4|Y|A4||M2|D2|MSH|MH|D006432|Hemochromatosis|0|N|256|",
    "C0000002|ENG|P|L4|PF|S4|Y|A5||M2|D2|OMIM|PT|235200|Hemochromatosis|0|N|256|",
    "C0000003|ENG|P|L5|PF|S5|Y|A6||M3|D3|MSH|MH|D013163|Splenomegaly|0|N|256|",
    "C0000004|ENG|P|L6|PF|S6|Y|A7||M4|D4|MSH|MH|D007501|Iron|0|N|256|",
    "C0000005|ENG|P|L7|PF|S7|Y|A8||M5|D5|MSH|MH|D000001|Unrelated|0|N|256|",
]
MRREL = [
    "C0000001|A1|CUI|RO|C0000004|A7|CUI|associated_with|R1||MSH|MSH|||N||",
    "C0000004|A7|CUI|RO|C0000001|A1|CUI|associated_with|R2||MSH|MSH|||N||",
    "C0000002|A4|CUI|RO|C0000004|A7|CUI||R3||MSH|MSH|||N||",
    "C0000002|A4|CUI|RO|C0000002|A4|CUI|same_as|R4||MSH|MSH|||N||",
    "C0000005|A8|CUI|RO|C0000004|A7|CUI||R5||MSH|MSH|||N||",
]

BERN2 = [
    {"pmid": "201", "text": "Anemia and hemochromatosis were studied. "
     "Splenomegaly was found in anemia.",
     "annotations": [
         {"id": ["mesh:D000740"], "mention": "Anemia",
          "span": {"begin": 0, "end": 6}},
         {"id": ["OMIM:235200"], "mention": "hemochromatosis",
          "span": {"begin": 11, "end": 26}},
         {"id": ["mesh:D013163"], "mention": "Splenomegaly",
          "span": {"begin": 41, "end": 53}},
         {"id": ["mesh:D000740"], "mention": "anemia",
          "span": {"begin": 67, "end": 73}},
         {"id": ["NCBIGene:3077"], "mention": "x",
          "span": {"begin": 0, "end": 1}}]},
    {"pmid": "202", "text": "Anaemia is frequent.",
     "annotations": [{"id": ["mesh:D000740"], "mention": "Anaemia",
                      "span": {"begin": 0, "end": 7}}]},
]


def write_umls(d) -> dict[str, str]:
  os.makedirs(d, exist_ok=True)
  p = {"mrconso": os.path.join(d, "MRCONSO.RRF"),
       "mrrel": os.path.join(d, "MRREL.RRF"),
       "bern2": os.path.join(d, "bern2.jsonl"),
       "pubtator": os.path.join(d, "corpus.pubtator")}
  with open(p["mrconso"], "w") as f:
    f.write("\n".join(MRCONSO) + "\n")
  with open(p["mrrel"], "w") as f:
    f.write("\n".join(MRREL) + "\n")
  with open(p["bern2"], "w") as f:
    f.write("\n".join(json.dumps(r) for r in BERN2) + "\n")
  title, abstract = "Anemia study.", "Splenomegaly and anemia."
  with open(p["pubtator"], "w") as f:
    f.write(f"301|t|{title}\n301|a|{abstract}\n"
            "301\t0\t6\tAnemia\tDisease\tMESH:D000740\n"
            "301\t14\t26\tSplenomegaly\tDisease\tMESH:D013163\n\n")
  return p


def synthetic_documents(n: int, seed: int = 0):
  """Plain-text abstracts mentioning the fixture concepts (to be linked)."""
  import random
  from bali_jax.readers.corpus import Document
  rng = random.Random(seed)
  names = ["anemia", "splenomegaly", "iron deficiency anemia",
           "hereditary hemochromatosis", "an enlarged spleen",
           "bronze diabetes", "anaemia", "sideropenic anemia"]
  templates = ["Patients with {} often develop {}.",
               "We describe {} in a child, without {}.",
               "The link between {} and {} remains unclear.",
               "{} was treated; {} resolved after therapy."]
  for i in range(n):
    sents = []
    for _ in range(rng.randint(2, 4)):
      a, b = rng.sample(names, 2)
      s = rng.choice(templates).format(a, b)
      sents.append(s[0].upper() + s[1:])
    yield Document(f"PMID:{1000 + i}", " ".join(sents))
