"""`--model SRC` -> a BERT to evaluate: a training run directory (its latest
checkpoint, or `RUN@STEP` for a kept earlier one: how a curve over steps is
read after training), a Hugging Face BERT directory, or `starter`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

from bali_jax import storage


@dataclasses.dataclass
class LoadedBert:
  label: str  # how the report names it
  source: str
  config: Any  # BertConfig
  params: dict  # the "bert" tree
  tokenizer: Any
  pooling: str = "mean"  # how names pool (the run's name_pooling)
  max_name_tokens: int = 32
  seq_len: int = 128
  step: int | None = None
  run_dir: str | None = None
  latest: bool = True  # a run at its latest checkpoint (not RUN@STEP)


def is_run_dir(path: str) -> bool:
  return storage.isdir(storage.join(path, "checkpoints")) and \
      storage.exists(storage.join(path, "config.json"))


def is_hf_dir(path: str) -> bool:
  return storage.exists(storage.join(path, "config.json")) and \
      not is_run_dir(path)


def split_step(src: str) -> tuple[str, int | None]:
  """`RUN@STEP` -> (RUN, STEP) when RUN is a run directory; else (src,
  None), so a directory whose own name ends in @digits still loads."""
  m = re.fullmatch(r"(.+)@(\d+)", src)
  if m and is_run_dir(m.group(1)):
    return m.group(1), int(m.group(2))
  return src, None


def run_setup(workdir: str):
  """(TrainConfig, record spec, one-device mesh) of a run: what restoring
  its checkpoints, or rebuilding its initial state, needs."""
  import jax
  import numpy as np
  from bali_jax import configs
  from bali_jax.train import sharding
  cfg = configs.load_run_config(workdir)
  spec = json.loads(storage.read_text(storage.join(workdir,
                                                   "dataset_spec.json")))
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1),
                           sharding.MESH_AXES)
  return cfg, spec, mesh


def restore_params(workdir: str, cfg, spec, mesh, step: int | None = None):
  """(params on the host, step) of a run's checkpoint `step` (default: its
  latest); the optimizer state is restored and dropped."""
  import jax
  from bali_jax.train.checkpoint import Checkpointer
  from bali_jax.train.state import abstract_state
  from bali_jax.train.step import make_optimizer
  ckpt = Checkpointer(storage.join(workdir, "checkpoints"))
  try:
    if step is None:
      step = ckpt.latest_step()
    if step is None:
      raise ValueError(f"{workdir}: the run has no checkpoint yet")
    abstract, _, _ = abstract_state(cfg, spec, make_optimizer(cfg), mesh)
    state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return jax.device_get(state.params), step


def load_run(workdir: str, step: int | None = None):
  """(BertConfig, params {"bert", "mlm_head"}, tokenizer, step, TrainConfig,
  record spec) of a run's checkpoint `step` (default: its latest), restored
  on one device."""
  from bali_jax.hf.tokenizer import load_tokenizer
  cfg, spec, mesh = run_setup(workdir)
  params, step = restore_params(workdir, cfg, spec, mesh, step)
  with storage.local_copy(storage.join(workdir, "tokenizer")) as d:
    tok = load_tokenizer(d)
  return cfg.model.bert, params, tok, step, cfg, spec


def check_source(src: str) -> str:
  """The directory `--model SRC` names, once it is known to be a run or an
  HF BERT directory: a bad source is refused before anything is loaded."""
  from bali_jax import open_data
  run, step = split_step(src)
  if step is not None:
    return _check_step(run, step)
  path = open_data.resolve_model_dir(src)
  if not storage.isdir(path):
    raise FileNotFoundError(f"--model {src}: no such directory")
  if not is_run_dir(path) and not is_hf_dir(path):
    raise ValueError(f"--model {src}: neither a training run directory "
                     "(config.json + checkpoints/) nor a Hugging Face BERT "
                     "directory (config.json + weights)")
  return path


def kept_steps(run: str) -> list[int]:
  """The steps a run keeps checkpoints of, in order."""
  from bali_jax.train.checkpoint import Checkpointer
  ckpt = Checkpointer(storage.join(run, "checkpoints"))
  steps = ckpt.all_steps()
  ckpt.close()
  return steps


def check_kept(run: str, step: int, steps: list[int]) -> None:
  """Refuses a step the run does not keep (`steps`: its kept steps),
  naming the steps it does keep."""
  if step not in steps:
    raise ValueError(f"--model {run}@{step}: the run keeps no checkpoint of "
                     f"step {step}; it keeps steps {steps}")


def _check_step(run: str, step: int) -> str:
  """A `RUN@STEP` whose step the run does not keep is refused before
  anything loads."""
  check_kept(run, step, kept_steps(run))
  return run


def load(src: str) -> LoadedBert:
  from bali_jax import open_data
  from bali_jax.hf import importer as hf_import
  pinned = split_step(src)[1]
  path = check_source(src)
  if is_run_dir(path):
    bert_cfg, params, tok, step, cfg, spec = load_run(path, pinned)
    latest = pinned is None or pinned == max(kept_steps(path))
    b = spec["budgets"]
    return LoadedBert(f"{os.path.basename(os.path.normpath(path))}@{step}",
                      storage.display(path), bert_cfg, params["bert"], tok,
                      pooling=cfg.model.name_pooling,
                      max_name_tokens=b["max_name_tokens"],
                      seq_len=b["seq_len"], step=step, run_dir=path,
                      latest=latest)
  with storage.local_copy(path) as d:  # a gs:// HF directory too
    pre = hf_import.load_pretrained(d)
  label = src if src == open_data.STARTER_ALIAS else \
      os.path.basename(os.path.normpath(path))
  return LoadedBert(label, os.path.abspath(path), pre.config,
                    pre.params["bert"], pre.tokenizer)
