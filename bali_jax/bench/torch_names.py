"""The same dictionary names encoded by PyTorch `transformers`
(`bench-search --data DIR --compare-torch`): evaluate's encoder against
the stack most users would otherwise use.

The same work as `eval/encoder.py`: each name tokenized with the model's
tokenizer, cut to the same `max_name_tokens`, pooled the same way (mean
over every token incl. [CLS]/[SEP], `mean1` without [CLS], or `cls`),
L2-normalised. The same batching rule: longest first, a batch holds at
most the token budget of one of our encoder calls (rows x row_len), padded
to its longest name as a DataLoader with dynamic padding pads. Timed as
ours is, from strings to normalised vectors; torch uses its default
intra-op threads.
"""

from __future__ import annotations

import time

import numpy as np


def encode_names(model_dir: str, names: list[str], pooling: str,
                 max_name_tokens: int, tokens_per_batch: int
                 ) -> tuple[np.ndarray, dict]:
  """(len(names), D) float32 unit vectors in name order, and
  {"names", "seconds", "names_per_s", "batches", "pad_fraction"}."""
  import torch
  import transformers
  tok = transformers.AutoTokenizer.from_pretrained(model_dir)
  model = transformers.BertModel.from_pretrained(
      model_dir, add_pooling_layer=False).eval()
  t0 = time.perf_counter()
  ids = tok(list(names), truncation=True,
            max_length=max_name_tokens)["input_ids"]
  order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
  out = np.zeros((len(ids), model.config.hidden_size), np.float32)
  batches, real, padded, start = 0, 0, 0, 0
  while start < len(order):
    width = len(ids[order[start]])  # the longest of this batch
    take = order[start:start + max(1, tokens_per_batch // width)]
    start += len(take)
    x = np.full((len(take), width), tok.pad_token_id, np.int64)
    mask = np.zeros((len(take), width), np.int64)
    for r, i in enumerate(take):
      x[r, :len(ids[i])] = ids[i]
      mask[r, :len(ids[i])] = 1
    with torch.inference_mode():
      h = model(input_ids=torch.from_numpy(x),
                attention_mask=torch.from_numpy(mask)).last_hidden_state
      m = torch.from_numpy(mask).unsqueeze(-1).to(h.dtype)
      if pooling == "mean1":
        m[:, 0] = 0
      v = h[:, 0] if pooling == "cls" else (h * m).sum(1) / m.sum(1)
      v = torch.nn.functional.normalize(v, dim=-1)
    out[take] = v.numpy()
    batches, real, padded = batches + 1, real + int(mask.sum()), \
        padded + mask.size
  seconds = time.perf_counter() - t0
  return out, {"names": len(ids), "seconds": round(seconds, 3),
               "names_per_s": round(len(ids) / max(seconds, 1e-9), 1),
               "batches": batches,
               "pad_fraction": round(1 - real / max(padded, 1), 4)}
