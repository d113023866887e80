"""The import graph of bali_jax/ and data_prep/ (tests excluded) against
the layer order in README "Layout": no circle, no import from a lower
layer into a higher one, data_prep beside the library (it imports only
the base; the library never imports data_prep), and no `_private` name
taken from another module. Parsed from the source (function-level imports
too), so it needs nothing installed and cannot be fooled by import order.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# lowest first; a module belongs to the longest prefix that names it
LAYERS = (
    ("base", ("bali_jax", "bali_jax.storage", "bali_jax.tf_host",
              "bali_jax.features",
              "bali_jax.open_data", "bali_jax.hf.tokenizer",
              "bali_jax.readers", "bali_jax.records")),
    ("model", ("bali_jax.model", "bali_jax.losses")),
    ("hf", ("bali_jax.hf",)),
    ("configs", ("bali_jax.configs",)),
    ("train", ("bali_jax.train",)),
    ("eval", ("bali_jax.eval",)),
    ("finetune", ("bali_jax.finetune",)),
    ("bench", ("bali_jax.bench",)),
    ("cli", ("bali_jax.cli", "bali_jax.export_command", "bali_jax.__main__")),
)
DATA_PREP = "data_prep"  # beside the library: may import the base only


def modules(root: str = ROOT) -> dict[str, str]:
  """Dotted name -> path of every module of the two packages."""
  out = {}
  for pkg in ("bali_jax", DATA_PREP):
    for d, _, files in os.walk(os.path.join(root, pkg)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(d, f)
          name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
          out[name.removesuffix(".__init__")] = path
  return out


def imports(name: str, path: str, known) -> tuple[set, list]:
  """(modules of ours that `name` imports, private names it takes from
  them: "target._name")."""
  tree = ast.parse(open(path).read(), path)
  pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
  edges, private, bound = set(), [], {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      for a in node.names:
        full = f"{base}.{a.name}"
        target = full if full in known else base
        if target not in known:
          continue
        edges.add(target)
        if full in known:
          bound[a.asname or a.name] = full
        elif a.name.startswith("_"):
          private.append(f"{target}.{a.name}")
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name in known:
          edges.add(a.name)
          if a.asname:
            bound[a.asname] = a.name
  for node in ast.walk(tree):  # module._name on an imported module
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in bound and node.attr.startswith("_")
        and not node.attr.startswith("__")):
      private.append(f"{bound[node.value.id]}.{node.attr}")
  edges.discard(name)
  return edges, private


def layer(name: str) -> tuple[int, str]:
  if name == DATA_PREP or name.startswith(DATA_PREP + "."):
    return -1, DATA_PREP
  best = None
  for i, (label, prefixes) in enumerate(LAYERS):
    for p in prefixes:
      if name == p or name.startswith(p + "."):
        if best is None or len(p) > best[0]:
          best = (len(p), i, label)
  assert best is not None, f"{name} is in no layer: add it to LAYERS"
  return best[1], best[2]


def problems(root: str = ROOT) -> list[str]:
  known = modules(root)
  graph, out = {}, []
  for name, path in sorted(known.items()):
    edges, private = imports(name, path, known)
    graph[name] = edges
    out += [f"{name} takes the private {p}" for p in private]
    here, here_label = layer(name)
    for t in sorted(edges):
      there, there_label = layer(t)
      if here_label == DATA_PREP and there_label not in (DATA_PREP, "base"):
        out.append(f"{name} (data_prep) imports {t} ({there_label}): "
                   "data_prep imports the base only")
      elif here_label != DATA_PREP and there_label == DATA_PREP:
        out.append(f"{name} ({here_label}) imports {t}: the library never "
                   "imports data_prep")
      elif here_label != DATA_PREP and there > here:
        out.append(f"{name} ({here_label}) imports {t} ({there_label}): "
                   "an upward edge")
  out += [f"circle: {' -> '.join(c)}" for c in circles(graph)]
  return out


def circles(graph: dict[str, set]) -> list[list[str]]:
  """One cycle per strongly connected component of more than one module
  (Tarjan's algorithm)."""
  index, low, stack, on, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        found.append(sorted(comp) + [sorted(comp)[0]])

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_import_graph_has_no_circle_upward_edge_or_private_import():
  assert not problems(), "\n".join(problems())


def _write(root, files: dict[str, str]) -> str:
  for rel, text in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)
  return str(root)


@pytest.mark.parametrize("files, expect", [
    ({"bali_jax/train/loop.py": "from bali_jax.eval import report\n",
      "bali_jax/eval/report.py": ""}, "an upward edge"),
    ({"bali_jax/eval/a.py": "def f():\n  from bali_jax.eval import b\n",
      "bali_jax/eval/b.py": "from bali_jax.eval.a import f\n"},
     "circle: bali_jax.eval.a -> bali_jax.eval.b -> bali_jax.eval.a"),
    ({"bali_jax/eval/a.py": "from bali_jax.train.step import _corrupt\n",
      "bali_jax/train/step.py": ""}, "takes the private"),
    ({"bali_jax/bench/a.py": "from bali_jax.train import loop\n"
                             "x = loop._global\n",
      "bali_jax/train/loop.py": ""}, "bali_jax.train.loop._global"),
    ({"bali_jax/eval/a.py": "import data_prep.pipelines.build\n",
      "data_prep/pipelines/build.py": ""}, "never imports data_prep"),
    ({"data_prep/pipelines/build.py": "from bali_jax.train import loop\n",
      "bali_jax/train/loop.py": ""}, "data_prep imports the base only"),
])
def test_the_check_finds_each_kind_of_problem(tmp_path, files, expect):
  root = _write(tmp_path, {"bali_jax/__init__.py": "",
                           "data_prep/__init__.py": "", **files})
  found = problems(root)
  assert any(expect in p for p in found), found
