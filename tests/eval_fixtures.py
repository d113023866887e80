"""A small hand-written evaluation dataset (dictionary + queries) and an
ontology with many synonyms for the held-out tests."""

from __future__ import annotations

import json
import os

# concept id -> names (label first). "iron overload" names two concepts on
# purpose: a real tie in every model.
CONCEPTS = {
    "HP:0001903": ["Anemia", "low hemoglobin", "decreased haemoglobin"],
    "HP:0001744": ["Splenomegaly", "spleen enlargement"],
    "HP:0002240": ["Hepatomegaly", "liver enlargement", "large liver"],
    "HP:0001250": ["Seizure", "epileptic seizure", "fits"],
    "HP:0002315": ["Headache", "cephalgia", "head pain"],
    "HP:0001945": ["Fever", "pyrexia", "elevated temperature"],
    "HP:0012378": ["Fatigue", "tiredness", "lack of energy"],
    "HP:0002027": ["Abdominal pain", "stomach ache", "belly pain"],
    "HP:0000822": ["Hypertension", "high blood pressure"],
    "HP:0002094": ["Dyspnea", "shortness of breath", "breathlessness"],
    "HP:0012735": ["Cough", "coughing"],
    "HP:0002018": ["Nausea", "queasiness"],
    "HP:0002013": ["Vomiting", "emesis", "throwing up"],
    "HP:0000717": ["Autism", "autistic behavior"],
    "HP:0001513": ["Obesity", "excess body weight"],
    "HP:0000510": ["Rod-cone dystrophy", "retinitis pigmentosa"],
    "HP:0001635": ["Congestive heart failure", "heart failure"],
    "MONDO:0006510": ["hereditary hemochromatosis", "bronze diabetes",
                      "iron overload"],
    "MONDO:0005148": ["iron deficiency anemia", "sideropenic anemia"],
    "MONDO:0000001": ["disease"],
    "MONDO:0001234": ["iron overload"],
    "MONDO:0005015": ["diabetes mellitus", "diabetes"],
}
# held-out synonyms: (concept id, synonym); two are "easy" (a case/punct
# variant of a name of their concept)
HELDOUT = [("HP:0001903", "anaemia"), ("HP:0001744", "enlarged spleen"),
           ("HP:0002240", "enlarged liver"), ("HP:0001250", "convulsion"),
           ("HP:0002315", "HEADACHE"), ("HP:0001945", "febrile"),
           ("HP:0002094", "difficulty breathing"),
           ("HP:0000822", "high-blood pressure"),
           ("MONDO:0006510", "haemochromatosis"),
           ("HP:0001635", "cardiac failure"), ("HP:0002013", "being sick")]
SENTENCES = [
    ("Patients with anemia and splenomegaly were followed.",
     [("anemia", "HP:0001903"), ("splenomegaly", "HP:0001744")]),
    ("Fever with headache was the first sign.",
     [("Fever", "HP:0001945"), ("headache", "HP:0002315")]),
    ("Hereditary hemochromatosis causes iron overload.",
     [("Hereditary hemochromatosis", "MONDO:0006510"),
      ("iron overload", "MONDO:0006510")]),
    ("Nausea, vomiting and abdominal pain resolved.",
     [("Nausea", "HP:0002018"), ("vomiting", "HP:0002013"),
      ("abdominal pain", "HP:0002027")]),
]


def write_eval_dataset(d: str) -> str:
  """concepts.tsv, names.tsv, aliases.tsv, heldout_synonyms.tsv and
  test_mentions.jsonl as data_prep writes them (no records needed)."""
  os.makedirs(d, exist_ok=True)
  ids = list(CONCEPTS)
  with open(os.path.join(d, "concepts.tsv"), "w") as f:
    f.write("node_id\tconcept_id\tname\n")
    for i, c in enumerate(ids):
      f.write(f"{i}\t{c}\t{CONCEPTS[c][0]}\n")
  with open(os.path.join(d, "names.tsv"), "w") as f:
    f.write("node_id\tname\n")
    for i, c in enumerate(ids):
      for n in CONCEPTS[c]:
        f.write(f"{i}\t{n}\n")
  with open(os.path.join(d, "aliases.tsv"), "w") as f:
    f.write("alias\tnode_id\nOMIM:235200\t17\n")
  with open(os.path.join(d, "heldout_synonyms.tsv"), "w") as f:
    f.write("node_id\tconcept_id\tsynonym\n")
    for c, s in HELDOUT:
      f.write(f"{ids.index(c)}\t{c}\t{s}\n")
  with open(os.path.join(d, "test_mentions.jsonl"), "w") as f:
    for k, (text, ments) in enumerate(SENTENCES):
      spans = []
      for m, c in ments:
        start = text.index(m)
        spans.append([start, start + len(m), [ids.index(c)]])
      f.write(json.dumps({"doc": f"PMID:{k}", "sent": 0, "text": text,
                          "mentions": spans}) + "\n")
  return d


def synonym_obo(n_terms: int = 40) -> str:
  """An OBO ontology whose terms all have 2-3 exact synonyms."""
  words = ["alpha", "beta", "gamma", "delta", "kappa", "sigma", "omega",
           "theta", "lambda", "zeta"]
  parts = ["format-version: 1.2", "data-version: test/2099", "",
           "[Term]", "id: HP:0000001", "name: All", ""]
  for i in range(n_terms):
    a, b = words[i % 10], words[(i // 10) % 10]
    parts += ["[Term]", f"id: HP:{1000 + i:07d}",
              f"name: {a} {b} dysplasia",
              f'synonym: "{a} {b} malformation" EXACT []',
              f'synonym: "{b}-{a} syndrome {i}" EXACT []']
    if i % 2:
      parts.append(f'synonym: "{a} {b} anomaly type {i}" EXACT []')
    parts += ["is_a: HP:0000001 ! All", ""]
  return "\n".join(parts) + "\n"


def synonym_documents(kg_names: list[list[str]], n: int = 60):
  """Documents that mention every name of every term (held-out ones too)."""
  from bali_jax.readers.corpus import Document
  flat = [n for names in kg_names for n in names]
  for i in range(n):
    picks = [flat[(i * 3 + j) % len(flat)] for j in range(3)]
    text = " ".join(f"The patient had {p} at birth." for p in picks)
    yield Document(f"PMID:{5000 + i}", text)
