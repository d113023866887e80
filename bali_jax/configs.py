"""Typed training configuration, presets and `key=value` overrides.

One frozen dataclass holds everything a run needs; presets fill it; the
command line overrides flat keys (`steps=200 lr_lm=3e-5 mesh_fsdp=4`) and
dotted keys into the model (`bert.num_hidden_layers=2`, `gnn.heads=4`).
Invalid combinations fail here, before anything compiles.

Presets:
  tiny             a CPU-sized BERT for tests (vocabulary from the data)
  open_default     the starter MiniLM (6 layers, d=384) from PyPI; the
                   authors' settings but lr_lm=1e-5, chosen by the
                   ablation in README ("What BALI pre-training buys")
  pubmedbert_base  BERT-base sizes (12 x 768), `init_from=` its HF dir
  biolinkbert_large  BERT-large sizes (24 x 1024), `init_from=` its HF dir
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing

from bali_jax.model.bali import BaliConfig
from bali_jax.model.config import BertConfig, tiny_config
from bali_jax.model.gat import GnnConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  model: BaliConfig
  data_dir: str = ""  # a data_prep output directory
  init_from: str = ""  # HF BERT dir (or `starter`); "" = fresh weights
  # schedule and batch (authors: batch 256, ~65k steps)
  steps: int = 100
  batch_size: int = 16  # global packed rows per step
  # the batch as the paper counts it: sentences per step (authors: 256).
  # > 0: batch_size is derived at start-up from the dataset's measured
  # sentences per row (`resolve_batch`); 0: batch_size rows as given.
  batch_sentences: int = 0
  grad_accum_steps: int = 1
  lr_lm: float = 2e-5
  lr_other: float = 1e-4  # GNN, its head and the MLM head
  weight_decay: float = 0.01
  warmup_ratio: float = 0.1
  max_warmup_steps: int = 10_000
  grad_clip_norm: float = 0.0  # 0 = off (the authors do not clip)
  freeze_bert_steps: int = 0  # BERT rate 0 for the first N steps (not in
  # the authors' code: lets the fresh MLM head and GNN warm up first)
  # masking (spec 1.7, 1.8)
  mlm_probability: float = 0.15
  mlm_max_predictions: int = 0  # K slots per row; 0 = ceil(0.2 * seq_len)
  mention_masking_prob: float = 0.0  # [KGA] command: 0.0; code default 0.15
  concept_name_masking_prob: float = 0.0
  # run
  seed: int = 29
  save_every: int = 50
  keep_checkpoints: int = 2
  eval_every: int = 0  # 0 = only at the end
  eval_batches: int = 4
  # zero-shot entity linking on held-out synonyms at every eval point
  el_eval_every: int = 0  # 0 = off; else every N steps and at the end
  el_eval_queries: int = 1000  # seeded sample of held-out synonyms; 0 = all
  log_every: int = 1
  data_shards: int = 0  # fixed input shards; 0 = one per process
  shuffle_buffer: int = 10_000
  # epoch e reads train view e (fresh neighbour/synonym samples); a run
  # needing more epochs than views stops before compiling unless this
  # allows reading view e % views again
  allow_view_reuse: bool = False
  # a step whose loss, gradients or updated parameters are not finite is
  # skipped (state unchanged, counted as `skipped`); this many in a row
  # stop the run, naming the step and its rows (0 = never stop)
  max_bad_steps: int = 5
  # mesh (-1 = the rest of the devices)
  mesh_data: int = -1
  mesh_fsdp: int = 1
  mesh_tensor: int = 1
  peak_tflops_per_device: float = 0.0  # 0 = vendor table; CPU: measured
  # "auto": bfloat16 compute (float32 master weights, LayerNorm, softmax
  # and losses) on GPU/TPU, model.bert.dtype on CPU; or "float32" /
  # "bfloat16" everywhere. Resolved at start-up into model.bert.dtype.
  compute_dtype: str = "auto"

  def replace(self, **kw) -> "TrainConfig":
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _model(bert: BertConfig, **gnn) -> BaliConfig:
  return BaliConfig(bert=bert, gnn=GnnConfig(**gnn))


# the device mesh's axes (train/sharding.py builds it; its size is here)
MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(cfg, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes of the config's mesh on `num_devices`
  (one -1 axis takes what the others leave); arithmetic on the config,
  checked before anything is built."""
  sizes = [cfg.mesh_data, cfg.mesh_fsdp, cfg.mesh_tensor]
  if sizes.count(-1) > 1:
    raise ValueError("at most one mesh axis may be -1")
  known = math.prod([s for s in sizes if s != -1])
  if known < 1 or num_devices % known:
    raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, sizes))} do not "
                     f"divide the {num_devices} devices")
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} uses "
                     f"{math.prod(sizes)} devices, but there are "
                     f"{num_devices}")
  return tuple(sizes)


def get_config(name: str) -> TrainConfig:
  if name == "tiny":
    return TrainConfig(
        model=_model(tiny_config(vocab_size=30522, max_position_embeddings=128),
                     num_layers=2, hidden=32, heads=2),
        steps=4, batch_size=8, save_every=2, eval_batches=1,
        shuffle_buffer=64)
  if name == "open_default":
    return TrainConfig(
        model=_model(BertConfig(vocab_size=30522, hidden_size=384,
                                num_hidden_layers=6, num_attention_heads=12,
                                intermediate_size=1536), num_layers=5,
                     hidden=384, heads=2),
        init_from="starter", steps=100, batch_size=8, batch_sentences=24,
        lr_lm=1e-5, save_every=50, eval_batches=4)
  if name == "pubmedbert_base":
    return TrainConfig(model=_model(BertConfig(vocab_size=30522), hidden=768),
                       steps=65_000, batch_sentences=256, save_every=1000,
                       eval_every=5000)
  if name == "biolinkbert_large":
    return TrainConfig(
        model=_model(BertConfig(vocab_size=28895, hidden_size=1024,
                                num_hidden_layers=24, num_attention_heads=16,
                                intermediate_size=4096), hidden=768),
        steps=65_000, batch_sentences=256, save_every=1000, eval_every=5000)
  raise ValueError(f"unknown config preset {name!r}; expected tiny, "
                   "open_default, pubmedbert_base or biolinkbert_large")


def _coerce(value: str, typ):
  origin = typing.get_origin(typ)
  if typ is bool:
    if value.lower() in ("1", "true", "yes"):
      return True
    if value.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"not a boolean: {value!r}")
  if origin is typing.Union or origin is type(int | None):  # X | None
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if value.lower() in ("none", "null"):
      return None
    return _coerce(value, args[0])
  return typ(value)


def _set(obj, dotted: str, value: str):
  head, _, rest = dotted.partition(".")
  hints = typing.get_type_hints(type(obj))
  if head not in hints:
    raise ValueError(f"unknown config key {dotted!r} (in "
                     f"{type(obj).__name__}: {sorted(hints)})")
  if rest:
    return dataclasses.replace(obj, **{head: _set(getattr(obj, head), rest,
                                                  value)})
  try:
    return dataclasses.replace(obj, **{head: _coerce(value, hints[head])})
  except (TypeError, ValueError) as e:
    raise ValueError(f"config key {dotted}={value!r}: {e}") from e


_SHORTCUTS = {"bert": "model.bert", "gnn": "model.gnn"}
# whole keys that read as top-level switches
_ALIASES = {"graph_encoder": "model.graph_encoder",
            "graph_mlm": "model.graph_mlm"}


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
  """`key=value` strings; `bert.x` / `gnn.x` are shortcuts into model, as
  are `graph_encoder=` and `graph_mlm=`.
  Giving `batch_size` (rows) alone turns a preset's `batch_sentences` off:
  the batch the user typed is the batch they get."""
  keys = {item.partition("=")[0] for item in overrides}
  if "batch_size" in keys and "batch_sentences" not in keys:
    cfg = cfg.replace(batch_sentences=0)
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"override {item!r} is not key=value")
    head, _, rest = key.partition(".")
    key = f"{_SHORTCUTS[head]}.{rest}" if head in _SHORTCUTS and rest else key
    key = _ALIASES.get(key, key)
    cfg = _set(cfg, key, value)
  return cfg


def batch_multiple(cfg: TrainConfig, num_devices: int,
                   process_count: int = 1) -> int:
  """Rows per step must be a multiple of this (mesh x accumulation x
  input shards)."""
  data, fsdp, _ = mesh_shape(cfg, num_devices)
  return math.lcm(data * fsdp * cfg.grad_accum_steps,
                  cfg.data_shards or process_count)


def resolve_batch(cfg: TrainConfig, spec: dict, num_devices: int,
                  process_count: int = 1) -> TrainConfig:
  """`batch_sentences` -> `batch_size` rows, from the dataset's measured
  mean sentences per train row, rounded to the nearest valid multiple."""
  if not cfg.batch_sentences:
    return cfg
  per_row = spec.get("train_row_means", {}).get("sentences")
  if not per_row:
    raise ValueError(
        f"batch_sentences={cfg.batch_sentences}: {cfg.data_dir} does not "
        "record its sentences per row (built by an older data_prep); "
        "rebuild it, or give batch_size in rows with batch_sentences=0")
  m = batch_multiple(cfg, num_devices, process_count)
  rows = max(m, int(round(cfg.batch_sentences / per_row / m)) * m)
  return cfg.replace(batch_size=rows)


def resolve_dtype(cfg: TrainConfig, backend: str) -> TrainConfig:
  """`compute_dtype` -> model.bert.dtype for this backend."""
  want = cfg.compute_dtype
  if want == "auto":
    want = "bfloat16" if backend in ("gpu", "tpu") else cfg.model.bert.dtype
  if want not in ("float32", "bfloat16"):
    raise ValueError(f"compute_dtype={cfg.compute_dtype!r}; expected auto, "
                     "float32 or bfloat16")
  bert = dataclasses.replace(cfg.model.bert, dtype=want)
  return cfg.replace(model=dataclasses.replace(cfg.model, bert=bert))


def resolve(cfg: TrainConfig, spec: dict, num_devices: int,
            process_count: int = 1, backend: str = "cpu",
            saved: dict | None = None) -> TrainConfig:
  """The config as one start of a run trains it, validated: data_shards=0
  -> the saved run's shard count when resuming (the data order is a
  function of it, so a run resumed on another number of processes reads
  the same global batches), else one per process; `batch_sentences` ->
  `batch_size`; `compute_dtype` -> the BERT's dtype on this backend.
  `saved`: the run directory's config.json of an earlier start."""
  if not cfg.data_shards:
    shards = (saved or {}).get("data_shards", 0)
    cfg = cfg.replace(data_shards=shards or process_count)
  cfg = resolve_batch(cfg, spec, num_devices, process_count)
  cfg = resolve_dtype(cfg, backend)
  validate(cfg, num_devices, spec)
  return cfg


def validate(cfg: TrainConfig, num_devices: int, spec: dict | None) -> None:
  """Checks that fail before compiling, with the fix in the message."""
  data, fsdp, tensor = mesh_shape(cfg, num_devices)
  if cfg.batch_size % (data * fsdp * cfg.grad_accum_steps):
    raise ValueError(
        f"batch_size={cfg.batch_size} must be divisible by data x fsdp x "
        f"grad_accum_steps = {data}x{fsdp}x{cfg.grad_accum_steps}")
  if cfg.steps < 1:
    raise ValueError("steps must be >= 1")
  if spec is None:
    return
  from bali_jax.features import spec_budgets
  b = spec_budgets(spec).to_dict()
  bc = cfg.model.bert
  linear = cfg.model.graph_encoder == "linear"
  if linear and not b["lin_rows"]:
    raise ValueError(
        f"graph_encoder=linear: {cfg.data_dir} has no linearised-subgraph "
        "rows (built with --no-linear, or by an older data_prep); rebuild "
        "it without --no-linear, or train a GNN kind (gat, sage)")
  if cfg.concept_name_masking_prob and not b["masked_variants"]:
    raise ValueError(
        f"concept_name_masking_prob={cfg.concept_name_masking_prob}: "
        f"{cfg.data_dir} was built before records carried the masked "
        "name variants; rebuild it with this data_prep")
  if spec["vocab_size"] > bc.vocab_size:
    raise ValueError(f"the records use a {spec['vocab_size']}-token "
                     f"vocabulary but the model has vocab_size="
                     f"{bc.vocab_size}")
  longest = max(b["seq_len"], b["lin_len"] if linear else b["name_len"])
  if longest > bc.max_position_embeddings:
    raise ValueError(f"records have rows of {longest} tokens but the model "
                     f"has max_position_embeddings={bc.max_position_embeddings}")
  if cfg.model.gnn.num_relations and (
      cfg.model.gnn.num_relations < spec["num_relations"]):
    raise ValueError(f"gnn.num_relations={cfg.model.gnn.num_relations} < "
                     f"{spec['num_relations']} relations in the records")


# what a resumed run may change: length, cadence, logging, the mesh and the
# number of processes (the data position is global), how the same math is
# executed; everything else (model, data, optimiser, batch, seed) would
# silently continue another run and is refused
RESUMABLE_KEYS = frozenset({
    "steps", "save_every", "keep_checkpoints", "eval_every", "eval_batches",
    "el_eval_every", "el_eval_queries", "log_every", "mesh_data",
    "mesh_fsdp", "mesh_tensor", "peak_tflops_per_device", "max_bad_steps",
    "grad_accum_steps", "allow_view_reuse", "model.bert.remat_policy",
    "model.bert.attention", "data_dir", "init_from"})


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_resume(saved: dict, cfg: TrainConfig, workdir: str,
                 saved_spec: dict | None = None,
                 spec: dict | None = None) -> None:
  """Refuses to resume a run with a config that changes what is trained,
  or with other data (the record specs differ; the path may move, e.g. to
  gs://); the message lists every differing key. Keys the saved config
  lacks (added by a later version) keep their defaults and pass."""
  old, new = _flat(_legacy(saved)), _flat(cfg.to_dict())
  diff = sorted(k for k in old if old[k] != new.get(k)
                and k not in RESUMABLE_KEYS)
  if saved_spec is not None and spec is not None:
    a, b = _flat(saved_spec), _flat(spec)
    added = lambda k: k == "views" or (k.startswith("splits.train_view")
                                       and k not in a)  # add-views
    diff += sorted(f"data: {k}" for k in a.keys() | b.keys()
                   if a.get(k) != b.get(k) and not added(k))
    old.update({f"data: {k}": v for k, v in a.items()})
    new.update({f"data: {k}": v for k, v in b.items()})
  if diff:
    lines = "\n".join(f"  {k}: {old.get(k)!r} -> {new.get(k)!r}"
                      for k in diff)
    raise ValueError(
        f"{workdir} holds a run with another config; resuming would change "
        f"what is trained:\n{lines}\nuse a new --workdir, or go back to "
        f"those values (may change: {', '.join(sorted(RESUMABLE_KEYS))})")


def _legacy(d: dict) -> dict:
  """A saved config as this version names it: `model.gnn.kind`
  ("gatv2" | "sage") became `model.graph_encoder` ("gat" | "sage")."""
  m = dict(d.get("model", {}))
  gnn = dict(m.get("gnn", {}))
  if "kind" in gnn:
    kind = gnn.pop("kind")
    m.setdefault("graph_encoder", "gat" if kind == "gatv2" else kind)
    m["gnn"] = gnn
    d = {**d, "model": m}
  return d


def from_dict(d: dict) -> TrainConfig:
  """Inverse of `TrainConfig.to_dict` (reads a run's config.json)."""
  d = _legacy(d)
  m = dict(d["model"])
  model = BaliConfig(**{**m, "bert": BertConfig(**m["bert"]),
                        "gnn": GnnConfig(**m["gnn"])})
  return TrainConfig(**{**d, "model": model})


def load_run_config(workdir: str) -> TrainConfig:
  from bali_jax import storage
  return from_dict(json.loads(storage.read_text(storage.join(workdir,
                                                              "config.json"))))
