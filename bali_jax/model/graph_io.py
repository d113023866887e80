"""The graph encoder saved beside an exported BERT (spec 1.9).

The authors save `graph_encoder.pt` next to the BERT's `save_pretrained`
directory. We write, into the same export directory:

  graph_encoder.safetensors     every GNN parameter, float32, named by its
                                path in our Flax tree ("gat_0/lin/kernel",
                                "head/kernel", "head_LayerNorm/scale", ...);
                                Dense kernels are (in, out), GATv2 kernels
                                (in, heads, head_dim), attention (heads,
                                head_dim), as `bali_jax.model.gat` uses them.
  graph_encoder_config.json     what rebuilds the module: the kind (gat |
                                sage), the GnnConfig fields, the output width
                                d and LayerNorm eps, and how node features
                                were made (the BERT's pooling of concept
                                names: `name_pooling`, `name_pooling_layer`).

Node features are the exported BERT's pooled encodings of concept names, so
`load_graph_encoder` + the exported BERT embed any star subgraph later. The
linear kind has no GNN: nothing is written (g_v is the BERT's [CLS] state
over the linearised subgraph; `linear_format` is in the run's dataset).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from bali_jax import storage

WEIGHTS = "graph_encoder.safetensors"
CONFIG = "graph_encoder_config.json"
FORMAT = "bali_jax.graph_encoder/1"


def graph_files(model_cfg, gnn_params) -> list[str]:
  """The files `save_graph_encoder` writes: two for a GNN kind, none for
  the linear kind (no GNN) or a tree without GNN parameters."""
  if model_cfg.graph_encoder == "linear" or gnn_params is None:
    return []
  return [WEIGHTS, CONFIG]


def save_graph_encoder(out_dir: str, model_cfg, gnn_params) -> list[str]:
  """Writes the files of `graph_files`; returns their names."""
  from safetensors.numpy import save
  from flax.traverse_util import flatten_dict
  if not graph_files(model_cfg, gnn_params):
    return []
  import flax.linen as nn
  params = nn.meta.unbox(gnn_params)
  tensors = {"/".join(k): np.ascontiguousarray(np.asarray(v, np.float32))
             for k, v in flatten_dict(params).items()}
  storage.write_bytes(storage.join(out_dir, WEIGHTS),
                      save(tensors, metadata={"format": FORMAT}))
  bc = model_cfg.bert
  meta = {
      "format": FORMAT,
      "graph_encoder": model_cfg.graph_encoder,
      "gnn": dataclasses.asdict(model_cfg.gnn),
      "out_features": bc.hidden_size,
      "layer_norm_eps": bc.layer_norm_eps,
      "node_features": {"encoder": "the BERT of this directory",
                        "name_pooling": model_cfg.name_pooling,
                        "name_pooling_layer": model_cfg.name_pooling_layer},
      "num_parameters": int(sum(t.size for t in tensors.values())),
  }
  storage.write_text(storage.join(out_dir, CONFIG),
                     json.dumps(meta, indent=2) + "\n")
  return [WEIGHTS, CONFIG]


def load_graph_encoder(export_dir: str):
  """(GraphEncoder module, params, config dict) from an export directory;
  apply as `module.apply({"params": params}, graph, targets)`."""
  from safetensors.numpy import load
  from flax.traverse_util import unflatten_dict
  from bali_jax.model.gat import GnnConfig, GraphEncoder
  cfg_path = storage.join(export_dir, CONFIG)
  if not storage.exists(cfg_path):
    raise FileNotFoundError(
        f"{export_dir}: no {CONFIG} (a linear-kind export, or an export "
        "made before the graph encoder was saved)")
  meta = json.loads(storage.read_text(cfg_path))
  if meta.get("format") != FORMAT:
    raise ValueError(f"{cfg_path}: format {meta.get('format')!r}, expected "
                     f"{FORMAT}")
  module = GraphEncoder(GnnConfig(**meta["gnn"]), meta["out_features"],
                        meta["layer_norm_eps"], kind=meta["graph_encoder"])
  with storage.open_file(storage.join(export_dir, WEIGHTS), "rb") as f:
    tensors = load(f.read())
  params = unflatten_dict({tuple(name.split("/")): x for name, x in
                          tensors.items()})
  return module, params, meta
