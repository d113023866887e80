"""Test setup: 8 fake CPU devices, offline HF, small fixtures made here, a
compilation cache shared by the session's processes, and skips that fail
under CI.

XLA_FLAGS must be set before jax is imported anywhere, hence at the top of
conftest (pytest imports it first).
"""

import atexit
import os
import shutil
import tempfile

# One persistent JAX compilation cache for this session: the in-process
# tests and every `python -m bali_jax` subprocess they start (which inherit
# the environment) compile a step once and load it afterwards. A fresh
# directory per session, so no run reads executables an earlier checkout
# wrote. Compilations are still counted: jax logs "Finished XLA
# compilation" for cache hits too. Set before jax is imported, which reads
# it once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="bali_jax_test_jax_cache_")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# the test compile flags (tests/cli_runs.TEST_XLA_FLAGS says why)
from tests.cli_runs import TEST_XLA_FLAGS  # noqa: E402 (no jax inside)
os.environ.setdefault("XLA_FLAGS", " ".join(
    ("--xla_force_host_platform_device_count=8",) + TEST_XLA_FLAGS))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Full float32 matmuls for the parity tests, set as an environment
# variable so that the `python -m` runs the tests start compile the same
# programs as this session: one executable in the shared cache serves an
# in-process run and a subprocess run of the same config (a
# `jax.config.update` here made every subprocess step another program).
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


# CI installs every extra (requirements-bench.txt too): there, a test that
# skips (a missing extra, a missing tool) is a failure, not a quiet pass.
STRICT_SKIPS = os.environ.get("CI", "").lower() == "true"


def _fail_skip(report, where: str) -> None:
  if STRICT_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
    reason = (report.longrepr[-1] if isinstance(report.longrepr, tuple)
              else str(report.longrepr))
    report.outcome = "failed"
    report.longrepr = f"{where} skipped under CI=true: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
  report = yield
  _fail_skip(report, item.nodeid)
  return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
  report = yield  # a module-level importorskip skips at collection
  _fail_skip(report, collector.nodeid)
  return report


def slow_seconds(item) -> float:
  """A test's measured cost on the 2-core CI machine (`slow(seconds=N)`,
  the wall time of the test and the fixtures only it needs, under the
  load of two workers); 0 for the quick ones."""
  marker = item.get_closest_marker("slow")
  return marker.kwargs.get("seconds", 10) if marker else 0


def pytest_collection_modifyitems(config, items):
  """Longest first. The two workers take tests in this order as they free
  up (pytest.ini: `--dist load --maxschedchunk 1`), so both start on
  the long tests and end on short ones; in file order one worker
  ran the 140 s kill sequence alone for the last 140 s of the suite
  (measured: 690 s wall, 1,240 s of tests). Stable: ties keep file
  order. Every worker collects the same order."""
  items.sort(key=slow_seconds, reverse=True)


@pytest.fixture(scope="session")
def starter_dir():
  from bali_jax.open_data import starter_model_dir
  return starter_model_dir()


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
  """Records built by data_prep from generated documents (tiny budgets):
  the input of the training tests."""
  from tests.data_fixtures import synthetic_documents, write_ontologies
  from bali_jax.features import tiny_budgets
  from bali_jax.open_data import starter_model_dir
  from bali_jax.hf.tokenizer import load_tokenizer
  from bali_jax.readers import sources
  from data_prep.pipelines.build import BuildOptions, build_dataset
  from bali_jax.readers.errors import BadRecords
  from data_prep.linking.linker import DictionaryLinker
  d = tmp_path_factory.mktemp("tiny_dataset")
  p = write_ontologies(str(d / "kg"))
  kg = sources.open_default_graph(
      BadRecords(), mondo=p["mondo"],
      hpo={"hp.obo": p["obo"], "phenotype.hpoa": p["hpoa"]})
  out = str(d / "records")
  build_dataset(synthetic_documents(240), kg,
                load_tokenizer(starter_model_dir()), out,
                BuildOptions(budgets=tiny_budgets(), views=2, seed=3,
                             validation_percent=10, test_percent=5,
                             workers=1),
                BadRecords(), linker=DictionaryLinker(kg))
  return out
