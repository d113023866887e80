"""Task examples -> fixed-shape arrays and batches; the tasks' metrics.

Every batch has the same shape (the last one is padded with weight-0
examples), so one compiled step serves the whole fine-tuning run. Inputs are
tokenized the way the authors' scripts and HF's run_glue / run_swag do:
(text_a, text_b) pairs, `truncation=True` (longest first), padded to
`max_length`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bali_jax.finetune.tasks import TaskData


@dataclasses.dataclass
class Encoded:
  input_ids: np.ndarray  # (N, L) or (N, C, L) int32
  attention_mask: np.ndarray
  token_type_ids: np.ndarray
  labels: np.ndarray  # (N,) int32, or (N, K) float32 for multi-label
  uids: list[str]

  def __len__(self) -> int:
    return len(self.uids)

  def take(self, idx) -> "Encoded":
    idx = np.asarray(idx, np.int64)
    return Encoded(self.input_ids[idx], self.attention_mask[idx],
                   self.token_type_ids[idx], self.labels[idx],
                   [self.uids[i] for i in idx])


def _tokenize(tokenizer, pairs, max_length: int) -> dict[str, np.ndarray]:
  """(text_a, text_b | None) pairs -> (n, max_length) arrays."""
  out = {k: np.zeros((len(pairs), max_length), np.int32)
         for k in ("input_ids", "attention_mask", "token_type_ids")}
  for with_b in (False, True):
    idx = [i for i, (_, b) in enumerate(pairs) if (b is not None) == with_b]
    if not idx:
      continue
    a = [pairs[i][0] for i in idx]
    b = [pairs[i][1] for i in idx] if with_b else None
    enc = tokenizer(a, b, truncation=True, max_length=max_length,
                    padding="max_length", return_token_type_ids=True)
    for k in out:
      out[k][idx] = np.asarray(enc[k], np.int32)
  return out


def encode(data: TaskData, tokenizer, max_length: int) -> Encoded:
  ex = data.examples
  choices = len(ex[0].pairs) if data.kind == "choice" else 1
  pairs = [p for e in ex for p in e.pairs]
  t = _tokenize(tokenizer, pairs, max_length)
  shape = (len(ex), choices, max_length) if data.kind == "choice" else \
      (len(ex), max_length)
  t = {k: v.reshape(shape) for k, v in t.items()}
  if data.kind == "multi":
    labels = np.zeros((len(ex), len(data.labels)), np.float32)
    for i, e in enumerate(ex):
      labels[i, e.label] = 1.0
  else:
    labels = np.asarray([e.label for e in ex], np.int32)
  return Encoded(t["input_ids"], t["attention_mask"], t["token_type_ids"],
                 labels, [e.uid for e in ex])


def batches(enc: Encoded, batch_size: int, order=None, start: int = 0):
  """Yields dicts of `batch_size` rows in `order` (default: file order),
  from batch `start`; the last is padded with copies of row 0 at weight 0."""
  order = np.arange(len(enc)) if order is None else np.asarray(order)
  n = len(order)
  for b in range(start, -(-n // batch_size)):
    idx = order[b * batch_size:(b + 1) * batch_size]
    pad = batch_size - len(idx)
    weights = np.concatenate([np.ones(len(idx)), np.zeros(pad)])
    idx = np.concatenate([idx, np.zeros(pad, idx.dtype)])
    yield {"input_ids": enc.input_ids[idx],
           "attention_mask": enc.attention_mask[idx],
           "token_type_ids": enc.token_type_ids[idx],
           "labels": enc.labels[idx],
           "weights": weights.astype(np.float32)}


def steps_per_epoch(n: int, batch_size: int) -> int:
  return -(-n // batch_size)


# ------------------------------------------------------------------ metrics
def _f1(tp, fp, fn):
  p = tp / (tp + fp) if tp + fp else 0.0
  r = tp / (tp + fn) if tp + fn else 0.0
  return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def predict(kind: str, logits: np.ndarray) -> np.ndarray:
  """single / choice: the argmax (N,); multi: sigmoid > 0.5 as 0/1 (N, K)."""
  if kind == "multi":
    return (logits > 0).astype(np.int32)
  return logits.argmax(-1).astype(np.int32)


def metric_names(kind: str, negative: int | None = None) -> list[str]:
  """What `metrics` reports for a task kind (to check `metric=` early)."""
  if kind == "multi":
    return ["micro_precision", "micro_recall", "micro_f1", "macro_f1",
            "accuracy", "hoc_precision", "hoc_recall", "hoc_f1"]
  if kind == "choice":
    return ["accuracy"]
  return ["accuracy", "macro_f1"] + (["precision", "recall", "f1"]
                                     if negative is not None else [])


def hoc_metrics(uids, pred: np.ndarray, gold: np.ndarray) -> dict:
  """BLURB HoC's document-level score (LinkBERT's `eval_hoc`, which the
  authors' run_seqcls uses): the labels of the sentences of a document
  (id `DOC_SENT`) are united, then micro P/R/F1 over documents x labels."""
  docs: dict = {}
  for u, p, g in zip(uids, pred, gold):
    d = docs.setdefault(str(u).split("_")[0], [np.zeros_like(p),
                                               np.zeros_like(g)])
    d[0] |= p
    d[1] |= g
  p = np.stack([d[0] for d in docs.values()])
  g = np.stack([d[1] for d in docs.values()])
  prec, rec, f1 = _f1(int((p & g).sum()), int((p & (1 - g)).sum()),
                      int(((1 - p) & g).sum()))
  return {"hoc_precision": prec, "hoc_recall": rec, "hoc_f1": f1}


def metrics(kind: str, logits: np.ndarray, labels: np.ndarray,
            num_labels: int, uids=None, negative: int | None = None
            ) -> dict[str, float]:
  """accuracy (+ macro F1 for classification; multi-label: micro P/R/F1,
  macro F1, exact-match accuracy and HoC's document-level P/R/F1), as
  run_seqcls reports. `negative`: the index of a "no relation" class;
  adds run_seqcls's PRF1 (micro P/R/F1 over the other classes, ChemProt /
  DDI / GAD style)."""
  pred = predict(kind, logits)
  if kind == "multi":
    gold = labels.astype(np.int32)
    tp = int((pred & gold).sum())
    fp = int((pred & (1 - gold)).sum())
    fn = int(((1 - pred) & gold).sum())
    p, r, f = _f1(tp, fp, fn)
    per = [_f1(int((pred[:, k] & gold[:, k]).sum()),
               int((pred[:, k] & (1 - gold[:, k])).sum()),
               int(((1 - pred[:, k]) & gold[:, k]).sum()))[2]
           for k in range(gold.shape[1])]
    return {"micro_precision": p, "micro_recall": r, "micro_f1": f,
            "macro_f1": float(np.mean(per)),
            "accuracy": float((pred == gold).all(-1).mean()),
            **hoc_metrics(uids if uids is not None else range(len(pred)),
                          pred, gold)}
  out = {"accuracy": float((pred == labels).mean())}
  if kind == "single":
    per = [_f1(int(((pred == k) & (labels == k)).sum()),
               int(((pred == k) & (labels != k)).sum()),
               int(((pred != k) & (labels == k)).sum()))[2]
           for k in range(num_labels)]
    out["macro_f1"] = float(np.mean(per))
    if negative is not None:
      pos = pred != negative
      tp = int(((pred == labels) & pos).sum())
      p, r, f = _f1(tp, int(pos.sum()) - tp,
                    int((labels != negative).sum()) - tp)
      out.update(precision=p, recall=r, f1=f)
  return out
