"""The authors' PyTorch stack on the very same work (`bench --compare-torch`).

As the authors' code runs a BALI step (method spec 1.5-1.7, 1.10, 3.1):
one `transformers.BertModel` shared by sentences and concept names (no
packing: one sequence per sentence and per name, each padded to the
batch's longest, as a DataLoader with dynamic padding does); a fresh,
untied MLM head over every position with ignore_index -100; five PyTorch
Geometric `GATv2Conv` (heads 2, concatenated, shared weights, self-loops,
attention dropout 0.1; dropout then GELU between layers) and the output
head Linear -> LayerNorm -> Dropout on the targets; pytorch-metric-learning
`NTXentLoss(0.07)` over concat(text, graph) with labels concat(ids, ids);
AdamW with 2e-5 for the BERT and 1e-4 for the rest.

The batches are unpacked from our records: the same sentences, mentions,
concepts, sampled neighbours and sampled names. MLM corruption is drawn
here (15% of non-special tokens, 80/10/10), as the authors' collator does.

Optional extras (`requirements-bench.txt`): torch, torch_geometric,
pytorch-metric-learning. Never imported by the library or its tests'
required path.
"""

from __future__ import annotations

import time

import numpy as np


def unpack(rec_batch: dict, spec: dict) -> dict:
  """Our packed rows -> the authors' unpacked batch (numpy).

  Returns sentences (S, Ls) padded to the longest, their masks; mention
  (flat token index, entity index) pairs; entity concept ids; node names
  (N, Ln) padded to the longest name, node rows [targets; neighbours];
  edges neighbour -> target over node rows."""
  sents, names, ment_pos, ment_ent, ent_ids = [], [], [], [], []
  targets, neigh, src_dst_rows = [], [], []
  ids_all = rec_batch["input_ids"]
  for r in range(ids_all.shape[0]):
    seg = rec_batch["segment_ids"][r]
    sent_index = {}  # segment id -> (sentence index, start token)
    for s in np.unique(seg[seg > 0]):
      pos = np.nonzero(seg == s)[0]
      sent_index[int(s)] = (len(sents), int(pos[0]))
      sents.append(ids_all[r, pos])
    emask = rec_batch["entity_mask"][r].astype(bool)
    ent_global = {}
    for e in np.nonzero(emask)[0]:
      ent_global[int(e)] = len(ent_ids)
      ent_ids.append(int(rec_batch["entity_concept"][r, e]))
    for t, e, m in zip(rec_batch["mention_token"][r],
                       rec_batch["mention_entity"][r],
                       rec_batch["mention_mask"][r]):
      if m:
        si, start = sent_index[int(seg[t])]
        ment_pos.append((si, int(t) - start))
        ment_ent.append(ent_global[int(e)])
    nseg = rec_batch["name_segment_ids"][r]
    nids = rec_batch["name_ids"][r]
    node_name = {}
    for n in np.nonzero(rec_batch["node_mask"][r])[0]:
      node_name[int(n)] = nids[nseg == n + 1]
    target_of = {int(rec_batch["entity_node"][r, e]): int(e)
                 for e in np.nonzero(emask)[0]}
    for n, e in target_of.items():
      targets.append((r, n, node_name[n]))
    for s, d, m in zip(rec_batch["edge_src"][r], rec_batch["edge_dst"][r],
                       rec_batch["edge_mask"][r]):
      if m:
        neigh.append((r, int(s), node_name[int(s)]))
        src_dst_rows.append((r, int(d)))
  # node rows: all targets (in entity order), then all neighbours
  row_of_target = {(r, n): i for i, (r, n, _) in enumerate(targets)}
  names = [x for _, _, x in targets] + [x for _, _, x in neigh]
  edges = [(len(targets) + i, row_of_target[rd])
           for i, rd in enumerate(src_dst_rows)]
  ls = max(len(x) for x in sents)
  ln = max(len(x) for x in names)
  pad_id = spec["pad_token_id"]

  def pad(xs, n):  # ids padded with the pad id, and the attention mask
    ids = np.stack([np.pad(x, (0, n - len(x)), constant_values=pad_id)
                    for x in xs]).astype(np.int64)
    lens = np.asarray([len(x) for x in xs])
    return ids, (np.arange(n)[None] < lens[:, None]).astype(np.int64)

  sent_ids, sent_mask = pad(sents, ls)
  name_ids, name_mask = pad(names, ln)
  mp = np.asarray(ment_pos)
  return {
      "ids": sent_ids, "mask": sent_mask,
      "ment_flat": mp[:, 0] * ls + mp[:, 1], "ment_ent": np.asarray(ment_ent),
      "concept_ids": np.asarray(ent_ids),
      "node_ids": name_ids, "node_mask": name_mask,
      "edge_index": np.asarray(edges, np.int64).T.reshape(2, -1),
      "num_targets": len(targets),
  }


class TorchStep:
  """The authors' stack, built once; `run(n)` times n steps."""

  def __init__(self, cfg, spec, local_batches: list[dict], seed: int = 0,
               init_dir: str | None = None):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from pytorch_metric_learning.losses import NTXentLoss
    from torch_geometric.nn import GATv2Conv
    from transformers import BertConfig, BertModel
    self.torch = torch
    torch.manual_seed(seed)
    bc, g = cfg.model.bert, cfg.model.gnn
    d = bc.hidden_size
    if init_dir:
      bert = BertModel.from_pretrained(init_dir, add_pooling_layer=False)
    else:
      bert = BertModel(BertConfig(
          vocab_size=bc.vocab_size, hidden_size=d,
          num_hidden_layers=bc.num_hidden_layers,
          num_attention_heads=bc.num_attention_heads,
          intermediate_size=bc.intermediate_size,
          max_position_embeddings=bc.max_position_embeddings),
          add_pooling_layer=False)
    hidden = g.hidden or d
    widths = [d] + [hidden] * (g.num_layers - 1) + [d]

    class Bali(nn.Module):
      def __init__(self):
        super().__init__()
        self.bert = bert
        v = bert.config.vocab_size
        self.lm_head = nn.Sequential(nn.Linear(d, d), nn.GELU(),
                                     nn.LayerNorm(d, eps=bc.layer_norm_eps),
                                     nn.Linear(d, v))
        nn.init.zeros_(self.lm_head[3].bias)
        self.convs = nn.ModuleList(
            GATv2Conv(i, o // g.heads, heads=g.heads,
                      dropout=g.attention_dropout, add_self_loops=True,
                      edge_dim=d, share_weights=True)
            for i, o in zip(widths, widths[1:]))
        self.graph_out = nn.Sequential(nn.Linear(d, d),
                                       nn.LayerNorm(d, eps=1e-12),
                                       nn.Dropout(g.dropout))
        self.ntxent = NTXentLoss(temperature=cfg.model.temperature)

      def forward(self, b):
        tok = self.bert(input_ids=b["ids"],
                        attention_mask=b["mask"]).last_hidden_state
        logits = self.lm_head(tok)  # every position, as the authors
        mlm = F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(),
                              ignore_index=-100)
        hn = self.bert(input_ids=b["node_ids"],
                       attention_mask=b["node_mask"]).last_hidden_state
        m = b["node_mask"][..., None].to(hn.dtype)
        x = (hn * m).sum(1) / m.sum(1)
        for i, conv in enumerate(self.convs):
          x = conv(x, b["edge_index"])
          if i < len(self.convs) - 1:
            x = F.gelu(F.dropout(x, g.dropout, self.training))
        flat = tok.flatten(0, 1)
        n_ent = b["concept_ids"].numel()
        text = flat.new_zeros(n_ent, d).index_add(
            0, b["ment_ent"], flat[b["ment_flat"]])
        count = flat.new_zeros(n_ent).index_add(
            0, b["ment_ent"], flat.new_ones(b["ment_ent"].numel()))
        text = text / count.clamp(min=1)[:, None]
        graph = self.graph_out(x[:b["num_targets"]])
        ids = b["concept_ids"]
        align = self.ntxent(torch.cat([text, graph]), torch.cat([ids, ids]))
        return mlm + align

    self.model = Bali().train()
    bert_params = list(self.model.bert.parameters())
    seen = {id(p) for p in bert_params}
    other = [p for p in self.model.parameters() if id(p) not in seen]
    self.opt = torch.optim.AdamW(
        [{"params": bert_params, "lr": cfg.lr_lm},
         {"params": other, "lr": cfg.lr_other}],
        weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    self.batches = [self._tensors(unpack(b, spec), spec, gen)
                    for b in local_batches]
    self.i = 0
    self.last_losses: list[float] = []

  def _tensors(self, u: dict, spec: dict, gen) -> dict:
    torch = self.torch
    t = {k: torch.as_tensor(v) for k, v in u.items()
         if isinstance(v, np.ndarray)}
    t["num_targets"] = u["num_targets"]
    ids, mask = t["ids"], t["mask"]
    special = torch.zeros_like(ids, dtype=torch.bool)
    for s in spec["special_token_ids"]:
      special |= ids == s
    chosen = (mask == 1) & ~special & (
        torch.rand(ids.shape, generator=gen) < 0.15)
    t["labels"] = torch.where(chosen, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=gen)
    rand_ids = torch.randint(len(spec["special_token_ids"]),
                             spec["vocab_size"], ids.shape, generator=gen)
    x = torch.where(chosen & (r < 0.8), spec["mask_token_id"], ids)
    t["ids"] = torch.where(chosen & (r >= 0.8) & (r < 0.9), rand_ids, x)
    return t

  def run(self, n: int) -> list[float]:
    times = []
    for _ in range(n):
      b = self.batches[self.i % len(self.batches)]
      self.i += 1
      t0 = time.perf_counter()
      self.opt.zero_grad(set_to_none=True)
      loss = self.model(b)
      loss.backward()
      self.opt.step()
      self.last_losses.append(loss.item())
      times.append(time.perf_counter() - t0)
    return times

  def shapes(self) -> dict:
    b = self.batches[0]
    return {"sentences": list(b["ids"].shape),
            "names": list(b["node_ids"].shape),
            "entities": int(b["concept_ids"].numel()),
            "edges": int(b["edge_index"].shape[1])}

  @staticmethod
  def versions() -> dict:
    import pytorch_metric_learning
    import torch
    import torch_geometric
    import transformers
    return {"torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__,
            "pytorch_metric_learning": pytorch_metric_learning.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads()}
