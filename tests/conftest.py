"""Test setup: 8 fake CPU devices, offline HF, small fixtures made here.

XLA_FLAGS must be set before jax is imported anywhere, hence at the top of
conftest (pytest imports it first).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


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
  from data_prep import sources
  from data_prep.build import BuildOptions, build_dataset
  from data_prep.errors import BadRecords
  from data_prep.linker import DictionaryLinker
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


@pytest.fixture(scope="session")
def uninterrupted_run(tiny_dataset, tmp_path_factory):
  """The tiny run (`cli_runs.UNINTERRUPTED`) that the kill and resume
  tests must reproduce step for step; its directory."""
  from tests.cli_runs import UNINTERRUPTED, train_cli
  wd = tmp_path_factory.mktemp("uninterrupted") / "run"
  proc = train_cli(wd, tiny_dataset, *UNINTERRUPTED)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  return wd
