"""One path layer for runs and datasets (bali_jax/storage.py): local
directories and URLs. TensorFlow's in-memory `ram://` filesystem stands in
for gs:// offline (tf.io.gfile serves both); Orbax and tensorflow-datasets
take gs:// themselves and are not exercised against a bucket here."""

import json
import os
import re

import numpy as np
import pytest

from bali_jax import storage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["local", "url"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path / "store")
  return f"ram://store-{os.getpid()}-{id(request)}"


def test_storage_reads_writes_and_copies(root, tmp_path):
  d = storage.join(root, "a", "b")
  storage.makedirs(d)
  assert storage.isdir(d)
  storage.write_text(storage.join(d, "x.json"), '{"k": 1}')
  storage.write_bytes(storage.join(d, "y.bin"), b"\x00\x01")
  assert json.loads(storage.read_text(storage.join(d, "x.json"))) == {"k": 1}
  assert storage.listdir(d) == ["x.json", "y.bin"]
  assert storage.exists(storage.join(d, "y.bin"))
  assert not storage.exists(storage.join(d, "z"))
  with storage.local_copy(d) as local:
    assert sorted(os.listdir(local)) == ["x.json", "y.bin"]
    assert open(os.path.join(local, "y.bin"), "rb").read() == b"\x00\x01"
  with storage.local_staging(storage.join(root, "staged")) as local:
    open(os.path.join(local, "f.txt"), "w").write("made locally")
  assert storage.read_text(storage.join(root, "staged", "f.txt")) == \
      "made locally"
  back = str(tmp_path / "back")
  storage.copy_tree(storage.join(root, "a"), back)
  assert open(os.path.join(back, "b", "x.json")).read() == '{"k": 1}'
  if not storage.is_url(root):  # atomic local writes leave no temp files
    assert not [f for f in os.listdir(d) if f.startswith(".tmp-")]
  storage.remove_tree(storage.join(root, "a"))
  assert not storage.exists(d) and not storage.exists(storage.join(root, "a"))
  storage.remove_tree(storage.join(root, "a"))  # gone already: no error
  assert storage.exists(storage.join(root, "staged", "f.txt"))


def test_run_metrics_and_plots_go_to_a_url():
  from bali_jax.train.metrics import MetricsWriter
  from bali_jax.train.plots import plot_metrics
  run = f"ram://run-{os.getpid()}"
  row = lambda i: {"loss": 1.0 / i, "mlm_loss": 0.5, "align_loss": 0.5,
                   "mlm_accuracy": 0.1, "align_accuracy": 0.2,
                   "real_tokens_per_s": 10.0, "tokens_per_s": 12.0}
  w = MetricsWriter(run, True, flush_every_s=3600)
  for i in (1, 2, 3):
    w.write(i, row(i))
  assert not storage.exists(storage.join(run, "metrics.jsonl"))  # buffered
  w.close()
  lines = storage.read_text(storage.join(run, "metrics.jsonl")).splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2, 3]
  events = storage.listdir(storage.join(run, "tensorboard"))
  assert any(e.startswith("events.out.tfevents") for e in events)
  # a resumed run keeps the lines it had (object stores cannot append)
  w = MetricsWriter(run, True, flush_every_s=0)
  w.write(4, row(4))
  lines = storage.read_text(storage.join(run, "metrics.jsonl")).splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2, 3, 4]
  w.close()
  png = plot_metrics(run)
  assert png == storage.join(run, "metrics.png")
  with storage.open_file(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_events_read_back_with_tensorflow(tmp_path):
  """Our scalar event files (train/tb_events) as TensorFlow reads them:
  its record reader checks every CRC, its `Event` proto parses the
  version header and each scalar's tag, step and value."""
  import tensorflow as tf
  from tensorflow.core.util import event_pb2
  from bali_jax.train.metrics import MetricsWriter
  from bali_jax.train.tb_events import crc32c
  assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
  run = str(tmp_path / "run")
  w = MetricsWriter(run, True, start=0)
  rows = {1: {"loss": 17.87, "lr_lm": 2e-5}, 300: {"loss": 0.5, "mfu": 0.0}}
  for step, row in rows.items():
    w.write(step, row)
  w.write(300, {"acc@1": 0.25}, prefix="eval_")
  w.close()
  [name] = os.listdir(os.path.join(run, "tensorboard"))
  assert name.startswith("events.out.tfevents.")
  events = [event_pb2.Event.FromString(r.numpy()) for r in
            tf.data.TFRecordDataset(os.path.join(run, "tensorboard", name))]
  assert events[0].file_version == "brain.Event:2"
  got = [(e.step, v.tag, v.simple_value) for e in events[1:]
         for v in e.summary.value]
  want = [(step, k, float(np.float32(v))) for step, row in rows.items()
          for k, v in row.items()] + [(300, "eval_acc@1", 0.25)]
  assert got == want
  assert all(e.wall_time > 1.7e9 for e in events)
  # a resume in the same process and second writes a file of its own
  w = MetricsWriter(run, True, start=300)
  w.write(301, {"loss": 0.25})
  w.close()
  assert len(os.listdir(os.path.join(run, "tensorboard"))) == 2


def test_dataset_built_to_a_url_reads_back_like_a_local_one(tmp_path):
  from bali_jax.eval import dictionary, queries
  from bali_jax.features import tiny_budgets
  from bali_jax.open_data import starter_model_dir
  from bali_jax.hf.tokenizer import load_tokenizer
  from bali_jax.train.input_pipeline import load_spec
  from bali_jax.readers import sources
  from data_prep.pipelines.build import BuildOptions, build_dataset
  from bali_jax.readers.errors import BadRecords
  from data_prep.linking.linker import DictionaryLinker
  from tests.data_fixtures import synthetic_documents, write_ontologies
  tok = load_tokenizer(starter_model_dir())
  out = {}
  for where in ("local", "url"):
    p = write_ontologies(str(tmp_path / f"kg-{where}"))
    kg = sources.open_default_graph(
        BadRecords(), mondo=p["mondo"],
        hpo={"hp.obo": p["obo"], "phenotype.hpoa": p["hpoa"]})
    dst = (str(tmp_path / "ds") if where == "local"
           else f"ram://ds-{os.getpid()}")
    build_dataset(synthetic_documents(40), kg, tok, dst,
                  BuildOptions(budgets=tiny_budgets(), views=1, seed=3,
                               validation_percent=0, test_percent=0,
                               workers=1), BadRecords(),
                  linker=DictionaryLinker(kg))
    out[where] = dst
  local, url = out["local"], out["url"]
  assert sorted(storage.listdir(url)) == sorted(os.listdir(local))
  spec = load_spec(url)
  assert spec == json.load(open(os.path.join(local, "bali_dataset.json")))
  d_url, d_local = dictionary.from_dataset(url), dictionary.from_dataset(local)
  assert d_url.names == d_local.names
  q = queries.heldout_synonyms(url, d_url)
  assert [x.text for x in q.queries] == [
      x.text for x in queries.heldout_synonyms(local, d_local).queries]
  with pytest.raises(FileExistsError):  # never over an existing dataset
    build_dataset([], None, tok, url, BuildOptions(), BadRecords())


# Every module of the library reads and writes runs and datasets through
# storage; found by walking bali_jax/, so a new module is scanned without
# being listed. Exempt, with the reason:
EXEMPT = {
    "bali_jax/storage.py": "the path layer itself",
    "bali_jax/hf/": "Hugging Face directories are local by contract "
                    "(transformers reads them so); callers stage URLs with "
                    "storage.local_copy / local_staging",
    "bali_jax/readers/": "the source files a user gives data_prep (KG "
                         "releases, corpora) and the build's local staging "
                         "directory; datasets are read through storage by "
                         "eval/dictionary and eval/queries",
}
BARE = re.compile(r"(?<![\w.])open\(|os\.path\.(exists|isdir)\(|"
                  r"os\.(makedirs|listdir|replace|rename|remove)\(")
# a bare call on a line that says why it is not on a run or data path
ALLOWED = ("# package code", "# a user", "a user's corpus", "# local:")


def _library_modules():
  for d, _, files in os.walk(os.path.join(ROOT, "bali_jax")):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(d, f), ROOT)
        if not any(rel.startswith(e) for e in EXEMPT):
          yield rel


def test_no_bare_file_calls_on_run_or_data_paths():
  modules = sorted(_library_modules())
  assert "bali_jax/eval/ablation.py" in modules
  assert "bali_jax/model/graph_io.py" in modules
  found = []
  for rel in modules:
    for n, line in enumerate(open(os.path.join(ROOT, rel)), 1):
      if BARE.search(line) and not any(a in line for a in ALLOWED):
        found.append(f"{rel}:{n}: {line.strip()}")
  assert not found, "\n".join(found)


def test_host_tf_skips_keras_and_tf_keras_still_loads():
  """`tf_host` imports TensorFlow without Keras' eagerly loaded optimisers
  (1.7 s of every train/data_prep start); the records still read and
  `tf.keras` still loads in full when asked for. A fresh interpreter: the
  test session may have imported TensorFlow already."""
  import subprocess
  import sys
  code = (
      "import sys\n"
      "from bali_jax.tf_host import host_tf, host_tfds\n"
      "tfds = host_tfds()\n"
      "assert not [m for m in sys.modules if m.startswith('keras')], 'keras'\n"
      "assert 'keras.src.optimizers' not in sys.modules\n"
      "tf = host_tf()\n"
      "assert int(tf.data.Dataset.range(3).reduce(tf.constant(0, tf.int64),\n"
      "                                           lambda a, b: a + b)) == 3\n"
      "assert tf.config.get_visible_devices('GPU') == []\n"
      "assert tf.keras.optimizers.Adam(0.1).learning_rate == 0.1\n"
      "print('ok')\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True,
                       capture_output=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
