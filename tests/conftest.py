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
