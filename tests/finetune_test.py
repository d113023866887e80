"""Downstream fine-tuning (issue 14): readers of the public formats, heads
against transformers, the exported task models, and a learnable toy task
end to end through the CLI (best-on-dev export, SIGTERM + exact resume)."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bali_jax.finetune import tasks
from bali_jax.finetune.tasks import TaskDataError, read_task
from tests.cli_runs import loss_rows, subprocess_env

# ------------------------------------------------------------------ readers


def _write(path, obj):
  with open(path, "w") as f:
    if isinstance(obj, str):
      f.write(obj)
    else:
      json.dump(obj, f)
  return str(path)


def _jsonl(path, rows):
  return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def test_readers_accept_public_formats(tmp_path):
  p = _write(tmp_path / "ori_pqal.json", {
      "21645374": {"QUESTION": "Do mitochondria play a role?",
                   "CONTEXTS": ["Programmed cell death.", "Results."],
                   "final_decision": "yes"},
      "16418930": {"QUESTION": "Q2?", "CONTEXTS": ["c"],
                   "final_decision": "maybe"}})
  d = read_task("pubmedqa", p)
  assert (d.kind, d.labels) == ("single", ["yes", "no", "maybe"])
  assert [e.label for e in d.examples] == [0, 2]
  assert d.examples[0].pairs == [("Do mitochondria play a role?",
                                  "Programmed cell death. Results.")]
  b = _write(tmp_path / "training11b.json", {"questions": [
      {"id": "a1", "type": "yesno", "body": "Is X a gene?",
       "exact_answer": "yes", "snippets": [{"text": "X is a gene."}]},
      {"id": "a2", "type": "factoid", "body": "Which?", "exact_answer": [["Y"]]},
      {"id": "a3", "type": "yesno", "body": "Is Z?", "exact_answer": "no"}]})
  d = read_task("bioasq-yesno", b)
  assert [e.label for e in d.examples] == [0, 1] and d.skipped == 1
  assert d.examples[0].pairs == [("Is X a gene?", None)]  # question only
  assert read_task("bioasq-yesno", b, snippets=True).examples[0].pairs == [
      ("Is X a gene?", "X is a gene.")]
  m = _jsonl(tmp_path / "train.jsonl", [
      {"question": "Q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
       "answer_idx": "C"}])
  d = read_task("medqa", m)
  assert d.kind == "choice" and d.labels == ["A", "B", "C", "D"]
  assert d.examples[0].label == 2 and d.examples[0].pairs[3] == ("Q?", "d")
  s = _jsonl(tmp_path / "hoc.jsonl", [
      {"id": "1", "sentence": "s1", "label": ["b", "a"]},
      {"id": "2", "sentence": "s2", "label": []},
      {"id": "3", "sentence": "s3", "label": ["c"]}])
  d = read_task("seqcls", s)
  assert d.kind == "multi" and d.labels == ["a", "b", "c"]
  assert [e.label for e in d.examples] == [[0, 1], [], [2]]
  t = _write(tmp_path / "pairs.tsv",
             "id\tsentence1\tsentence2\tlabel\nx\tA b\tC d\tentail\n"
             "y\tE\tF\tneutral\n")
  d = read_task("seqcls", t)
  assert d.kind == "single" and d.labels == ["entail", "neutral"]
  assert d.examples[1].pairs == [("E", "F")]


@pytest.mark.parametrize("case", ["pubmedqa-answer", "bioasq-answer",
                                  "medqa-options", "seqcls-label",
                                  "medqa-answer", "not-json"])
def test_readers_reject_malformed_naming_file_and_record(tmp_path, case):
  if case == "pubmedqa-answer":
    p = _write(tmp_path / "f.json", {"1": {"QUESTION": "q", "CONTEXTS": ["c"],
                                           "final_decision": "yes"},
                                     "77": {"QUESTION": "q",
                                            "CONTEXTS": ["c"]}})
    with pytest.raises(TaskDataError, match=r"f\.json: record 77: missing "
                       "'final_decision'"):
      read_task("pubmedqa", p)
  elif case == "bioasq-answer":
    p = _write(tmp_path / "f.json", {"questions": [
        {"id": "q9", "type": "yesno", "body": "b", "exact_answer": "perhaps"}]})
    with pytest.raises(TaskDataError, match=r"question 0 \(q9\): label "
                       "'perhaps' is not in the label set"):
      read_task("bioasq-yesno", p)
  elif case in ("medqa-options", "medqa-answer"):
    opts = {"A": "a", "B": "b", "C": "c", "D": "d"}
    rows = [{"question": "q", "options": opts, "answer_idx": "A"}]
    rows.append({"question": "q", "options": {"A": "a", "B": "b", "C": "c"},
                 "answer_idx": "A"} if case == "medqa-options" else
                {"question": "q", "options": opts, "answer_idx": "E"})
    p = _jsonl(tmp_path / "f.jsonl", rows)
    msg = ("option count mismatch" if case == "medqa-options"
           else "label 'E' is not in the label set")
    with pytest.raises(TaskDataError, match=rf"f\.jsonl: line 2: .*{msg}"):
      read_task("medqa", p)
  elif case == "seqcls-label":
    train = read_task("seqcls", _jsonl(tmp_path / "t.jsonl", [
        {"sentence": "a", "label": "pos"}, {"sentence": "b", "label": "neg"}]))
    p = _jsonl(tmp_path / "dev.jsonl", [{"sentence": "a", "label": "pos"},
                                        {"sentence": "c", "label": "meh"}])
    with pytest.raises(TaskDataError, match=r"dev\.jsonl: line 2: label "
                       "'meh' is not in the label set"):
      read_task("seqcls", p, like=train)
  else:
    p = _write(tmp_path / "f.jsonl", '{"sentence": "a", "label": "x"}\n{oops\n')
    with pytest.raises(TaskDataError, match=r"f\.jsonl: line 2: not JSON"):
      read_task("seqcls", p)


def test_blurb_binary_vectors_hoc_and_prf1_metrics(tmp_path):
  """LinkBERT's BLURB files: HoC labels as 0/1 vectors, scored per document
  (`eval_hoc`); ChemProt-style PRF1 without the negative class. References
  ported from run_seqcls."""
  from bali_jax.finetune import batches as tb
  p = _jsonl(tmp_path / "hoc.jsonl", [
      {"id": "d1_s0", "sentence": "a", "label": [0, 1, 0]},
      {"id": "d1_s1", "sentence": "b", "label": [1, 0, 0]},
      {"id": "d2_s0", "sentence": "c", "label": [0, 0, 0]}])
  d = read_task("seqcls", p)
  assert d.kind == "multi" and d.labels == ["0", "1", "2"]
  assert [e.label for e in d.examples] == [[1], [0], []]
  bad = _jsonl(tmp_path / "bad.jsonl", [{"sentence": "a", "label": [0, 1]},
                                        {"sentence": "b", "label": [1]}])
  with pytest.raises(TaskDataError, match=r"bad\.jsonl: line 2: label "
                     "vector of length 1"):
    read_task("seqcls", bad)
  rng = np.random.default_rng(0)
  gold = rng.integers(0, 2, (40, 10))
  pred = rng.integers(0, 2, (40, 10))
  ids = [f"doc{i // 3}_{i % 3}" for i in range(40)]
  docs = {}
  for i, u in enumerate(ids):  # eval_hoc: union per document, then PRF
    t, q = docs.setdefault(u.split("_")[0], (set(), set()))
    t.update(np.flatnonzero(gold[i]))
    q.update(np.flatnonzero(pred[i]))
  y = np.array([[int(j in t) for j in range(10)] for t, _ in docs.values()])
  yp = np.array([[int(j in q) for j in range(10)] for _, q in docs.values()])
  tp = ((yp == y) & (yp != 0)).sum()
  ref_p, ref_r = tp / (yp != 0).sum(), tp / (y != 0).sum()
  got = tb.metrics("multi", np.where(pred, 1.0, -1.0), gold.astype(np.float32),
                   10, ids)
  assert got["hoc_precision"] == pytest.approx(ref_p)
  assert got["hoc_recall"] == pytest.approx(ref_r)
  assert got["hoc_f1"] == pytest.approx(2 * ref_p * ref_r / (ref_p + ref_r))
  labels = rng.integers(0, 4, 50)
  logits = rng.normal(size=(50, 4))
  pr = logits.argmax(-1)
  neg = 2  # PRF1 with class 2 as "false" (run_seqcls has it at index 0)
  tp = ((pr == labels) & (pr != neg)).sum()
  P, R = tp / (pr != neg).sum(), tp / (labels != neg).sum()
  got = tb.metrics("single", logits, labels, 4, negative=neg)
  assert (got["precision"], got["recall"]) == pytest.approx((P, R))
  assert got["f1"] == pytest.approx(2 * P * R / (P + R))
  assert got["accuracy"] == pytest.approx((pr == labels).mean())


def test_kfold_folds_are_disjoint_and_cover():
  parts = tasks.folds(1000, 10, seed=42)
  flat = [i for p in parts for i in p]
  assert len(parts) == 10 and sorted(flat) == list(range(1000))
  assert all(len(p) == 100 for p in parts)
  assert parts == tasks.folds(1000, 10, seed=42)
  assert parts != tasks.folds(1000, 10, seed=43)
  from bali_jax.finetune.runner import FinetuneConfig, plan_runs
  from bali_jax.finetune.batches import Encoded
  z = np.zeros((50, 4), np.int32)
  enc = Encoded(z, z, z, np.zeros(50, np.int32), [str(i) for i in range(50)])
  runs = plan_runs(FinetuneConfig(folds=5, seeds=2), enc, None, None)
  assert len(runs) == 10
  for r in runs[:5]:  # per seed: dev folds disjoint, cover, train = rest
    assert not set(r.dev.uids) & set(r.train.uids)
    assert len(r.dev) + len(r.train) == 50
  assert sorted(u for r in runs[:5] for u in r.dev.uids) == sorted(enc.uids)
  assert {r.seed for r in runs} == {42, 43}


def test_a_preempted_run_stops_the_whole_job(tmp_path, monkeypatch, toy):
  """SIGTERM in one run of a multi-run job (seeds, folds, several models)
  ends the job: no later run or model starts until the command is rerun."""
  from bali_jax.finetune import run as finetune_run, runner as finetune
  started = []

  def run_one(run, *args):
    started.append(run.name)
    return None  # what run_one returns after saving on SIGTERM
  monkeypatch.setattr(finetune_run, "run_one", run_one)
  cfg = finetune.FinetuneConfig(seeds=3, max_length=16)
  out = finetune.compare("seqcls", ["starter", "starter"], toy["train"],
                         toy["dev"], None, str(tmp_path), cfg)
  assert started == ["seed42"] and out == [{"preempted": True}]
  assert not (tmp_path / "comparison.md").exists()


# ------------------------------------------------- heads against transformers
def _tiny_bert():
  from bali_jax.model.config import BertConfig
  return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=64)


@pytest.mark.parametrize("kind", ["single", "multi", "choice"])
def test_heads_match_transformers_and_export_loads(tmp_path, kind):
  import jax
  import torch
  import transformers
  from bali_jax.finetune.tasks import TaskData
  from bali_jax.hf.export import export_task_model
  from bali_jax.hf.tokenizer import load_tokenizer
  from bali_jax.model.heads import BertClassifier
  from bali_jax.open_data import starter_model_dir
  cfg = _tiny_bert()
  labels = ["A", "B", "C", "D"] if kind == "choice" else ["x", "y", "z"]
  model = BertClassifier(cfg, len(labels), kind)
  rng = np.random.default_rng(0)
  shape = (3, 4, 12) if kind == "choice" else (3, 12)
  ids = rng.integers(1000, 2000, shape).astype(np.int32)
  mask = np.ones(shape, np.int32)
  mask[..., 9:] = 0
  tt = np.zeros(shape, np.int32)
  tt[..., 5:9] = 1
  import flax.linen as nn
  params = nn.meta.unbox(model.init(jax.random.key(1), ids, mask, tt)["params"])
  params = jax.tree.map(lambda x: x + 0.02 * np.asarray(  # non-zero biases
      jax.random.normal(jax.random.key(2), x.shape)), params)
  ours = np.asarray(model.apply({"params": params}, ids, mask, tt))
  data = TaskData("t", kind, labels, [])
  out = str(tmp_path / "hf")
  export_task_model(model, jax.device_get(params), data, out,
                    load_tokenizer(starter_model_dir()))
  cls = {"choice": transformers.BertForMultipleChoice}.get(
      kind, transformers.BertForSequenceClassification)
  auto = {"choice": transformers.AutoModelForMultipleChoice}.get(
      kind, transformers.AutoModelForSequenceClassification)
  hf, info = auto.from_pretrained(out, output_loading_info=True)
  assert type(hf) is cls
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  if kind != "choice":
    assert hf.config.id2label == dict(enumerate(labels))
    assert hf.config.problem_type == ("multi_label_classification"
                                      if kind == "multi" else
                                      "single_label_classification")
  with torch.no_grad():
    theirs = hf.eval()(input_ids=torch.tensor(ids, dtype=torch.long),
                       attention_mask=torch.tensor(mask, dtype=torch.long),
                       token_type_ids=torch.tensor(tt, dtype=torch.long)
                       ).logits.numpy()
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


# ------------------------------------------------------ toy task, end to end
KEYWORDS = {"pos": "alpha", "neg": "beta"}
FILLER = ("the patient cohort study showed increased levels of serum markers "
          "in children with chronic disease after treatment").split()


def _toy(path, n, seed):
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    label = "pos" if rng.random() < 0.5 else "neg"
    words = list(rng.choice(FILLER, 8))
    words.insert(int(rng.integers(0, 9)), KEYWORDS[label])
    rows.append({"id": f"{seed}-{i}", "sentence": " ".join(words),
                 "label": label})
  return _jsonl(path, rows)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
  """The keyword task's files (the open starter BERT learns it in an
  epoch or two)."""
  d = tmp_path_factory.mktemp("toy")
  return {"model": "starter", "train": _toy(d / "train.jsonl", 64, 0),
          "dev": _toy(d / "dev.jsonl", 32, 1),
          "test": _toy(d / "test.jsonl", 32, 2)}


TOY = ("lr=1e-4", "batch_size=16", "epochs=3", "max_length=16", "patience=0")


def _cli_args(toy, workdir, *extra):
  return [sys.executable, "-m", "bali_jax", "finetune", "--task", "seqcls",
          "--model", toy["model"], "--train", toy["train"], "--dev",
          toy["dev"], "--test", toy["test"], "--workdir", str(workdir),
          *TOY, *extra]


def _cli(toy, workdir, *extra):
  cmd = _cli_args(toy, workdir, *extra) + ["--num-cpu-devices", "2"]
  return subprocess.Popen(cmd, env=subprocess_env(optimized=True),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _losses(run_dir):
  return {r["step"]: r["loss"] for r in loss_rows(run_dir)}


@pytest.mark.slow(seconds=90)
def test_toy_task_learns_exports_best_and_resumes_exactly(tmp_path, toy,
                                                          capsys):
  import torch
  import transformers
  from safetensors.numpy import load_file
  full = tmp_path / "full"
  proc = _cli(toy, full)
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0, out[-3000:]
  res = json.load(open(full / "results.json"))
  run = res["runs"][0]
  assert run["dev"]["accuracy"] >= 0.95, run["history"]
  assert run["test"]["accuracy"] >= 0.9
  assert "| seqcls |" in out and run["train_step_compilations"] == 1
  # the exported model is the best-on-dev epoch's, not the last one's
  best = max(run["history"], key=lambda h: h["accuracy"])
  assert run["best_epoch"] == best["epoch"]
  assert run["dev"]["accuracy"] == best["accuracy"]
  hf_dir = full / "seed42" / "hf"
  hf = transformers.AutoModelForSequenceClassification.from_pretrained(
      hf_dir).eval()
  assert hf.config.id2label == {0: "neg", 1: "pos"}
  preds = [json.loads(x) for x in open(full / "seed42" /
                                       "predictions_test.jsonl")]
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  rows = [json.loads(x) for x in open(toy["test"])]
  enc = tok([r["sentence"] for r in rows], truncation=True, max_length=16,
            padding="max_length", return_tensors="pt")
  with torch.no_grad():
    logits = hf(**enc).logits.numpy()
  np.testing.assert_allclose(logits, [p["logits"] for p in preds], atol=1e-4)
  assert [hf.config.id2label[int(k)] for k in logits.argmax(-1)] == [
      p["prediction"] for p in preds]
  # the export holds the best epoch's head, which the last state does not
  w = load_file(str(hf_dir / "model.safetensors"))
  ck = _restore(full / "seed42" / "checkpoints", run["steps"])
  np.testing.assert_array_equal(
      w["classifier.weight"], ck["best"]["classifier"]["kernel"].T)
  # the toy's dev accuracy peaks before the last epoch (0.375, 1.0, 1.0:
  # ties keep the earlier epoch), so the last state is not the best one
  assert run["best_epoch"] < len(run["history"]) - 1, run["history"]
  last = ck["train"]["params"]
  assert not np.array_equal(w["classifier.weight"],
                            last["classifier"]["kernel"].T)
  # SIGTERM mid-run, resume with the same command: the same steps and losses
  part = tmp_path / "part"
  proc = _cli(toy, part)
  deadline = time.time() + 600
  while time.time() < deadline and len(_losses(part / "seed42")) < 5:
    if proc.poll() is not None:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0 and "SIGTERM: saved step" in out, out[-3000:]
  assert not (part / "results.json").exists()
  proc = _cli(toy, part)
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0 and "resumed at step" in out, out[-3000:]
  a, b = _losses(full / "seed42"), _losses(part / "seed42")
  assert sorted(a) == sorted(b) == list(range(1, 13))
  np.testing.assert_allclose([b[s] for s in sorted(b)],
                             [a[s] for s in sorted(a)], rtol=1e-6)
  res2 = json.load(open(part / "results.json"))["runs"][0]
  assert res2["history"] == run["history"] and res2["test"] == run["test"]
  assert res2["train_step_compilations"] == 1
  # the same workdir with other settings is refused, naming the key (in
  # process: bad input needs no second interpreter)
  from bali_jax.cli import main
  argv = _cli_args(toy, part, "epochs=4")
  files = sorted(str(p) for p in part.rglob("*"))
  assert main(argv[argv.index("finetune"):]) == 2
  assert "differing: epochs (3 -> 4)" in capsys.readouterr().err
  assert sorted(str(p) for p in part.rglob("*")) == files


def _restore(directory, step):
  """A checkpoint's state as NumPy, read with Orbax as a user would."""
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(str(directory), item_handlers={
      "state": ocp.StandardCheckpointHandler(),
      "meta": ocp.JsonCheckpointHandler()})
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  mngr.close()
  return out["state"]
