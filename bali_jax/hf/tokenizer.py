"""Loading and saving the BERT tokenizer that travels with a checkpoint.

transformers v5 traps: `BertTokenizerFast(vocab_file=...)` silently ignores
the file (every token becomes [UNK]), so a bare `vocab.txt` is loaded with
`vocab=`; and `save_pretrained` no longer writes `vocab.txt`, which older
loaders need, so we write it ourselves.
"""

from __future__ import annotations

import json
import os

import transformers

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def load_tokenizer(model_dir: str | os.PathLike):
  """Returns the fast BERT tokenizer stored in `model_dir`.

  Reads `tokenizer.json` (+ `tokenizer_config.json`) when present, else a
  bare `vocab.txt` (lower-casing taken from `tokenizer_config.json` if any,
  uncased otherwise, as for BERT's uncased checkpoints).
  """
  model_dir = os.fspath(model_dir)
  has = {f: os.path.exists(os.path.join(model_dir, f)) for f in TOKENIZER_FILES}
  if has["tokenizer.json"]:
    try:
      return tokenizer_class(model_dir).from_pretrained(
          model_dir, local_files_only=True)
    except Exception as e:  # transformers raises many types here
      raise ValueError(f"{model_dir}/tokenizer.json: cannot load the "
                       f"tokenizer: {e}") from e
  if has["vocab.txt"]:
    lower = True
    if has["tokenizer_config.json"]:
      with open(os.path.join(model_dir, "tokenizer_config.json")) as f:
        lower = json.load(f).get("do_lower_case", True)
    return transformers.BertTokenizerFast(
        vocab=os.path.join(model_dir, "vocab.txt"), do_lower_case=lower)
  raise ValueError(f"{model_dir}: no tokenizer.json or vocab.txt found")


def tokenizer_class(model_dir: str):
  """BERT's fast tokenizer class for a BERT tokenizer (tokenizer_config's
  `tokenizer_class` names BERT's, or nothing), else AutoTokenizer. Why:
  AutoTokenizer reads the model config, whose module imports torch when it
  is installed (1.4 s of every `evaluate` or `finetune` start, 3.1 s
  against 1.1 s to load the starter's tokenizer); the tokenizer.json is the
  same either way."""
  path = os.path.join(model_dir, "tokenizer_config.json")
  name = None
  if os.path.exists(path):
    with open(path) as f:
      name = json.load(f).get("tokenizer_class")
  if name in (None, "BertTokenizer", "BertTokenizerFast"):
    return transformers.BertTokenizerFast
  return transformers.AutoTokenizer


def save_tokenizer(tokenizer, out_dir: str | os.PathLike) -> None:
  """Writes tokenizer.json, tokenizer_config.json and vocab.txt."""
  out_dir = os.fspath(out_dir)
  tokenizer.save_pretrained(out_dir)
  vocab = tokenizer.get_vocab()
  by_id = sorted(vocab.items(), key=lambda kv: kv[1])
  if [i for _, i in by_id] != list(range(len(by_id))):
    raise ValueError("tokenizer vocabulary ids are not contiguous 0..N-1; "
                     "cannot write vocab.txt")
  with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
    f.writelines(tok + "\n" for tok, _ in by_id)
