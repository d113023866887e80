"""The train state: its abstract shapes and shardings (derived from the
parameters' logical names), its creation on a mesh, and BERT weights from
an HF directory (`init_from`). Used by the loop, by `evaluate` (a run's
checkpoint restored on one device) and by `bench`."""

from __future__ import annotations

import flax.linen as nn
import jax

from bali_jax import storage
from bali_jax.train import input_pipeline as data
from bali_jax.train import sharding
from bali_jax.train.step import TrainState, corrupt, init_state


def abstract_state(cfg, spec, tx, mesh):
  """Abstract state and its shardings, derived from the logical names."""
  example = data.example_batch(spec, cfg)
  example = jax.jit(lambda b, r: corrupt(cfg, spec, b, r))(  # one program
      example, jax.random.key(0))
  boxed = jax.eval_shape(lambda r: init_state(cfg, r, example, tx),
                         jax.random.key(0))
  p_shard = sharding.param_shardings(boxed.params, mesh)
  params = nn.meta.unbox(boxed.params)
  opt_shard = sharding.like_params(jax.eval_shape(tx.init, params), params,
                                   p_shard, mesh)
  shardings = TrainState(step=sharding.replicated(mesh), params=p_shard,
                         opt_state=opt_shard)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      TrainState(step=boxed.step, params=params,
                 opt_state=jax.eval_shape(tx.init, params)), shardings)
  return abstract, shardings, example


def create_state(cfg, spec, tx, mesh, rng):
  abstract, shardings, example = abstract_state(cfg, spec, tx, mesh)
  def bali_init(r):  # named: compile logs say which function
    return nn.meta.unbox(init_state(cfg, r, example, tx))
  state = jax.jit(bali_init, out_shardings=shardings)(rng)
  if cfg.init_from:
    state = load_bert(cfg, spec, state, tx, shardings)
  return state, abstract, shardings


def data_tokenizer(cfg, spec):
  from bali_jax.hf.tokenizer import load_tokenizer
  with storage.local_copy(storage.join(cfg.data_dir,
                                       spec["tokenizer_dir"])) as d:
    return load_tokenizer(d)


def load_bert(cfg, spec, state, tx, shardings):
  """BERT weights from an HF directory; heads and GNN stay fresh."""
  from bali_jax.hf.importer import load_pretrained
  from bali_jax.open_data import resolve_model_dir
  bc = cfg.model.bert
  with storage.local_copy(resolve_model_dir(cfg.init_from)) as d:
    pre = load_pretrained(d, scan_layers=bc.scan_layers)
  if pre.tokenizer.get_vocab() != data_tokenizer(cfg, spec).get_vocab():
    raise ValueError(f"init_from={cfg.init_from}: its tokenizer differs from "
                     f"the one {cfg.data_dir} was built with; rebuild the "
                     "data with `python -m data_prep ... --tokenizer "
                     f"{cfg.init_from}`")
  if pre.config.replace(dtype=bc.dtype, remat_policy=bc.remat_policy,
                        scan_layers=bc.scan_layers,
                        attention=bc.attention) != bc:
    raise ValueError(f"init_from={cfg.init_from}: its config.json does not "
                     f"match the model config ({pre.config} vs {bc})")
  bert = pre.params["bert"]
  if "pooler" not in bert and "pooler" in state.params["bert"]:
    bert = {**bert, "pooler": jax.device_get(state.params["bert"]["pooler"])}
  params = {**state.params, "bert": bert}
  params = jax.device_put(params, shardings.params)
  return TrainState(step=state.step, params=params,
                    opt_state=jax.jit(tx.init, out_shardings=shardings.opt_state)(
                        params))
