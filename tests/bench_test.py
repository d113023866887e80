"""The benchmark, its FLOP counts, synthetic records and the packer window.

Nothing here is timed: speed is measured by `python -m bali_jax bench`,
these tests check that what it reports is complete and computed right.
"""

import json

import numpy as np
import pytest

from bali_jax.bench import synthetic
from bali_jax.configs import get_config
from bali_jax.features import Budgets, feature_shapes, tiny_budgets, \
    validate_record
from bali_jax.train import flops
from tests.cli_runs import SHARED_STEP


# synthetic rows carry the GNN kind's keys only
GNN_ONLY = dict(lin_rows=0, masked_variants=False)


def _views(n, budgets, seed=0, vocab=30522):
  rng = np.random.default_rng(seed)
  return [synthetic._sentence(rng, synthetic.CorpusStats(), budgets, vocab,
                              1000, 4) for _ in range(n)]


def _segments(rec):
  seg, ids = rec["segment_ids"], rec["input_ids"]
  return [tuple(ids[seg == s]) for s in np.unique(seg[seg > 0])]


def test_open_rows_pack_every_sentence_once_with_less_padding():
  from bali_jax.records.packing import RowPacker
  b = Budgets(**GNN_ONLY)
  views = _views(600, b)
  out = {}
  for w in (1, 8):
    packer = RowPacker(b, open_rows=w)
    rows = [r for v in views for r in packer.add(v)]
    rows += list(packer.finish())
    for r in rows:
      assert validate_record(r, b) == []
    packed = sorted(s for r in rows for s in _segments(r))
    assert packed == sorted(tuple(v.ids) for v in views)  # each exactly once
    st = packer.stats.to_dict(b)
    assert st["sentences"] == len(views) and st["rows"] == len(rows)
    out[w] = st
  assert out[8]["pad_fraction_sentence_tokens"] < \
      out[1]["pad_fraction_sentence_tokens"] - 0.03
  assert out[8]["pad_fraction_name_tokens"] <= \
      out[1]["pad_fraction_name_tokens"]
  assert out[8]["rows"] < out[1]["rows"]


def test_synthetic_rows_follow_the_schema_and_the_card():
  st = synthetic.CorpusStats()
  b = synthetic.sized_budgets(st)
  assert b.name_rows == 3  # 1.3 name tokens per sentence token, 128 / 64
  recs, pst = synthetic.synthetic_rows(b, st, 200, 30522, seed=0)
  shapes = feature_shapes(b)
  for r in recs:
    assert {k: (v.shape, v.dtype) for k, v in r.items()} == shapes
    assert validate_record(r, b, num_concepts=100_000,
                           vocab_size=30522) == []
  tok = pst.tokens / pst.sentences
  assert abs(tok - st.tokens_per_sentence) < 0.15 * st.tokens_per_sentence
  ent = pst.entities / pst.sentences
  assert abs(ent - st.entities_per_sentence) < 0.15 * st.entities_per_sentence
  names = pst.name_tokens / pst.nodes
  assert abs(names - st.name_tokens_per_node) < 0.15 * st.name_tokens_per_node
  stacked = synthetic.stack(recs[:8])
  assert stacked["name_ids"].shape == (8, b.name_rows, b.name_len)


def test_stats_from_a_data_card_round_trip():
  st = synthetic.CorpusStats()
  card = {"options": {"budgets": Budgets().to_dict()}, "packing": {
      "train_view0": {
          "mean_sentences_per_row": 3.0,
          "mean_entities_per_row": 3.0 * st.entities_per_sentence,
          "mean_nodes_per_row": 3.0 * st.entities_per_sentence
          * st.nodes_per_entity,
          "pad_fraction_sentence_tokens": 1 - 3 * st.tokens_per_sentence / 128,
          "pad_fraction_name_tokens": 1 - 3.0 * st.entities_per_sentence
          * st.nodes_per_entity * st.name_tokens_per_node / 192,
          "unused_link_slots": 1 - 3.0 * st.entities_per_sentence
          * st.links_per_entity / 48}}}
  back = synthetic.stats_from_card(card)
  for k in ("tokens_per_sentence", "entities_per_sentence",
            "nodes_per_entity", "name_tokens_per_node", "links_per_entity"):
    assert getattr(back, k) == pytest.approx(getattr(st, k))


def test_real_flops_count_real_tokens_and_per_segment_attention():
  cfg = get_config("tiny")
  b = tiny_budgets(**GNN_ONLY)
  recs, _ = synthetic.synthetic_rows(b, synthetic.CorpusStats(), 4, 30522)
  batch = synthetic.stack(recs)
  c = {k: float(v) for k, v in flops.real_counts(cfg, batch, 7).items()}
  # reference: loops over rows and segments
  lens = [np.sum(r["segment_ids"] == s) for r in recs
          for s in np.unique(r["segment_ids"][r["segment_ids"] > 0])]
  assert c["sentence_tokens"] == sum(lens)
  assert c["sentence_pairs"] == sum(x * x for x in lens)
  nlens = [np.sum(row == s) for r in recs for row in r["name_segment_ids"]
           for s in np.unique(row[row > 0])]
  assert c["name_tokens"] == sum(nlens)
  assert c["name_pairs"] == sum(x * x for x in nlens)
  assert c["nodes"] == sum(r["node_mask"].sum() for r in recs)
  real = flops.real_flops(cfg, batch, 7)
  padded = flops.padded_flops(cfg, b.to_dict(), 4)
  assert set(real) == set(padded) == set(flops.PHASES)
  for k in flops.PHASES:
    assert 0 < float(real[k]) <= padded[k]
  # a full row of one segment: real == padded for the encoder
  full = {"segment_ids": np.ones((1, b.seq_len), np.int32),
          "name_segment_ids": np.ones((1, b.name_rows, b.name_len),
                                      np.int32),
          "node_mask": np.ones((1, b.max_nodes), np.int32),
          "edge_mask": np.ones((1, b.max_edges), np.int32),
          "entity_mask": np.ones((1, b.max_entities), np.int32)}
  k = flops.mlm_slots(cfg, b.seq_len)
  real = flops.real_flops(cfg, full, k)
  padded = flops.padded_flops(cfg, b.to_dict(), 1)
  for key in flops.PHASES:
    assert float(real[key]) == pytest.approx(padded[key])


def test_unpack_for_the_authors_stack_keeps_the_same_work():
  from bali_jax.bench.torch_peer import unpack
  b = Budgets(**GNN_ONLY)
  recs, _ = synthetic.synthetic_rows(b, synthetic.CorpusStats(), 6, 30522)
  batch = synthetic.stack(recs)
  spec = synthetic.synthetic_spec(b, 30522)
  u = unpack(batch, spec)
  sents = sorted(s for r in recs for s in _segments(r))
  got = sorted(tuple(ids[m == 1]) for ids, m in zip(u["ids"], u["mask"]))
  assert got == sents
  assert u["ids"].shape[1] == max(len(s) for s in sents)  # dynamic padding
  assert len(u["concept_ids"]) == batch["entity_mask"].sum()
  assert u["node_ids"].shape[0] == batch["node_mask"].sum()
  assert u["edge_index"].shape[1] == batch["edge_mask"].sum()
  # every edge points from a neighbour row to a target row
  assert (u["edge_index"][1] < u["num_targets"]).all()
  assert (u["edge_index"][0] >= u["num_targets"]).all()
  # mention tokens are the same token ids as in the packed rows
  flat = u["ids"].reshape(-1)[u["ment_flat"]]
  m = batch["mention_mask"] == 1
  packed = np.take_along_axis(batch["input_ids"], batch["mention_token"], 1)
  assert sorted(flat.tolist()) == sorted(packed[m].tolist())


@pytest.mark.slow(seconds=45)
def test_bench_on_records_reports_every_field(tiny_dataset, tmp_path):
  from bali_jax.cli import main
  out = tmp_path / "bench.json"
  # the shared tiny step's config: its program is in the session's cache
  # (measured 29 s against 36 s with a program of its own)
  shared = [f"{k}={v}" for k, v in SHARED_STEP.items()]
  assert main(["bench", "--config", "tiny", "--data", tiny_dataset,
               "--steps", "2", "--warmup", "1", "--rounds", "1",
               "--distinct-batches", "2", "--out", str(out), *shared]) == 0
  r = json.load(open(out))
  assert r["data"]["kind"] == "records"
  assert r["compile_s"] > 0 and r["step_s"]["n"] == 2
  assert r["step_s"]["min"] <= r["step_s"]["median"] <= r["step_s"]["max"]
  t = r["throughput"]
  for k in ("sentences_per_s", "entities_per_s", "real_tokens_per_s",
            "padded_tokens_per_s", "real_tflops_per_s",
            "padded_tflops_per_s", "mfu_real", "mfu_padded"):
    assert t[k] > 0, k
  assert t["real_tokens_per_s"] < t["padded_tokens_per_s"]
  assert t["mfu_real"] < t["mfu_padded"]
  assert r["peak_source"] == "measured fp32 matmul"
  assert r["peak_tflops_per_device"] > 0
  assert r["compiled_memory"]["temp_mib"] > 0
  assert r["input_pipeline"]["rows_per_s"] > 0
  assert set(r["phases_s"]) == {"sentence_encoder", "name_encoder",
                                "mlm_head", "gnn", "loss", "optimizer"}
  assert r["losses_finite"] and r["peak_rss_mib"] > 0
  assert r["device"]["count"] == 8 and r["versions"]["jax"]


@pytest.mark.slow(seconds=25)
def test_bench_synthetic_and_against_torch(tmp_path):
  """Synthetic batches, ours beside the authors' PyTorch stack. Without the
  bench extras only ours runs and the test then skips (a failure under
  CI=true, which installs them)."""
  from bali_jax.cli import main
  try:
    import pytorch_metric_learning  # noqa: F401
    import torch_geometric  # noqa: F401
    missing = None
  except ImportError as e:
    missing = e
  out = tmp_path / "bench.json"
  assert main(["bench", "--config", "tiny", "--synthetic", "--steps", "2",
               "--warmup", "1", "--rounds", "2", "--no-breakdown",
               "--out", str(out)]
              + ([] if missing else ["--compare-torch"])) == 0
  r = json.load(open(out))
  assert r["data"]["kind"] == "synthetic"
  assert r["batch"]["budgets"]["name_rows"] == \
      r["data"]["budgets"]["name_rows"]
  assert r["input_pipeline"]["rows_per_s"] is None
  assert "phases_s" not in r
  if missing:
    assert "torch" not in r
    pytest.skip(f"the PyTorch half needs requirements-bench.txt: {missing}")
  q = r["torch"]
  assert q["step_s"]["n"] == 2 and q["losses_finite"]
  assert q["shapes"]["entities"] > 0
  assert r["ratio_ours_over_torch"]["sentences_per_s"] > 0


def test_peak_table_takes_the_longest_prefix_and_cpu_is_measured():
  from bali_jax.train import peak
  assert peak._table("NVIDIA H100 80GB HBM3") == 989.0
  assert peak._table("NVIDIA H100 PCIe") == 756.0
  assert peak._table("TPU v5 lite") == 197.0
  assert peak._table("TPU v5p") == 459.0
  assert peak._table("Some new chip") == 0.0
  cfg = get_config("tiny")
  assert peak.peak_source(cfg) == "measured fp32 matmul"
  host = peak.measure_matmul_tflops()
  assert 0 < host < 100  # a CPU, in TFLOP/s
  import jax
  assert peak.peak_tflops_per_device(cfg) == pytest.approx(
      host / jax.local_device_count())
  assert peak.peak_tflops_per_device(
      cfg.replace(peak_tflops_per_device=2.5)) == 2.5


def test_bench_search_encodes_the_names_as_transformers_does(tmp_path,
                                                             capsys):
  """`bench-search --data --compare-torch`: the same dictionary encoded by
  PyTorch transformers (same pooling, length-sorted batches of our token
  budget) gives our vectors (1e-4) and both rates are reported."""
  pytest.importorskip("torch")
  from bali_jax.cli import main
  from tests import eval_fixtures as efx
  data = efx.write_eval_dataset(str(tmp_path / "ds"))
  out = tmp_path / "search.json"
  assert main(["bench-search", "--data", data, "--model", "starter",
               "--queries", "0", "--compare-torch", "--out", str(out)]) == 0
  r = json.load(open(out))
  t = r["torch_encoding"]
  assert t["names"] == r["names"] == r["encoding"]["names"]
  assert t["max_abs_diff_vs_ours"] < 1e-4, t
  assert t["names_per_s"] > 0 and r["encoding"]["names_per_s"] > 0
  assert t["batches"] >= 1 and 0 <= t["pad_fraction"] < 1
  capsys.readouterr()
  assert main(["bench-search", "--data", data, "--model", str(tmp_path),
               "--queries", "0", "--compare-torch"]) == 2
  assert "--compare-torch needs --model as a Hugging Face directory" in \
      capsys.readouterr().err
