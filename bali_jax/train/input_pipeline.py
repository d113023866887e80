"""Input pipeline: TFRecords -> per-process batches -> global arrays.

The train split is cut into S fixed *input shards* (contiguous row ranges,
`data_shards`, default one per process). Global batch j of an epoch is the
concatenation, in shard order, of batch j of every shard; each process reads
only its own contiguous block of shards. So the global batches, and the
losses, do not depend on how many processes read them (a 2-process run
equals a 1-process run), and nobody reads another process's data.

Epoch e reads the view `train_view{e}` (a new neighbour/synonym sample per
epoch, as the authors resample every time a sentence is read) in an order
shuffled from (seed, epoch, shard). A run planned for more epochs than the
dataset has views stops here, before anything compiles, with the command
that adds them (`allow_view_reuse=true` reads view e % views instead). The
position is a pure function of the step, so a resumed run re-enters the
same epoch at the same batch.
"""

from __future__ import annotations

import json

import numpy as np

from bali_jax.tf_host import host_tf, host_tfds

MODEL_KEYS_DROPPED = ("example_id", "num_sentences", "node_concept")
ID_KEY = "example_id"  # kept on the host to name a batch in errors


NAME_KEYS = ("name_ids", "name_segment_ids")
LINEAR_KEYS = ("lin_ids", "lin_segment_ids", "entity_lin")
MASKED_KEYS = ("masked_name_ids", "masked_name_segment_ids",
               "masked_lin_ids", "masked_lin_segment_ids")


def dropped_keys(cfg) -> tuple[str, ...]:
  """Record keys this run's model never reads: relations unless typed, the
  other graph kind's rows (a dataset carries both), the concept-name
  masking variants unless that masking is on."""
  m = cfg.model
  out = MODEL_KEYS_DROPPED
  if not m.gnn.num_relations:
    out += ("edge_relation",)
  out += NAME_KEYS if m.graph_encoder == "linear" else LINEAR_KEYS
  if not cfg.concept_name_masking_prob:
    out += MASKED_KEYS
  elif m.graph_encoder == "linear":
    out += MASKED_KEYS[:2]
  else:
    out += MASKED_KEYS[2:]
  return out


def load_spec(data_dir: str) -> dict:
  from bali_jax import storage
  path = storage.join(data_dir, "bali_dataset.json")
  if not storage.exists(path):
    raise FileNotFoundError(f"data_dir={data_dir}: no bali_dataset.json "
                            "(build one with `python -m data_prep`)")
  return json.loads(storage.read_text(path))


class CorruptRecordsError(ValueError):
  """A record file of the dataset is truncated or corrupt."""


def diagnose_split(builder, split: str, cause: Exception):
  """Finds the first unreadable record of a split, file by file, and
  returns the error that names it (never a silent short epoch)."""
  tf = host_tf()
  info = builder.info.splits[split]
  for path, expected in zip(info.filepaths, info.shard_lengths):
    n = 0
    try:
      for _ in tf.data.TFRecordDataset(str(path)):
        n += 1
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      return CorruptRecordsError(
          f"{path}: record {n} (0-based) of split {split} cannot be read: "
          f"{e.message.splitlines()[0] if e.message else e}; the file is "
          "truncated or corrupt: rebuild the dataset (or restore the file)")
    if n != expected:
      return CorruptRecordsError(
          f"{path}: {n} records where the dataset info says {expected} "
          f"(split {split}): the file was cut at a record boundary; "
          "rebuild the dataset (or restore the file)")
  return CorruptRecordsError(f"split {split}: reading failed ({cause}) but "
                             "every record file reads back whole")


class InputPipeline:
  def __init__(self, data_dir: str, spec: dict, cfg, process_index: int,
               process_count: int):
    tfds = host_tfds()
    self.cfg, self.spec = cfg, spec
    self.shards = cfg.data_shards or process_count
    if self.shards % process_count:
      raise ValueError(f"data_shards={self.shards} is not a multiple of the "
                       f"{process_count} processes")
    if cfg.batch_size % self.shards:
      raise ValueError(f"batch_size={cfg.batch_size} is not divisible by "
                       f"data_shards={self.shards}")
    per = self.shards // process_count
    self.local = range(process_index * per, (process_index + 1) * per)
    self.shard_batch = cfg.batch_size // self.shards
    from bali_jax import storage
    self.builder = tfds.builder_from_directory(  # local or gs://
        storage.join(data_dir, spec["tfds_dir"]))
    # the example ids travel to the host loop, which names bad batches
    self.drop = tuple(k for k in dropped_keys(cfg)
                      if k != ID_KEY)
    for v in range(spec["views"]):
      if self.steps_per_epoch(v) < 1:
        raise ValueError(
            f"train_view{v} has {spec['splits'][f'train_view{v}']} rows: too "
            f"few for {self.shards} shards x {self.shard_batch} rows")
    need = self.epochs_needed()
    if need > spec["views"] and not cfg.allow_view_reuse:
      raise ValueError(
          f"steps={cfg.steps} of {cfg.batch_size} rows need {need} epochs, "
          f"but {data_dir} has {spec['views']} train views and each epoch "
          "reads a fresh one; add views with `python -m data_prep add-views "
          f"--data {data_dir} --views {need}` (or set allow_view_reuse=true "
          "to read the same samples again)")

  def epochs_needed(self) -> int:
    return self.position(self.cfg.steps - 1)[0] + 1

  def view(self, epoch: int) -> str:
    """The split epoch `epoch` reads."""
    return f"train_view{epoch % self.spec['views']}"

  def steps_per_epoch(self, epoch: int) -> int:
    n = self.spec["splits"][self.view(epoch)]
    return (n // self.shards) // self.shard_batch

  def position(self, step: int) -> tuple[int, int]:
    """(epoch, batch index in the epoch) of a global step."""
    epoch = 0
    while step >= self.steps_per_epoch(epoch):
      step -= self.steps_per_epoch(epoch)
      epoch += 1
    return epoch, step

  def _shard_ds(self, split: str, n_rows: int, shard: int, seed, skip: int,
                take: int, shuffle: bool):
    tf = host_tf()
    start = shard * n_rows // self.shards
    end = (shard + 1) * n_rows // self.shards
    ds = self.builder.as_dataset(split=f"{split}[{start}:{end}]",
                                 shuffle_files=False)
    if shuffle:
      ds = ds.shuffle(self.cfg.shuffle_buffer, seed=seed,
                      reshuffle_each_iteration=False)
    ds = ds.batch(self.shard_batch, drop_remainder=True).take(take).skip(skip)
    return ds.map(lambda r: {k: v for k, v in r.items()
                             if k not in self.drop},
                  num_parallel_calls=tf.data.AUTOTUNE)

  def _zip_local(self, datasets):
    tf = host_tf()
    ds = tf.data.Dataset.zip(tuple(datasets)).map(
        lambda *parts: {k: tf.concat([p[k] for p in parts], 0)
                        for k in parts[0]})
    return ds.prefetch(2)

  def train_batches(self, start_step: int, with_ids: bool = False,
                    stop: int | None = None):
    """Yields (step, local batch) from `start_step` on, forever or up to
    step `stop` (excluded: no batch past the run's last step is read, nor
    the next view opened); with `with_ids`, (step, local batch, the rows'
    example ids)."""
    tfds = host_tfds()
    epoch, index = self.position(start_step)
    step = start_step
    while stop is None or step < stop:
      view = self.view(epoch)
      n = self.spec["splits"][view]
      steps = self.steps_per_epoch(epoch)
      parts = [self._shard_ds(view, n, s,
                              seed=(self.cfg.seed * 1_000_003 + epoch * 1009
                                    + s) % (2 ** 31),
                              skip=index, take=steps, shuffle=True)
               for s in self.local]
      seen = 0
      for batch in self._checked(view, tfds.as_numpy(
          self._zip_local(parts))):
        if stop is not None and step >= stop:
          return
        ids = batch.pop(ID_KEY)
        yield (step, batch, ids) if with_ids else (step, batch)
        step += 1
        seen += 1
      if seen < steps - index:  # never a silent short epoch
        raise diagnose_split(self.builder, view, RuntimeError(
            f"{seen} of {steps - index} batches"))
      epoch, index = epoch + 1, 0

  def _checked(self, split: str, batches):
    """Batches of a split; a truncated or corrupt record file raises an
    error naming the file and the record."""
    tf = host_tf()
    try:
      yield from batches
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError,
            tf.errors.FailedPreconditionError) as e:  # corrupt, cut short
      raise diagnose_split(self.builder, split, e) from None

  def eval_batches(self, split: str = "validation"):
    """The first `eval_batches` batches of a held-out split (fixed)."""
    tfds = host_tfds()
    n = self.spec["splits"].get(split, 0)
    steps = min(self.cfg.eval_batches, (n // self.shards) // self.shard_batch)
    if steps < 1:
      return []
    parts = [self._shard_ds(split, n, s, seed=0, skip=0, take=steps,
                            shuffle=False) for s in self.local]
    out = list(self._checked(split, tfds.as_numpy(self._zip_local(parts))))
    for b in out:
      b.pop(ID_KEY)
    return out


def example_batch(spec: dict, cfg, rows: int = 1) -> dict[str, np.ndarray]:
  """A zero batch with the record shapes (for init and shape checks)."""
  from bali_jax.features import feature_shapes, spec_budgets
  shapes = feature_shapes(spec_budgets(spec))
  drop = dropped_keys(cfg)
  return {k: np.zeros((rows,) + s, d) for k, (s, d) in shapes.items()
          if k not in drop}


class Prefetch:
  """Runs `fn` over an iterator in a background thread, `depth` items
  ahead: the next batches are already global device arrays while the
  current step runs, so the host never stalls the device. Errors of the
  producer are raised in the consumer; `close()` stops the thread."""

  _END = object()

  def __init__(self, iterator, fn, depth: int = 2):
    import queue
    import threading
    self._q = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(iterator, fn),
                                    daemon=True, name="prefetch")
    self._thread.start()

  def _put(self, item) -> bool:
    import queue
    while not self._stop.is_set():
      try:
        self._q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _run(self, iterator, fn):
    try:
      for item in iterator:
        if not self._put(fn(item)):
          return
      self._put(self._END)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
      self._put(e)

  def __iter__(self):
    return self

  def __next__(self):
    item = self._q.get()
    if item is self._END:
      raise StopIteration
    if isinstance(item, BaseException):
      raise item
    return item

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5)
