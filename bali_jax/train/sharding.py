"""Mesh, the one logical-axis rules table, and derived shardings.

Parameters carry logical axis names (see model/); this table maps them to
mesh axes. Shardings are always derived from the names, never written per
tensor. The LM and the graph tower share the mesh; example rows (sentences,
name rows, subgraphs) are sharded over data x fsdp.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bali_jax.configs import MESH_AXES, mesh_shape

# logical name -> mesh axis (None: replicated). One table for everything.
LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("layers", None),
    ("position", None),
    ("token_type", None),
    ("relation", None),
    ("labels", None),  # task heads' classes (model/heads.py)
)


def make_mesh(cfg, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over all devices, process-major order, so
  each process's devices hold a contiguous block of the batch."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  shape = mesh_shape(cfg, devices.size)
  return Mesh(devices.reshape(shape), MESH_AXES)


def _fit(spec: P, shape, mesh: Mesh) -> P:
  """Drops mesh axes that do not divide a dimension (replicate it)."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape)
                                                       - len(spec))):
    names = (axes,) if isinstance(axes, str) else (axes or ())
    size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    out.append(axes if names and dim % size == 0 else None)
  return P(*out)


def logical_specs(boxed_tree):
  """PartitionSpecs of logical names for a tree of LogicallyPartitioned."""
  return nn.get_partition_spec(boxed_tree)


def param_shardings(abstract_boxed, mesh: Mesh):
  """NamedShardings derived from logical names through LOGICAL_RULES."""
  specs = logical_specs(abstract_boxed)
  mesh_specs = nn.logical_to_mesh(specs, LOGICAL_RULES)
  shapes = jax.tree.map(lambda x: x.shape, nn.meta.unbox(abstract_boxed))
  return jax.tree.map(
      lambda s, shp: NamedSharding(mesh, _fit(s, shp, mesh)), mesh_specs,
      shapes, is_leaf=lambda x: isinstance(x, P))


def _key_names(path) -> tuple:
  return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", None)))
               for k in path)


def like_params(tree, params_abstract, param_sh, mesh: Mesh):
  """Shardings for a tree holding param-shaped leaves (optimizer moments):
  a leaf whose path ends with a parameter's path and has its shape gets
  that parameter's sharding; everything else (counts) is replicated."""
  by_path = {}
  for (path, sh), (_, a) in zip(
      jax.tree_util.tree_leaves_with_path(
          param_sh, is_leaf=lambda x: isinstance(x, NamedSharding)),
      jax.tree_util.tree_leaves_with_path(params_abstract)):
    by_path[_key_names(path)] = (sh, a.shape)
  lengths = sorted({len(p) for p in by_path}, reverse=True)

  def pick(path, leaf):
    names = _key_names(path)
    for n in lengths:
      hit = by_path.get(names[-n:]) if len(names) >= n else None
      if hit and hit[1] == leaf.shape:
        return hit[0]
    return replicated(mesh)
  return jax.tree_util.tree_map_with_path(pick, tree)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (row) axis over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def spec_table(shardings) -> dict[str, str]:
  """'path': 'PartitionSpec' for a golden file."""
  flat = jax.tree_util.tree_leaves_with_path(
      shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  return {jax.tree_util.keystr(k): str(tuple(v.spec)) for k, v in flat}


def global_batch(batch, mesh):
  """Process-local host batches -> global arrays sharded over the mesh's
  batch axes (every process passes its own rows)."""
  return {k: jax.make_array_from_process_local_data(
      batch_sharding(mesh, v.ndim), v) for k, v in batch.items()}
