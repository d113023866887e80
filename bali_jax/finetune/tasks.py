"""Readers of the downstream tasks' public file formats (issue 14).

Every reader turns a file into `TaskExample`s: one (text_a, text_b) pair
per choice (one pair for classification), the gold label(s), and where the
record came from, so a malformed record fails with the file and record
named. The tasks, as the authors' scripts (`qa/`, `blurb_sequence_
classifications/`) read them:

* `pubmedqa`: PubMedQA JSON (`ori_pqal.json`, `pqal_fold*/train_set.json`,
  `test_set.json`): {pmid: {QUESTION, CONTEXTS, final_decision}}; input
  question + the joined contexts; yes / no / maybe.
* `bioasq-yesno`: BioASQ JSON ({"questions": [{id, body, type,
  exact_answer, snippets}]}); the yes/no questions only, the question alone
  as input (the authors' protocol; `snippets=true` appends the snippets);
  other question types are skipped and counted.
* `medqa`: MedQA-USMLE JSON lines ({question, options: {A: .., ...},
  answer_idx}); one (question, option) pair per option; every record must
  have the same options.
* `seqcls`: BLURB-style JSON lines ({id, sentence | sentence1 [+
  sentence2], label}) or TSV with a header naming those columns; `label`
  one name, or (multi-label, HoC) a list of names, or a 0/1 vector of one
  fixed length (LinkBERT's BLURB HoC files; the labels are then the
  positions 0..K-1), in JSON / names joined by `,` in TSV.
"""

from __future__ import annotations

import csv
import dataclasses
import json

from bali_jax import storage

TASKS = ("pubmedqa", "bioasq-yesno", "medqa", "seqcls")
PUBMEDQA_LABELS = ("yes", "no", "maybe")  # the authors' LABEL_MAP order
YESNO_LABELS = ("yes", "no")


class TaskDataError(ValueError):
  """A task file that cannot be read as its format says: names the file
  and the record."""


@dataclasses.dataclass
class TaskExample:
  uid: str
  pairs: list[tuple[str, str | None]]  # one (text_a, text_b) per choice
  label: int | list[int]  # class index, choice index, or label indices
  where: str  # file:record, for messages


@dataclasses.dataclass
class TaskData:
  """The examples of one file and what kind of head they need."""
  task: str
  kind: str  # "single" | "multi" (multi-label) | "choice"
  labels: list[str]  # class names (choice: option keys)
  examples: list[TaskExample]
  skipped: int = 0  # records of other types (BioASQ non-yes/no)


def _err(path, where, msg) -> TaskDataError:
  return TaskDataError(f"{storage.display(path)}: {where}: {msg}")


def _load_json(path: str):
  try:
    return json.loads(storage.read_text(path))
  except json.JSONDecodeError as e:
    raise TaskDataError(f"{storage.display(path)}: not JSON ({e})") from e


def _json_lines(path: str):
  with storage.open_file(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise _err(path, f"line {n}", f"not JSON ({e})") from e
      if not isinstance(obj, dict):
        raise _err(path, f"line {n}", "expected a JSON object")
      yield f"line {n}", obj


def _need(path, where, obj, key, types=str):
  if key not in obj or obj[key] in (None, ""):
    raise _err(path, where, f"missing {key!r}")
  if not isinstance(obj[key], types):
    raise _err(path, where, f"{key!r} has the wrong type "
               f"({type(obj[key]).__name__})")
  return obj[key]


def _label(path, where, value, labels) -> int:
  if value not in labels:
    raise _err(path, where, f"label {value!r} is not in the label set "
               f"{list(labels)}")
  return list(labels).index(value)


def read_pubmedqa(path: str) -> TaskData:
  data = _load_json(path)
  if not isinstance(data, dict):
    raise TaskDataError(f"{storage.display(path)}: expected an object of "
                        "{pmid: {QUESTION, CONTEXTS, final_decision}}")
  out = []
  for pmid, d in data.items():
    where = f"record {pmid}"
    if not isinstance(d, dict):
      raise _err(path, where, "expected an object")
    q = _need(path, where, d, "QUESTION")
    ctx = _need(path, where, d, "CONTEXTS", list)
    gold = _need(path, where, d, "final_decision")
    out.append(TaskExample(str(pmid), [(q, " ".join(ctx))],
                           _label(path, where, gold, PUBMEDQA_LABELS),
                           f"{storage.display(path)}:{where}"))
  return TaskData("pubmedqa", "single", list(PUBMEDQA_LABELS), out)


def read_bioasq(path: str, snippets: bool = False) -> TaskData:
  data = _load_json(path)
  qs = data.get("questions") if isinstance(data, dict) else None
  if not isinstance(qs, list):
    raise TaskDataError(f"{storage.display(path)}: expected "
                        '{"questions": [...]}')
  out, skipped = [], 0
  for i, q in enumerate(qs):
    where = f"question {i}" + (f" ({q.get('id')})" if isinstance(q, dict)
                               and q.get("id") else "")
    if not isinstance(q, dict):
      raise _err(path, where, "expected an object")
    if q.get("type") != "yesno":
      skipped += 1
      continue
    body = _need(path, where, q, "body")
    gold = _need(path, where, q, "exact_answer", (str, list))
    if isinstance(gold, list):  # some releases wrap the answer
      gold = gold[0] if len(gold) == 1 else gold
    gold = gold.strip().lower() if isinstance(gold, str) else gold
    text_b = None
    if snippets:
      text_b = " ".join(s.get("text", "") for s in q.get("snippets") or [])
    out.append(TaskExample(str(q.get("id", i)), [(body, text_b)],
                           _label(path, where, gold, YESNO_LABELS),
                           f"{storage.display(path)}:{where}"))
  return TaskData("bioasq-yesno", "single", list(YESNO_LABELS), out, skipped)


def read_medqa(path: str, options: list[str] | None = None) -> TaskData:
  out = []
  for where, d in _json_lines(path):
    q = _need(path, where, d, "question")
    opts = _need(path, where, d, "options", dict)
    keys = sorted(opts)
    if options is None:
      options = keys
    if keys != list(options):
      raise _err(path, where, f"options {keys}, but the task has "
                 f"{list(options)} (option count mismatch)")
    gold = _need(path, where, d, "answer_idx")
    out.append(TaskExample(str(d.get("id", where)),
                           [(q, str(opts[k])) for k in options],
                           _label(path, where, gold, options),
                           f"{storage.display(path)}:{where}"))
  if not out:
    raise TaskDataError(f"{storage.display(path)}: no record")
  return TaskData("medqa", "choice", list(options), out)


def _seqcls_rows(path: str):
  if path.endswith(".tsv"):
    with storage.open_file(path) as f:
      rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
      for n, r in enumerate(rows, 2):
        label = r.get("label")
        if label is not None and "," in label:
          label = [x.strip() for x in label.split(",") if x.strip()]
        yield f"line {n}", {**r, "label": label}
  else:
    yield from _json_lines(path)


def _binary_vectors(path, rows) -> int | None:
  """K if every label is a 0/1 list of length K (BLURB HoC), else None."""
  labs = [r.get("label") for _, r in rows]
  if not all(isinstance(x, list) and x and all(v in (0, 1) and
                                              not isinstance(v, bool)
                                              for v in x) for x in labs):
    return None
  k = len(labs[0])
  for where, r in rows:
    if len(r["label"]) != k:
      raise _err(path, where, f"label vector of length {len(r['label'])}, "
                 f"the others have {k}")
  return k


def read_seqcls(path: str, labels: list[str] | None = None) -> TaskData:
  """`labels`: the label set (from the train file when None: every name
  seen, sorted). Multi-label when any record's label is a list."""
  rows = list(_seqcls_rows(path))
  if not rows:
    raise TaskDataError(f"{storage.display(path)}: no record")
  multi = any(isinstance(r.get("label"), list) for _, r in rows)
  k = _binary_vectors(path, rows) if multi else None
  if k is not None:  # 0/1 vectors -> the positions set to 1
    if labels is not None and len(labels) != k:
      raise _err(path, "line 1", f"label vectors of length {k}, but the "
                 f"task has {len(labels)} labels")
    labels = labels or [str(i) for i in range(k)]
    rows = [(w, {**r, "label": [labels[i] for i, v in enumerate(r["label"])
                                if v]}) for w, r in rows]
  if labels is None:
    seen = set()
    for where, r in rows:
      lab = r.get("label")
      if lab in (None, ""):
        raise _err(path, where, "missing 'label'")
      seen.update(lab if isinstance(lab, list) else [lab])
    labels = sorted(map(str, seen))
  out = []
  for where, r in rows:
    a = r.get("sentence") or r.get("sentence1") or r.get("text")
    if not a:
      raise _err(path, where, "missing 'sentence' (or 'sentence1')")
    b = r.get("sentence2") or None
    lab = r.get("label")
    if lab is None or lab == "":
      raise _err(path, where, "missing 'label'")
    if multi:
      lab = lab if isinstance(lab, list) else [lab]
      gold = sorted(_label(path, where, str(x), labels) for x in lab)
    else:
      gold = _label(path, where, str(lab), labels)
    out.append(TaskExample(str(r.get("id") or where), [(a, b)], gold,
                           f"{storage.display(path)}:{where}"))
  return TaskData("seqcls", "multi" if multi else "single", list(labels),
                  out)


def read_task(task: str, path: str, like: TaskData | None = None,
              snippets: bool = False) -> TaskData:
  """Reads `path` as `task`; `like` (the train file's data) fixes the label
  set and options the dev and test files must use."""
  if not storage.exists(path):
    raise FileNotFoundError(f"{task} file {path}: no such file")
  if task == "pubmedqa":
    return read_pubmedqa(path)
  if task == "bioasq-yesno":
    return read_bioasq(path, snippets)
  if task == "medqa":
    return read_medqa(path, like.labels if like else None)
  if task == "seqcls":
    data = read_seqcls(path, like.labels if like else None)
    if like is not None and like.kind != data.kind:
      data.kind = like.kind  # single-label records of a multi-label task
      for e in data.examples:
        e.label = e.label if isinstance(e.label, list) else [e.label]
    return data
  raise ValueError(f"task {task!r}; expected one of {TASKS}")


def folds(n: int, k: int, seed: int) -> list[list[int]]:
  """k disjoint folds covering range(n) (a seeded permutation cut into k
  near-equal parts, like sklearn's KFold(shuffle=True))."""
  import numpy as np
  if not 2 <= k <= n:
    raise ValueError(f"folds={k} needs 2 <= folds <= {n} examples")
  perm = np.random.default_rng(seed).permutation(n)
  return [sorted(map(int, part)) for part in np.array_split(perm, k)]
