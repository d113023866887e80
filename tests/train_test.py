"""Training: sharded steps on a 2x4 mesh, golden specs, one compilation,
kill-and-resume, restore on another mesh, two processes == one."""

import json
import os
import subprocess

import jax
import numpy as np
import pytest

from bali_jax import configs
from bali_jax.train import input_pipeline as data, sharding
from bali_jax.train.loop import jit_steps, train_and_evaluate
from bali_jax.train.state import create_state
from bali_jax.train.step import make_optimizer, train_step
from tests.cli_runs import (SHARED_STEP, losses, sigterm_self_after,
                             train_cli)
from tests.compiles import compilations

GOLDEN = os.path.join(os.path.dirname(__file__), "golden",
                      "param_specs_tiny_2x4.json")


def _cfg(data_dir, **kw):
  cfg = configs.get_config("tiny").replace(data_dir=data_dir)
  return configs.apply_overrides(cfg, [f"{k}={v}" for k, v in kw.items()])


@pytest.mark.slow(seconds=25)
def test_two_steps_on_2x4_mesh_with_golden_specs(tiny_dataset):
  # the kill sequence's config (2 x 4 mesh), resolved as a run resolves
  # it, and the loop's jitted step: the session's cache holds its program
  spec = data.load_spec(tiny_dataset)
  cfg = configs.resolve(
      _cfg(tiny_dataset, **SHARED_STEP),
      spec, jax.device_count(), 1, jax.default_backend())
  mesh = sharding.make_mesh(cfg)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  tx = make_optimizer(cfg)
  state, abstract, shardings = create_state(cfg, spec, tx, mesh,
                                            jax.random.key(0))
  # every parameter is sharded as its logical names say (golden file)
  table = sharding.spec_table(shardings.params)
  if os.environ.get("UPDATE_GOLDEN"):
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, "w") as f:
      json.dump(table, f, indent=1, sort_keys=True)
  with open(GOLDEN) as f:
    assert table == json.load(f)
  k = state.params["bert"]["encoder"]["layer_0"]["query"]["kernel"]
  assert k.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  before = jax.device_get(state.params)
  pipe = data.InputPipeline(tiny_dataset, spec, cfg, 0, 1)
  step, _, _ = jit_steps(cfg, spec, tx, mesh, shardings)
  losses = []
  for i, batch in pipe.train_batches(0):
    if i == 2:
      break
    state, m = step(state, sharding.global_batch(batch, mesh), jax.random.key(1))
    losses.append(float(m["loss"]))
    assert np.isfinite([float(v) for v in m.values()]).all()
  assert int(state.step) == 2
  after = jax.device_get(state.params)
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, after)
  assert all(jax.tree.leaves(moved["gnn"]))
  assert all(jax.tree.leaves(moved["mlm_head"]))
  assert moved["bert"]["encoder"]["layer_1"]["output"]["kernel"]
  assert not any(jax.tree.leaves(moved["bert"]["pooler"]))  # frozen


@pytest.mark.slow(seconds=85)
def test_linear_kind_trains_compiles_once_resumes_and_exports(
    tiny_dataset, tmp_path):
  """graph_encoder=linear with G-MLM and concept-name masking: one
  compilation, losses fall, SIGTERM + resume reproduce the uninterrupted
  run, and the export is a plain BERT (no graph encoder file). In-process:
  the CLI's SIGTERM path is the kill sequence's (faults_test)."""
  cfg = _cfg(tiny_dataset, steps=10, save_every=100, graph_encoder="linear",
             graph_mlm="true", concept_name_masking_prob=0.5, lr_lm=1e-3,
             lr_other=1e-3, log_every=1, mesh_data=2, mesh_fsdp=4)
  full = tmp_path / "full"
  with compilations() as names:
    train_and_evaluate(cfg, str(full))
  assert names.count("jit(bali_train_step)") == 1, names
  want = losses(full)
  first = np.mean([want[s][0] for s in (1, 2, 3)])
  last = np.mean([want[s][0] for s in (8, 9, 10)])
  print("linear kind: mean loss of steps 1-3 vs 8-10", first, last)
  assert last < first - 1.0, (first, last)
  rows = [json.loads(l) for l in open(full / "metrics.jsonl")]
  assert all(r["gmlm_loss"] > 0 for r in rows if "gmlm_loss" in r)
  part = tmp_path / "part"
  with sigterm_self_after(part, 4):
    train_and_evaluate(cfg, str(part))
  assert 4 <= max(losses(part)) < 10
  with compilations() as names:
    train_and_evaluate(cfg, str(part))  # the same call resumes
  assert losses(part) == want
  # restored, not initialised first and then overwritten
  assert "jit(bali_init)" not in names and "jit(init)" not in names, names
  from bali_jax.cli import main
  import transformers
  hf = tmp_path / "hf"
  assert main(["export-hf", "--source", str(full), "--out", str(hf)]) == 0
  model, info = transformers.AutoModel.from_pretrained(
      hf, output_loading_info=True)
  assert not info["missing_keys"]
  assert not (hf / "graph_encoder.safetensors").exists()


@pytest.mark.slow(seconds=95)
def test_two_processes_match_one_and_resume_elastically(tiny_dataset,
                                                         tmp_path, capsys):
  """2 processes x 2 devices (`jax.distributed` on localhost) train the same
  steps as this process with its 8 devices; the 2-process run, stopped
  after its step-2 checkpoint, resumes here (1 process, 8 devices: the data
  position is global; data_shards is taken from the saved run) with the
  losses of the uninterrupted run."""
  port = 20000 + os.getpid() % 20000
  procs = [train_cli(tmp_path / "two", tiny_dataset, "steps=3",
                      "save_every=2", "eval_batches=1", devices=2,
                      extra=("--num-processes", "2", "--process-id", str(i),
                             "--coordinator", f"127.0.0.1:{port}"))
           for i in range(2)]
  # meanwhile, the same steps in one process (2 input shards, as saved)
  train_and_evaluate(_cfg(tiny_dataset, steps=3, data_shards=2,
                          save_every=100, eval_batches=1),
                     str(tmp_path / "one"))
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-3000:]
  assert "2 process(es), 4 devices" in outs[0]
  assert json.load(open(tmp_path / "two" / "config.json"))[
      "data_shards"] == 2  # one per process, resolved and saved
  two = losses(tmp_path / "two")
  # the 2-process run "dies" after its step-2 checkpoint; it resumes in
  # this process and recomputes step 3
  import shutil
  shutil.rmtree(tmp_path / "two" / "checkpoints" / "3")
  capsys.readouterr()
  train_and_evaluate(_cfg(tiny_dataset, steps=3, save_every=2,
                          eval_batches=1), str(tmp_path / "two"))
  out = capsys.readouterr().out
  assert "resumed from step 2" in out and "1 process(es), 8 devices" in out
  one, resumed = losses(tmp_path / "one"), losses(tmp_path / "two")
  assert sorted(one) == sorted(two) == sorted(resumed) == [1, 2, 3]
  assert resumed[1] == two[1] and resumed[2] == two[2]  # kept from the log
  for s in one:
    np.testing.assert_allclose(one[s], two[s], rtol=1e-5)
    np.testing.assert_allclose(one[s], resumed[s], rtol=1e-5)


def test_config_errors_fail_before_compiling(tiny_dataset):
  spec = data.load_spec(tiny_dataset)
  cfg = _cfg(tiny_dataset)
  with pytest.raises(ValueError, match="batch_size=6 must be divisible"):
    configs.validate(cfg.replace(batch_size=6), 8, spec)
  with pytest.raises(ValueError, match="do not divide the 8 devices"):
    configs.validate(cfg.replace(mesh_fsdp=3), 8, spec)
  with pytest.raises(ValueError, match="30522-token vocabulary"):
    configs.validate(configs.apply_overrides(cfg, ["bert.vocab_size=1000"]),
                     8, spec)
  with pytest.raises(ValueError, match="unknown config key"):
    configs.apply_overrides(cfg, ["stepz=3"])
  c = configs.apply_overrides(cfg, ["steps=7", "gnn.heads=4",
                                    "bert.dtype=bfloat16", "lr_lm=3e-5"])
  assert (c.steps, c.model.gnn.heads, c.model.bert.dtype, c.lr_lm) == (
      7, 4, "bfloat16", 3e-5)
  # graph kinds and what the records must carry for them
  lin = configs.apply_overrides(cfg, ["graph_encoder=linear",
                                      "graph_mlm=true"])
  assert lin.model.graph_encoder == "linear" and lin.model.graph_mlm
  configs.validate(lin, 8, spec)
  no_lin = {**spec, "budgets": {**spec["budgets"], "lin_rows": 0}}
  with pytest.raises(ValueError, match="no linearised-subgraph rows"):
    configs.validate(lin, 8, no_lin)
  legacy = {**spec, "budgets": {k: v for k, v in spec["budgets"].items()
                                if k not in ("lin_rows", "lin_len",
                                             "max_lin_tokens",
                                             "masked_variants")}}
  configs.validate(cfg, 8, legacy)  # older datasets still train the GNN
  with pytest.raises(ValueError, match="built before records carried the "
                     "masked name variants"):
    configs.validate(cfg.replace(concept_name_masking_prob=0.15), 8, legacy)
  with pytest.raises(ValueError, match="graph_mlm needs graph_encoder=linear"):
    configs.apply_overrides(cfg, ["graph_mlm=true"])
  with pytest.raises(ValueError, match="graph_encoder 'gatv2'"):
    configs.apply_overrides(cfg, ["graph_encoder=gatv2"])


def test_batch_in_sentences_becomes_rows(tiny_dataset):
  spec = data.load_spec(tiny_dataset)
  per_row = spec["train_row_means"]["sentences"]
  cfg = _cfg(tiny_dataset, batch_sentences=40)
  rows = configs.resolve_batch(cfg, spec, 8).batch_size
  assert rows % 8 == 0 and abs(rows * per_row - 40) <= 4 * per_row
  assert configs.resolve_batch(cfg.replace(batch_sentences=1), spec,
                               8).batch_size == 8  # at least one per shard
  # presets count sentences; a batch_size typed alone is taken as rows
  base = configs.get_config("pubmedbert_base")
  assert base.batch_sentences == 256
  assert configs.apply_overrides(base, ["batch_size=64"]).batch_sentences == 0
  with pytest.raises(ValueError, match="older data_prep"):
    configs.resolve_batch(cfg, {**spec, "train_row_means": {}}, 8)


def test_resolve_takes_shards_from_the_saved_run_then_batch_and_dtype(
    tiny_dataset):
  """configs.resolve, the loop's one resolution: data_shards=0 is the saved
  run's count when resuming (else one per process), an explicit count is
  kept; batch_sentences becomes rows; `auto` compute is float32 on CPU;
  the result is validated."""
  spec = data.load_spec(tiny_dataset)
  cfg = _cfg(tiny_dataset, batch_sentences=40)
  assert configs.resolve(cfg, spec, 8, 2).data_shards == 2
  assert configs.resolve(cfg, spec, 8, 2,
                         saved={"data_shards": 4}).data_shards == 4
  assert configs.resolve(cfg.replace(data_shards=3), spec, 8, 2,
                         saved={"data_shards": 4}).data_shards == 3
  r = configs.resolve(cfg, spec, 8)
  assert r.batch_size == configs.resolve_batch(cfg, spec, 8).batch_size
  assert r.model.bert.dtype == "float32"
  assert configs.resolve(cfg, spec, 8, backend="tpu").model.bert.dtype == \
      "bfloat16"
  with pytest.raises(ValueError, match="do not divide the 8 devices"):
    configs.resolve(cfg.replace(mesh_fsdp=3), spec, 8)


def test_more_epochs_than_views_stops_before_compiling(tiny_dataset,
                                                       tmp_path):
  import shutil
  from data_prep.pipelines.add_views import add_views
  spec = data.load_spec(tiny_dataset)
  per_epoch = spec["splits"]["train_view0"] // 8
  cfg = _cfg(tiny_dataset, steps=2 * per_epoch + 1)  # 3 epochs, 2 views
  with compilations() as names:
    with pytest.raises(ValueError, match=r"need 3 epochs.*add-views --data "
                       rf"{tiny_dataset} --views 3"):
      train_and_evaluate(cfg, str(tmp_path / "run"))
  assert names == []  # refused before anything was compiled
  assert data.InputPipeline(tiny_dataset, spec, cfg.replace(
      allow_view_reuse=True), 0, 1).view(2) == "train_view0"
  more = str(tmp_path / "more")
  shutil.copytree(tiny_dataset, more)
  spec = add_views(more, 3)
  pipe = data.InputPipeline(more, spec, cfg.replace(data_dir=more), 0, 1)
  assert pipe.epochs_needed() == 3
  assert [pipe.view(e) for e in range(3)] == [f"train_view{v}"
                                             for v in range(3)]


def _launch(*args, env=None):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  e = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  e.update(env or {})
  return subprocess.run(["bash", "launch/train.sh", *args], cwd=root,
                        capture_output=True, text=True, env=e), root


def _commands(stdout):
  """The printed commands (`+ ...` lines), parsed as a shell would."""
  import shlex
  return [shlex.split(l[2:]) for l in stdout.splitlines()
          if l.startswith("+ ")]


def test_launch_local_dry_run_evaluates_then_exports_with_the_tables(
    tmp_path):
  """The main job: train, both before/after tables (the dataset's held-out
  sets, BC5CDR-disease test) with one CPU device per core, then the export
  whose model card carries both reports."""
  data = tmp_path / "data"
  data.mkdir()
  (data / "bali_dataset.json").write_text("{}")  # built: no data_prep
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text('{"init_from": "starter"}')
  job, _ = _launch("--dry-run", "--workdir", str(run), "--data-dir",
                   str(data))
  assert job.returncode == 0, job.stderr
  cmds = _commands(job.stdout)
  verbs = [c[c.index("-m") + 2] for c in cmds if "-m" in c]
  assert verbs == ["train", "evaluate", "evaluate", "export-hf"]
  ev = [c for c in cmds if "evaluate" in c]
  for c in ev:
    assert c[c.index("--num-cpu-devices") + 1] == str(
        len(os.sched_getaffinity(0)))  # what nproc counts
    assert [c[i + 1] for i, x in enumerate(c) if x == "--model"] == [
        "starter", str(run)]
  assert ev[0][ev[0].index("--data") + 1] == str(data)
  assert ev[1][ev[1].index("--benchmark") + 1] == "bc5cdr-disease"
  assert ev[1][ev[1].index("--split") + 1] == "test"
  reports = [c[i + 1] for c in cmds for i, x in enumerate(c)
             if x == "--eval-report"]
  assert reports == [c[c.index("--out") + 1] for c in ev]


def test_launch_tpu_pod_dry_run_uses_the_workers_paths():
  pod, root = _launch("--mode", "tpu-pod", "--tpu", "p", "--zone", "z",
                      "--dry-run", "--workdir", "gs://b/run", "--data-dir",
                      "gs://b/data", "steps=9")
  assert pod.returncode == 0, pod.stderr
  cmds = _commands(pod.stdout)
  head = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "p", "--zone", "z",
          "--worker=all", "--command"]
  remote = [c[-1] for c in cmds if c[:len(head)] == head]
  check, setup, recheck, train = remote
  assert check == recheck == ("cat bali_jax/BALI_STAMP 2>/dev/null || "
                              "echo missing")
  commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root,
                          capture_output=True, text=True).stdout.strip()
  archive = [c for c in cmds if c[:2] == ["git", "-C"]][0]
  assert archive[-1] == commit and "archive" in archive
  scp = [c for c in cmds if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm",
                                      "scp"]][0]
  assert scp[-5:] == [f"/tmp/bali_jax-{commit}.tar.gz",
                      "p:bali_jax-src.tar.gz", "--zone", "z", "--worker=all"]
  assert "pip install -q -r requirements.txt" in setup
  assert f"echo {commit} $(sha256sum requirements.txt" in setup
  assert setup.endswith("mv bali_jax.new bali_jax")
  # the train command runs from the workers' checkout and venv, never ours
  assert train.startswith("cd bali_jax && ")
  assert ".venv/bin/python -m bali_jax train --config open_default" in train
  assert "--workdir gs://b/run data_dir=gs://b/data steps=9" in train
  assert root not in train and root not in setup
  # a git URL instead of this checkout; a local workdir is warned about
  git, _ = _launch("--mode", "tpu-pod", "--tpu", "p", "--zone", "z",
                   "--dry-run", "--setup", "--git-url", "https://x/y.git",
                   "--commit", "abc123")
  assert git.returncode == 0, git.stderr
  setup = [c[-1] for c in _commands(git.stdout) if c[:5] == head[:5]][0]
  assert setup.startswith("rm -rf bali_jax.new && git clone -q "
                          "https://x/y.git bali_jax.new && git -C "
                          "bali_jax.new checkout -q abc123")
  assert "warning" in git.stderr and "gs://" in git.stderr
  assert not [c for c in _commands(git.stdout) if c[0] == "git"]
  assert _launch("--mode", "tpu-pod", "--dry-run")[0].returncode == 2
  assert _launch("--bogus")[0].returncode == 2


def test_launch_slurm_writes_a_valid_sbatch_script(tmp_path):
  job = tmp_path / "job.sbatch"
  out, root = _launch("--mode", "slurm", "--dry-run", "--nodes", "2",
                      "--gpus-per-node", "8", "--time", "01:30:00",
                      "--partition", "gpu", "--account", "proj",
                      "--process-per", "gpu", "--sbatch-out", str(job),
                      "--workdir", "/shared/run", "--data-dir", "/shared/d",
                      "steps=5")
  assert out.returncode == 0, out.stderr
  text = job.read_text()
  assert subprocess.run(["bash", "-n", str(job)]).returncode == 0
  for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8",
               "#SBATCH --gpus-per-node=8", "#SBATCH --time=01:30:00",
               "#SBATCH --partition=gpu", "#SBATCH --account=proj"):
    assert line in text.splitlines()
  srun = [l for l in text.splitlines() if l.startswith("srun ")][0]
  assert "--gpus-per-task=1" in srun and "--kill-on-bad-exit=1" in srun
  assert "train --config open_default --workdir /shared/run" in srun
  assert "data_dir=/shared/d steps=5" in srun
  assert "export-hf --source /shared/run" in text
  assert ["sbatch", str(job)] in _commands(out.stdout)  # printed, submitted
  assert text in out.stdout  # shown before submission
  # one process per node with all its GPUs
  job2 = tmp_path / "node.sbatch"
  _launch("--mode", "slurm", "--dry-run", "--sbatch-out", str(job2))
  assert "#SBATCH --ntasks-per-node=1" in job2.read_text()
  assert "--gpus-per-task" not in job2.read_text()
  # inside an allocation: srun directly, as before
  inside, _ = _launch("--mode", "slurm", "--dry-run", "--data-dir", "/d",
                      env={"SLURM_JOB_ID": "7"})
  cmds = _commands(inside.stdout)
  assert cmds[0][:2] == ["srun", "--kill-on-bad-exit=1"]
  assert "data_dir=/d" in cmds[0] and "export-hf" in cmds[1]
  assert _launch("--mode", "slurm", "--process-per", "core",
                 "--dry-run")[0].returncode == 2


@pytest.mark.slow(seconds=25)
def test_accumulation_equals_one_big_batch(tiny_dataset):
  """GradCache: with dropout off and the same masks, 4 micro-batches give
  the loss, metrics and gradients of one batch of 4x the rows to 1e-5
  (float32), alignment and T-TCL included; a mean of per-micro-batch
  losses (fewer negatives, MLM a mean of means) does not."""
  import flax.linen as nn
  from bali_jax.model.bali import BaliModel
  from bali_jax.train.step import (corrupt, grads_accumulated,
                                   _grads_one_batch, init_state)
  off = {"bert.hidden_dropout_prob": 0, "bert.attention_probs_dropout_prob":
         0, "gnn.dropout": 0, "gnn.attention_dropout": 0,
         "model.textual_contrastive_weight": 1}
  cfg = _cfg(tiny_dataset, grad_accum_steps=4, **off)
  spec = data.load_spec(tiny_dataset)
  pipe = data.InputPipeline(tiny_dataset, spec, cfg, 0, 1)
  _, batch = next(pipe.train_batches(0))
  assert batch["input_ids"].shape[0] == 8
  r_mask, r_drop = jax.random.split(jax.random.key(3))
  b = jax.jit(lambda x, r: corrupt(cfg, spec, x, r))(batch, r_mask)
  tx = make_optimizer(cfg)
  params = nn.meta.unbox(init_state(cfg, jax.random.key(0), b, tx).params)
  model = BaliModel(cfg.model)
  g1, m1 = jax.jit(lambda p: _grads_one_batch(model, p, b, r_drop))(params)
  g4, m4 = jax.jit(lambda p: grads_accumulated(model, cfg, p, b, r_drop,
                                                4))(params)
  for k in ("loss", "mlm_loss", "align_loss", "tcl_loss", "align_accuracy",
            "num_positive_pairs", "num_mlm_tokens"):
    np.testing.assert_allclose(float(m4[k]), float(m1[k]), rtol=1e-5,
                               atol=1e-6, err_msg=k)

  # 1e-5 relative to each leaf's largest gradient; leaves whose true
  # gradient is zero (attention key biases: softmax ignores a shift shared
  # by all keys) hold only round-off, compared at 1e-3 of the largest
  top = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(g1))

  def err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))),
                                              1e-3 * top)

  errs = jax.tree_util.tree_leaves_with_path(jax.tree.map(err, g4, g1))
  assert max(e for _, e in errs) < 1e-5, max(errs, key=lambda kv: kv[1])
  assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(g1["gnn"]))
  # what accumulation used to compute: per-micro-batch losses, averaged
  micro = jax.tree.map(lambda x: x.reshape((4, -1) + x.shape[1:]), b)
  apply = jax.jit(lambda p, mb: model.apply({"params": p}, mb)["loss"])
  per = [float(apply(params, jax.tree.map(lambda x: x[i], micro)))
         for i in range(4)]
  assert abs(np.mean(per) - float(m1["loss"])) > 1e-3


@pytest.mark.slow(seconds=15)
def test_accumulation_equals_one_big_batch_linear_kind(tiny_dataset):
  """The same for graph_encoder=linear with G-MLM and concept-name masking:
  losses and gradients of 4 micro-batches equal one batch (1e-5)."""
  import flax.linen as nn
  from bali_jax.model.bali import BaliModel
  from bali_jax.train.step import (corrupt, grads_accumulated,
                                   _grads_one_batch, init_state)
  cfg = _cfg(tiny_dataset, grad_accum_steps=4, graph_encoder="linear",
             graph_mlm="true", concept_name_masking_prob=0.5,
             **{"bert.hidden_dropout_prob": 0,
                "bert.attention_probs_dropout_prob": 0})
  spec = data.load_spec(tiny_dataset)
  pipe = data.InputPipeline(tiny_dataset, spec, cfg, 0, 1)
  _, batch = next(pipe.train_batches(0))
  assert "lin_ids" in batch and "name_ids" not in batch
  b = jax.jit(lambda x, r: corrupt(cfg, spec, x, r))(batch,
                                                      jax.random.key(3))
  assert int(b["lin_mlm_weights"].sum()) > 0
  params = nn.meta.unbox(init_state(cfg, jax.random.key(0), b,
                                    make_optimizer(cfg)).params)
  assert "gnn" not in params
  model = BaliModel(cfg.model)
  r = jax.random.key(4)
  g1, m1 = jax.jit(lambda p: _grads_one_batch(model, p, b, r))(params)
  g4, m4 = jax.jit(lambda p: grads_accumulated(model, cfg, p, b, r,
                                                4))(params)
  for k in ("loss", "mlm_loss", "align_loss", "gmlm_loss"):
    np.testing.assert_allclose(float(m4[k]), float(m1[k]), rtol=1e-5,
                               err_msg=k)
  assert float(m1["gmlm_loss"]) > 0
  top = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(g1))
  errs = jax.tree.leaves(jax.tree.map(
      lambda a, b_: float(np.max(np.abs(np.asarray(a) - np.asarray(b_))))
      / max(float(np.max(np.abs(np.asarray(b_)))), 1e-3 * top), g4, g1))
  assert max(errs) < 1e-5


def _scan_lengths(jaxpr) -> list[int]:
  """Trip counts of every scan in a (closed) jaxpr, nested ones too."""
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      out.append(eqn.params["length"])
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else [v]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          out += _scan_lengths(inner)
  return out


def _one_step(cfg, spec, batch, mesh):
  """The jitted train step from a fresh state (seed 0); (before, after,
  metrics, trip counts of the step's scans)."""
  tx = make_optimizer(cfg)
  state, _, _ = create_state(cfg, spec, tx, mesh, jax.random.key(0))
  before = jax.device_get(state.params)
  step = jax.jit(lambda s, b, r: train_step(s, b, r, cfg=cfg, spec=spec,
                                            tx=tx))
  args = (state, sharding.global_batch(batch, mesh), jax.random.key(1))
  traced = step.trace(*args)  # one trace: its jaxpr, then its executable
  scans = _scan_lengths(traced.jaxpr.jaxpr)
  state, m = traced.lower().compile()(*args)
  return before, jax.device_get(state.params), jax.device_get(m), scans


@pytest.mark.slow(seconds=55)
def test_accumulation_through_the_step_equals_one_batch_and_bf16_step(
    tiny_dataset):
  """Through `train_step`: 4 accumulated micro-batches (dropout off; the
  step runs them as 4-trip scans) give the losses and gradient norm of one
  batch (1e-5) and the same update; bf16 compute keeps float32 master
  params and gives the float32 step's losses at a bf16 tolerance."""
  off = {"bert.hidden_dropout_prob": 0, "bert.attention_probs_dropout_prob":
         0, "gnn.dropout": 0, "gnn.attention_dropout": 0}
  spec = data.load_spec(tiny_dataset)
  cfg = _cfg(tiny_dataset, **off)
  mesh = sharding.make_mesh(cfg)
  _, batch = next(data.InputPipeline(tiny_dataset, spec, cfg, 0,
                                     1).train_batches(0))
  p0, p1, m1, scans1 = _one_step(cfg, spec, batch, mesh)
  _, p4, m4, scans4 = _one_step(cfg.replace(grad_accum_steps=4), spec,
                                batch, mesh)
  assert 4 not in scans1 and scans4.count(4) == 2, (scans1, scans4)
  for k in ("loss", "mlm_loss", "align_loss", "grad_norm",
            "num_mlm_tokens", "num_entities"):
    np.testing.assert_allclose(m4[k], m1[k], rtol=1e-5, err_msg=k)
  # AdamW's first update is lr * g / (|g| + eps): equal wherever |g| is
  # above round-off (key biases have a true gradient of 0)
  lr = max(cfg.lr_lm, cfg.lr_other)
  d1 = np.concatenate([np.ravel(a - b) for a, b in zip(
      jax.tree.leaves(p1), jax.tree.leaves(p0))])
  d4 = np.concatenate([np.ravel(a - b) for a, b in zip(
      jax.tree.leaves(p4), jax.tree.leaves(p0))])
  off_by = np.abs(d4 - d1) > 1e-3 * lr
  assert np.mean(off_by) < 1e-3, np.mean(off_by)
  assert np.mean(np.abs(d1) > 0.5 * cfg.lr_lm) > 0.5  # the step moved

  bf = _cfg(tiny_dataset, **off, **{"bert.dtype": "bfloat16"})
  _, pb, mb, _ = _one_step(bf, spec, batch, mesh)
  assert pb["bert"]["encoder"]["layer_0"]["query"]["kernel"].dtype == \
      np.float32
  for k in ("loss", "mlm_loss", "align_loss", "grad_norm"):
    np.testing.assert_allclose(mb[k], m1[k], rtol=2e-2, err_msg=k)
  assert mb["loss"] != m1["loss"]  # it did compute in bfloat16


def test_init_from_checks_tokenizer_and_loads_bert(tiny_dataset, tmp_path):
  from bali_jax.hf import export as hf_export
  from bali_jax.model.bert import init_params
  from bali_jax.hf.tokenizer import load_tokenizer
  from tests.export_hf_test import wordpiece_tokenizer
  cfg = _cfg(tiny_dataset)
  spec = data.load_spec(tiny_dataset)
  bert = init_params(cfg.model.bert, jax.random.key(5), mlm_head=False)
  other = tmp_path / "other_vocab"
  hf_export.export_hf(cfg.model.bert, bert, str(other),
                      wordpiece_tokenizer(tmp_path, 30522), progress=False)
  mesh = sharding.make_mesh(cfg)
  tx = make_optimizer(cfg)
  with pytest.raises(ValueError, match="its tokenizer differs"):
    create_state(cfg.replace(init_from=str(other)), spec, tx, mesh,
                 jax.random.key(0))
  same = tmp_path / "same_vocab"
  hf_export.export_hf(cfg.model.bert, bert, str(same),
                      load_tokenizer(os.path.join(tiny_dataset, "tokenizer")),
                      progress=False)
  state, _, _ = create_state(cfg.replace(init_from=str(same)), spec, tx,
                             mesh, jax.random.key(0))
  got = jax.device_get(state.params["bert"])
  jax.tree.map(np.testing.assert_array_equal, got,
               jax.device_get(bert["bert"]))


@pytest.mark.slow(seconds=20)
def test_frozen_bert_warmup_moves_only_heads_and_gnn(tiny_dataset):
  """freeze_bert_steps=2: the BERT is bit-identical for exactly two steps
  (rate 0) while the MLM head and the GNN move; the third step moves it.
  No warm-up, so the first rate after the freeze is the peak: a freeze one
  step too long or too short fails."""
  cfg = _cfg(tiny_dataset, steps=6, freeze_bert_steps=2, mesh_data=8,
             warmup_ratio=0)
  spec = data.load_spec(tiny_dataset)
  mesh = sharding.make_mesh(cfg)
  tx = make_optimizer(cfg)
  state, _, _ = create_state(cfg, spec, tx, mesh, jax.random.key(0))
  start = jax.device_get(state.params)
  pipe = data.InputPipeline(tiny_dataset, spec, cfg, 0, 1)
  step = jax.jit(lambda s, b, r: train_step(s, b, r, cfg=cfg, spec=spec,
                                            tx=tx))
  snaps, lrs = [start], []
  for i, batch in pipe.train_batches(0):
    if i == 3:
      break
    state, m = step(state, sharding.global_batch(batch, mesh), jax.random.key(1))
    snaps.append(jax.device_get(state.params))
    lrs.append(float(m["lr_lm"]))
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(
      lambda x, y: bool(np.array_equal(x, y)), a, b)))
  for prev, s in zip(snaps[:2], snaps[1:3]):  # frozen: BERT identical
    assert same(prev["bert"], s["bert"])
    assert not same(prev["gnn"], s["gnn"])
    assert not same(prev["mlm_head"], s["mlm_head"])
  assert lrs == [0.0, 0.0, pytest.approx(cfg.lr_lm)]
  moved = jax.tree.map(lambda x, y: bool(np.any(x != y)),
                       snaps[2]["bert"], snaps[3]["bert"])
  assert moved["encoder"]["layer_0"]["query"]["kernel"]
  assert not any(jax.tree.leaves(moved["pooler"]))  # never trained
