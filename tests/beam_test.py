"""data_prep on Apache Beam: DirectRunner with two worker processes writes
the same records as the local path (every split, record for record, in
example-id order), and a bad record fails the build with the local path's
message."""

import glob
import json
import os

import numpy as np
import pytest

from bali_jax.features import tiny_budgets
from bali_jax.open_data import starter_model_dir
from bali_jax.hf.tokenizer import load_tokenizer
from data_prep.pipelines import beam_build
from data_prep.pipelines.build import BuildOptions, build_dataset
from bali_jax.readers.corpus import Document
from bali_jax.readers.errors import BadInputError, BadRecords
from data_prep.linking.linker import DictionaryLinker
from tests.data_prep_test import cohort_documents, fixture_graph, read_split


def _build(tmp_path, name, docs, **kw):
  kg = fixture_graph(str(tmp_path / f"kg-{name}"))
  o = BuildOptions(**{**dict(budgets=tiny_budgets(), views=2, seed=7,
                              validation_percent=15, test_percent=15,
                              workers=2, pack_chunk=48), **kw})
  out = str(tmp_path / name)
  card = build_dataset(docs, kg, load_tokenizer(starter_model_dir()), out,
                       o, BadRecords(), linker=DictionaryLinker(kg))
  return out, card


@pytest.mark.slow(seconds=50)
def test_beam_direct_runner_writes_the_local_records(tmp_path, monkeypatch):
  monkeypatch.setattr(beam_build, "DOCS_PER_SHARD", 16)  # 8 shards
  local, card_l = _build(tmp_path, "local", cohort_documents())
  beam, card_b = _build(tmp_path, "beam", cohort_documents(),
                        runner="direct")
  spec_l = json.load(open(os.path.join(local, "bali_dataset.json")))
  spec_b = json.load(open(os.path.join(beam, "bali_dataset.json")))
  assert spec_b == spec_l
  assert set(spec_l["splits"]) == {"train_view0", "train_view1",
                                   "validation", "test"}
  # several packing chunks per view, so chunks really went to workers
  assert card_l["packing"]["train_view0"]["sentences"] > 3 * 48
  assert card_b["corpus"] == card_l["corpus"]
  assert card_b["packing"] == card_l["packing"]
  for f in ("sentences_train.jsonl", "test_mentions.jsonl", "concepts.tsv",
            "names.tsv", "heldout_synonyms.tsv"):
    assert open(os.path.join(beam, f)).read() == open(
        os.path.join(local, f)).read(), f
  for split, n in spec_l["splits"].items():
    a, b = read_split(local, split), read_split(beam, split)
    assert len(a) == len(b) == n
    assert [int(r["example_id"]) for r in b] == list(range(n))
    for ra, rb in zip(a, b):
      assert ra.keys() == rb.keys()
      for k in ra:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=f"{split} {k}")
  assert not glob.glob(os.path.join(beam, "beam-work"))
  assert not glob.glob(str(tmp_path / ".beam.tmp-*"))


def test_workers_map_the_graph_files_instead_of_unpickling_it(tmp_path):
  """What a Beam worker receives: after map_to, a pickle of the graph
  carries its directory (no name, no edge), and unpickling maps the files
  into the same index, names, linkability and neighbours."""
  import pickle
  kg = fixture_graph(str(tmp_path / "kg"))
  for j in range(3000):  # a pickle of objects grows with the graph
    kg.add_edge(kg.add_concept(f"X:{j}", [f"extra name {j}"]), j % 7, "r")
  kg.reserve_synonyms(0.2, 3)
  whole = len(pickle.dumps(kg))
  kg.map_to(str(tmp_path / "graph"))
  blob = pickle.dumps(kg)
  assert whole > 60_000 and len(blob) < 4_000  # the mapped one does not
  assert b"extra name 2999" not in blob
  w = pickle.loads(blob)
  assert type(w.names).__name__ == "FlatNames"
  assert isinstance(w.edge_arrays().dst, np.memmap)
  assert len(w) == len(kg) and list(w.concept_ids) == kg.concept_ids
  for i in range(len(kg)):
    assert w.names[i] == kg.names[i]
    assert w.neighbors(i) == kg.neighbors(i)
    assert w.adjacency[i] == kg.adjacency[i]
    assert bool(w.linkable[i]) == kg.linkable[i]
  assert all(w.index[k] == v and k in w.index for k, v in kg.index.items())
  assert w.index.get("HP:404") is None and "HP:404" not in w.index
  assert w.index.get("X" * 500) is None  # longer than any key
  assert w.heldout == kg.heldout and w.stats() == kg.stats()
  kg.add_name(0, "a name added after mapping")
  with pytest.raises(ValueError, match="changed after map_to"):
    pickle.dumps(kg)


def test_beam_bad_record_names_the_place_and_leaves_nothing(tmp_path,
                                                            monkeypatch):
  from bali_jax.readers.corpus import Mention
  monkeypatch.setattr(beam_build, "DOCS_PER_SHARD", 4)
  docs = list(cohort_documents(12))
  docs.insert(9, Document("PMID:998", "Anemia is here.",
                          [Mention(0, 6, ["HP:404"])]))
  docs.insert(11, Document("PMID:999", "Anemia is here.",
                           [Mention(0, 6, ["HP:405"])]))
  with pytest.raises(BadInputError, match="PMID:998 sentence 0: mention "
                     "'Anemia' links to HP:404, which is not in the graph"):
    _build(tmp_path, "bad", docs, runner="direct", workers=1)
  assert not os.path.exists(tmp_path / "bad")
  assert not glob.glob(str(tmp_path / ".bad.tmp-*"))
