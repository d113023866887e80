"""Faults a long run meets: SIGKILL anywhere (inside a checkpoint save
too), non-finite steps, a resume with another config, truncated or cut
record files."""

import dataclasses
import glob
import json
import os
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bali_jax import configs
from bali_jax.train import input_pipeline as data, sharding
from bali_jax.train.checkpoint import Checkpointer
from bali_jax.train.loop import BadStepsError, jit_steps, train_and_evaluate
from bali_jax.train.state import abstract_state, create_state
from bali_jax.train.step import make_optimizer
from tests.cli_runs import SHARED_STEP, UNINTERRUPTED, losses, train_cli
from tests.compiles import compilations


def _cfg(data_dir, **kw):
  cfg = configs.get_config("tiny").replace(data_dir=data_dir)
  return configs.apply_overrides(cfg, [f"{k}={v}" for k, v in kw.items()])


def _same(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(
      lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y),
                                       equal_nan=True)), a, b)))


@pytest.mark.slow(seconds=20)
def test_a_non_finite_step_is_skipped_and_a_finite_one_applied(tiny_dataset):
  # the loop's jitted step of the tiny preset (a 4-step run: no warm-up,
  # the first update is not at a zero rate), as a run of it compiles it
  spec = data.load_spec(tiny_dataset)
  cfg = configs.resolve(_cfg(tiny_dataset), spec, jax.device_count(), 1,
                        jax.default_backend())
  mesh = sharding.make_mesh(cfg)
  tx = make_optimizer(cfg)
  state, _, shardings = create_state(cfg, spec, tx, mesh, jax.random.key(0))
  pipe = data.InputPipeline(tiny_dataset, spec, cfg, 0, 1)
  _, batch = next(pipe.train_batches(0))
  jitted, _, _ = jit_steps(cfg, spec, tx, mesh, shardings)
  copy = lambda s: jax.tree.map(jnp.copy, s)  # the step donates its state
  step = lambda s, b: jitted(copy(s), b, jax.random.key(1))
  batch = sharding.global_batch(batch, mesh)
  head = dict(state.params["mlm_head"])
  head["bias"] = head["bias"].at[5].set(jnp.nan)  # poison: loss is NaN
  bad = state.replace(params={**state.params, "mlm_head": head})
  before = jax.device_get((bad.params, bad.opt_state))
  out, m = step(bad, batch)
  assert int(m["skipped"]) == 1 and not np.isfinite(float(m["loss"]))
  assert int(out.step) == int(bad.step) + 1  # the data moves on
  assert _same(jax.device_get((out.params, out.opt_state)), before)
  out, m = step(state, batch)  # the same batch, finite: applied
  assert int(m["skipped"]) == 0
  assert not _same(jax.device_get(out.params),
                   jax.device_get(state.params))


@pytest.mark.slow(seconds=20)
def test_consecutive_bad_steps_stop_the_run_with_good_checkpoints_only(
    tiny_dataset, tmp_path):
  """An absurd learning rate overflows the weights after the first
  update: every later step is non-finite and skipped; the run stops after
  `max_bad_steps` of them, naming the step and its rows; every checkpoint
  on disk is of a good step."""
  wd = str(tmp_path / "run")
  cfg = _cfg(tiny_dataset, steps=8, save_every=1, max_bad_steps=2,
             lr_lm=1e38, lr_other=1e38, warmup_ratio=0)
  handler = signal.getsignal(signal.SIGTERM)
  with pytest.raises(BadStepsError) as e:
    train_and_evaluate(cfg, wd)
  assert signal.getsignal(signal.SIGTERM) is handler  # put back
  msg = str(e.value)
  assert "2 consecutive steps" in msg and "example ids" in msg
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  skipped = {r["step"]: r["skipped"] for r in rows if "skipped" in r}
  bad = [s for s, v in skipped.items() if v]
  assert len(bad) == 2 and bad == list(range(bad[0], bad[0] + 2))
  assert f"at step {bad[-1]} " in msg
  saved = sorted(int(d) for d in os.listdir(os.path.join(wd, "checkpoints"))
                 if d.isdigit())
  assert all(skipped[s] == 0 for s in saved)
  ck = Checkpointer(os.path.join(wd, "checkpoints"))
  assert ck.latest_step() == (max(saved) if saved else None)
  assert f"(step {ck.latest_step()})" in msg
  ck.close()


@pytest.mark.slow(seconds=60)
def test_resume_refuses_another_config_and_allows_cadence(tiny_dataset,
                                                           tmp_path):
  wd = str(tmp_path / "run")
  handler = signal.getsignal(signal.SIGTERM)
  train_and_evaluate(_cfg(tiny_dataset, **SHARED_STEP), wd)  # cache hit
  # the run's SIGTERM handler is gone with it (forked children of this
  # process would inherit it: data_prep's pool hung on terminate)
  assert signal.getsignal(signal.SIGTERM) is handler
  saved = open(os.path.join(wd, "config.json")).read()
  with compilations() as names, pytest.raises(ValueError) as e:
    train_and_evaluate(_cfg(tiny_dataset, steps=4, lr_lm=3e-5,
                            **{"gnn.heads": 4}), wd)
  assert names == []  # refused before anything was compiled
  msg = str(e.value)
  assert "lr_lm: 2e-05 -> 3e-05" in msg
  assert "model.gnn.heads: 2 -> 4" in msg and "steps" not in msg.split(
      "may change")[0]
  assert open(os.path.join(wd, "config.json")).read() == saved  # untouched
  # length, cadence, logging and the mesh may change: it resumes
  last = train_and_evaluate(_cfg(tiny_dataset, steps=12, save_every=12,
                                 log_every=3, mesh_data=4,
                                 mesh_fsdp=2), wd)
  assert np.isfinite(last["loss"])
  assert Checkpointer(os.path.join(wd, "checkpoints")).latest_step() == 12
  # other data under the same path is refused too
  spec = json.load(open(os.path.join(wd, "dataset_spec.json")))
  resolved = configs.from_dict(json.loads(saved))  # as the run resolved it
  configs.check_resume(json.loads(saved), resolved, wd, spec, spec)
  with pytest.raises(ValueError, match="data: vocab_size"):
    configs.check_resume(json.loads(saved), resolved, wd, spec,
                         {**spec, "vocab_size": 7})
  # views added later are the same data
  more = {**spec, "views": 3,
          "splits": {**spec["splits"], "train_view2": 5}}
  configs.check_resume(json.loads(saved), resolved, wd, spec, more)
  # a run saved before `model.graph_encoder` (gnn.kind "gatv2") resumes as
  # "gat" and is refused as "sage"
  old = json.loads(saved)
  old["model"].pop("graph_encoder")
  old["model"]["gnn"]["kind"] = "gatv2"
  assert configs.from_dict(old) == resolved
  configs.check_resume(old, resolved, wd, spec, spec)
  sage = resolved.replace(model=dataclasses.replace(resolved.model,
                                                    graph_encoder="sage"))
  with pytest.raises(ValueError, match="model.graph_encoder: 'gat' -> "
                     "'sage'"):
    configs.check_resume(old, sage, wd, spec, spec)


def _copy(tiny_dataset, tmp_path):
  d = str(tmp_path / "data")
  shutil.copytree(tiny_dataset, d)
  spec = data.load_spec(d)
  files = sorted(glob.glob(os.path.join(d, spec["tfds_dir"],
                                        "*train_view0.tfrecord*")))
  assert files
  return d, spec, files[0]


def _read_all(d, spec):
  cfg = _cfg(d)
  pipe = data.InputPipeline(d, spec, cfg, 0, 1)
  it = pipe.train_batches(0)
  for _ in range(pipe.steps_per_epoch(0) + 1):
    next(it)


def test_a_truncated_record_file_names_the_file_and_record(tiny_dataset,
                                                           tmp_path):
  d, spec, path = _copy(tiny_dataset, tmp_path)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size - 100)  # cut inside the last record
  with pytest.raises(data.CorruptRecordsError) as e:
    _read_all(d, spec)
  assert os.path.basename(path) in str(e.value) and "record" in str(e.value)
  assert "train_view0" in str(e.value)


def test_a_file_cut_at_a_record_boundary_is_no_silent_short_epoch(
    tiny_dataset, tmp_path):
  import tensorflow as tf
  d, spec, path = _copy(tiny_dataset, tmp_path)
  records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
  keep = len(records) // 2
  with tf.io.TFRecordWriter(path) as w:
    for r in records[:keep]:
      w.write(r)
  with pytest.raises(data.CorruptRecordsError) as e:
    _read_all(d, spec)
  assert f"{keep} records where the dataset info says {len(records)}" in \
      str(e.value)


def test_resumed_log_keeps_the_steps_of_its_checkpoint(tmp_path):
  """A run resumed from step 3 logs steps 4.. again: the log keeps steps
  <= 3, drops the rest and a line a kill cut in half."""
  from bali_jax.train.metrics import MetricsWriter
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps({"step": s, "loss": float(s)}) + "\n"
           for s in range(1, 6)]
  path.write_text("".join(lines) + '{"step": 6, "lo')
  w = MetricsWriter(str(tmp_path), True, start=3)
  w.write(4, {"loss": 40.0})
  w.close()
  rows = [json.loads(l) for l in open(path)]
  assert [(r["step"], r["loss"]) for r in rows] == [
      (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def _kill_when(proc, hit, poll: float) -> str:
  """SIGKILL `proc` once `hit()` is true; its output. Fails if the run
  ended first: every kill of the sequence must happen."""
  t0 = time.time()
  while proc.poll() is None and time.time() - t0 < 600:
    if hit():
      proc.kill()
      break
    time.sleep(poll)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == -9, (
      f"the run ended (exit {proc.returncode}) before its kill\n{out[-3000:]}")
  return out


def test_one_process_saves_replicated_arrays_whole(tmp_path):
  """In one process every replica is local: a save writes each replicated
  array from one device, with no per-replica slice programs (Orbax's
  replica-parallel split, 2-5 s of every save of the tiny state), and it
  restores onto another sharding bit for bit."""
  devs = np.asarray(jax.devices()).reshape(8, 1, 1)
  mesh = jax.sharding.Mesh(devs, sharding.MESH_AXES)
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  tree = {"a": jax.device_put(np.arange(24 * 7, dtype=np.float32)
                              .reshape(24, 7), rep),
          "b": jax.device_put(np.ones((40, 3), np.float32), rep)}
  ck = Checkpointer(str(tmp_path / "ck"))
  with compilations() as names:
    ck.save(1, tree, {"step": 1})
    ck.wait()
  assert not [n for n in names if "slice" in n], names
  fsdp = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  target = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=fsdp)
            for k, v in tree.items()}
  got, meta = ck.restore(1, target)
  ck.close()
  assert meta == {"step": 1} and got["a"].sharding == fsdp
  for k in tree:
    np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(tree[k]))


def _uninterrupted_run(tiny_dataset, tmp_path):
  """The run the kill sequence must reproduce step for step
  (`cli_runs.UNINTERRUPTED`), in this process: the same program as the
  `python -m` runs below (one executable in the session's cache), and one
  compilation of the train step for the whole run (a persistent-cache hit
  is logged as a compilation too); its directory."""
  full = tmp_path / "full"
  cfg = _cfg(tiny_dataset, **SHARED_STEP)
  with compilations() as names:
    last = train_and_evaluate(cfg, str(full))
  assert names.count("jit(bali_train_step)") == 1, names
  lines = [json.loads(l) for l in open(full / "metrics.jsonl")]
  assert [l["step"] for l in lines if "loss" in l] == list(range(1, 11))
  for key in ("loss", "mlm_loss", "align_loss", "lr_lm", "grad_norm",
              "step_time", "tokens_per_s", "real_tokens_per_s", "mfu"):
    assert key in lines[0], key
  assert any("eval_loss" in l for l in lines)
  assert np.isfinite(last["loss"])
  assert (full / "metrics.png").stat().st_size > 10_000
  saved = json.load(open(full / "config.json"))
  # saved as resolved: one input shard per process (kept by resumes)
  assert configs.from_dict(saved) == cfg.replace(data_shards=1)
  return full


@pytest.mark.slow(seconds=140)
def test_kill_sequence_resumes_exactly(tiny_dataset, tmp_path):
  """One run stopped three ways, then finished with the same command:
  SIGTERM (the handler saves), SIGKILL (no handler runs) at a random moment
  mid-run (a random number of steps and a random fraction of a step after
  the restart), SIGKILL inside an async checkpoint save (a new temporary
  Orbax directory exists). Each restart resumes from the last committed
  checkpoint; the log and the per-step losses end up equal to the
  uninterrupted run's, no step logged twice."""
  from tests.cli_runs import sigterm_after
  uninterrupted_run = _uninterrupted_run(tiny_dataset, tmp_path)
  common = UNINTERRUPTED + ("save_every=2",)  # cadence may change
  want = losses(uninterrupted_run)
  part = tmp_path / "part"
  ckpts = part / "checkpoints"
  rng = np.random.default_rng(0)
  done = lambda: max(losses(part), default=0)

  # 1. SIGTERM after the first step: saved, exit 0
  sigterm_after(train_cli(part, tiny_dataset, *common), part, 1)
  stopped = done()
  assert 1 <= stopped < 10

  # 2. SIGKILL mid-run: 2 or 3 steps after the restart, then up to a
  # step's time more (steps take ~0.2 s here)
  at, extra = int(rng.integers(2, 4)), float(rng.uniform(0.0, 0.2))
  seen = {}

  def mid_run():
    if done() < stopped + at:
      return False
    seen.setdefault("t", time.time())
    return time.time() - seen["t"] >= extra
  out = _kill_when(train_cli(part, tiny_dataset, *common), mid_run, 0.02)
  assert f"resumed from step {stopped}" in out
  assert done() < 10

  # 3. SIGKILL while this run writes a checkpoint (saves are async)
  tmp = lambda: {n for n in (os.listdir(ckpts) if ckpts.exists() else [])
                 if ".orbax-checkpoint-tmp" in n}
  left = tmp()  # a killed save may have left its temporary directory
  _kill_when(train_cli(part, tiny_dataset, *common),
             lambda: bool(tmp() - left), 0.005)

  last = train_cli(part, tiny_dataset, *common)
  out, _ = last.communicate(timeout=600)
  assert last.returncode == 0, out[-3000:]
  assert "resumed from step" in out
  assert losses(part) == want  # exact, step by step
  lines = [json.loads(l) for l in open(part / "metrics.jsonl")]
  steps = [l["step"] for l in lines if "loss" in l]
  assert steps == sorted(set(steps))  # no step logged twice
  assert Checkpointer(str(ckpts)).latest_step() == 10
  _restores_on_other_meshes_and_exports(tiny_dataset, uninterrupted_run,
                                        tmp_path)


def _restores_on_other_meshes_and_exports(tiny_dataset, uninterrupted_run,
                                          tmp_path):
  """The uninterrupted run's last checkpoint restores onto other mesh
  shapes bit for bit and exports to a directory transformers loads (part
  of the kill-sequence test: the one test that needs that run)."""
  full = uninterrupted_run
  # the final checkpoint restores onto other mesh shapes, bit for bit
  cfg = configs.load_run_config(str(full))
  spec = data.load_spec(tiny_dataset)
  tx = make_optimizer(cfg)
  ckpt = Checkpointer(str(full / "checkpoints"))
  restored = []
  for shape in ((2, 4, 1), (8, 1, 1), (1, 1, 1)):
    devs = np.asarray(jax.devices()[:int(np.prod(shape))]).reshape(shape)
    mesh = jax.sharding.Mesh(devs, sharding.MESH_AXES)
    abstract, _, _ = abstract_state(cfg, spec, tx, mesh)
    state, meta = ckpt.restore(10, abstract)
    assert meta["step"] == 10
    k = state.params["bert"]["encoder"]["layer_0"]["query"]["kernel"]
    assert k.sharding.mesh.shape == dict(zip(sharding.MESH_AXES, shape))
    restored.append(jax.device_get(state))
  ckpt.close()
  for other in restored[1:]:
    jax.tree.map(np.testing.assert_array_equal, restored[0], other)

  # the run exports to a directory transformers loads, weights included
  from bali_jax.cli import main
  import transformers
  hf = tmp_path / "hf"
  assert main(["export-hf", "--source", str(full), "--out", str(hf)]) == 0
  model, info = transformers.AutoModelForMaskedLM.from_pretrained(
      hf, output_loading_info=True)
  assert not info["missing_keys"] and not info["mismatched_keys"]
  w = model.bert.encoder.layer[0].intermediate.dense.weight.detach().numpy()
  np.testing.assert_array_equal(
      w, restored[0].params["bert"]["encoder"]["layer_0"]["intermediate"][
          "kernel"].T)
  # the GNN is saved beside it and rebuilds the same graph encoder
  from bali_jax.model.graph_io import load_graph_encoder
  module, gnn, meta = load_graph_encoder(str(hf))
  d = cfg.model.bert.hidden_size
  assert meta["graph_encoder"] == "gat" and meta["out_features"] == d
  jax.tree.map(np.testing.assert_array_equal, gnn,
               restored[0].params["gnn"])
  import jraph
  x = np.random.default_rng(0).standard_normal((1, 4, d)).astype(np.float32)
  g = jraph.GraphsTuple(nodes=x, edges=None, senders=np.array([[1, 2, 3]]),
                        receivers=np.array([[0, 0, 0]]),
                        n_node=np.array([[4]]), n_edge=np.array([[3]]),
                        globals=None)
  assert module.apply({"params": gnn}, g, np.array([[0]])).shape == (1, 1, d)
