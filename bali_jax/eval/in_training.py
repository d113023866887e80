"""Entity linking inside training (`el_eval_every`): held-out synonyms only.

A capped, seeded sample of the dataset's held-out synonyms is linked against
the full dictionary with the BERT of the current train state, so the acc@1
curve lands in metrics.jsonl, TensorBoard and metrics.png beside the
losses. The encoder compiles once per run. It is `evaluate`'s path: the
dictionary's name vectors go to shards (each process encodes its slice,
into `WORKDIR/el_name_vectors` where the processes share the run
directory) and are streamed back within `search_options.budget`, so no
process holds them all; the BERT is gathered to each host first.
"""

from __future__ import annotations

import jax
import numpy as np

from bali_jax import storage
from bali_jax.eval import dictionary as dictionary_lib
from bali_jax.eval import queries as queries_lib
from bali_jax.eval.encoder import Encoder
from bali_jax.eval.report import SearchOptions, dictionary_store, score_model
from bali_jax.train.state import data_tokenizer


def _host_params(tree, mesh):
  """The (sharded) BERT parameters as host arrays on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.sharding import NamedSharding, PartitionSpec as P
  rep = jax.jit(lambda t: t, out_shardings=NamedSharding(mesh, P()))(tree)
  return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), rep)


def evaluators(cfg, spec, workdir: str | None = None) -> list:
  """The pre-training loop's evaluators for a config (its `evaluators`
  argument, with the run directory bound by the entry point): held-out-
  synonym linking when `el_eval_every` is set."""
  if not cfg.el_eval_every:
    return []
  directory = storage.join(workdir, "el_name_vectors") if workdir else None
  return [LinkingEval(cfg, spec, data_tokenizer(cfg, spec),
                      SearchOptions(directory))]


class LinkingEval:
  """Callable: BERT params -> {"el_acc@1", "el_acc@5", "el_mrr", ...}."""

  def __init__(self, cfg, spec, tokenizer,
               search_options: SearchOptions = SearchOptions()):
    # both raise, naming the missing file, on a dataset built before them
    self.dictionary = dictionary_lib.from_dataset(cfg.data_dir)
    self.queries = queries_lib.heldout_synonyms(
        cfg.data_dir, self.dictionary, limit=cfg.el_eval_queries or None,
        seed=cfg.seed)
    self.cfg, self.spec, self.tokenizer = cfg, spec, tokenizer
    self.search = search_options
    self.encoder = None

  def __call__(self, bert_params, mesh) -> dict:
    params = _host_params(bert_params, mesh)
    b = self.spec["budgets"]
    if self.encoder is None:
      self.encoder = Encoder(self.cfg.model.bert, params, self.tokenizer,
                             pooling=self.cfg.model.name_pooling,
                             max_name_tokens=b["max_name_tokens"],
                             seq_len=b["seq_len"], progress=False)
    else:
      self.encoder.set_params(params)
    with dictionary_store(self.encoder, self.dictionary, self.search,
                          len(self.queries.queries)) as (store, _):
      (row,) = score_model(self.encoder, self.dictionary, [self.queries],
                           store, self.search)
    return {"el_acc@1": row["acc@1"], "el_acc@5": row["acc@5"],
            "el_mrr": row["mrr"], "el_hard_acc@1": row["hard_acc@1"],
            "el_queries": row["n"]}
