"""`python -m data_prep synth`: a synthetic UMLS-shaped KG and corpus.

Nobody may ship UMLS, yet data_prep and `evaluate` must be measured at its
size (3.5M English concepts, ~10M English names, ~40M MRREL rows). This
writes MRCONSO.RRF and MRREL.RRF in the real column layouts
(bali_jax/readers/umls.py reads them as it reads a release), a relation
name file for `data_prep umls --relation-names`, and a PubTator (or BERN2)
corpus whose annotations are the generated CUIs. Every distribution is a
parameter, written to `synth_params.json` beside the output with what it
follows; the same parameters and seed give the same bytes.

Memory is bounded by flat arrays: names are word ids in CSR form (no
per-name Python string until a row is written).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np

from bali_jax import storage
from bali_jax.readers.errors import BadInputError

# (REL, RELA, inverse REL, inverse RELA, weight): MRREL stores each relation
# once per direction; the weights are the relative frequencies drawn from
RELATIONS = (
    ("PAR", "inverse_isa", "CHD", "isa", 0.30),
    ("RB", "", "RN", "", 0.15),
    ("RO", "associated_with", "RO", "associated_with", 0.12),
    ("RO", "has_finding_site", "RO", "finding_site_of", 0.08),
    ("RO", "may_treat", "RO", "may_be_treated_by", 0.06),
    ("RO", "has_ingredient", "RO", "ingredient_of", 0.06),
    ("RO", "has_manifestation", "RO", "manifestation_of", 0.05),
    ("RO", "causative_agent_of", "RO", "has_causative_agent", 0.05),
    ("RQ", "classified_as", "RQ", "classifies", 0.05),
    ("SY", "", "SY", "", 0.08),
)
# readable names of the REL codes used without a RELA (rela_names.tsv)
REL_NAMES = {"RB": "has a broader relationship to",
             "RN": "has a narrower relationship to", "SY": "synonym of",
             "isa": "is a", "inverse_isa": "has subtype"}
OTHER_LANGUAGES = ("FRE", "GER", "SPA", "POR", "DUT", "ITA", "JPN")
SOURCES = ("MSH", "SNOMEDCT_US", "NCI", "MDR", "ICD10CM", "MEDCIN")


@dataclasses.dataclass(frozen=True)
class SynthParams:
  """The distributions (all long-tailed where UMLS's are) and their
  reasons; written beside the output."""
  concepts: int
  documents: int
  seed: int = 0
  # English names per concept: 1 + negative binomial (mean 2, r 0.5):
  # mean 3, sd ~3.2 (UMLS: ~10M English names over ~3.5M concepts)
  extra_names_mean: float = 2.0
  extra_names_r: float = 0.5
  # non-English name rows per concept (read and dropped by the reader)
  other_language_mean: float = 1.0
  # words per name: 1 + Poisson(1.8), mean 2.8
  extra_words_mean: float = 1.8
  # relations per concept (each written in both directions): 1 +
  # negative binomial (mean 4.7, r 0.7), targets drawn with a Zipf
  # preference (hubs): ~11.4 MRREL rows per concept (40M / 3.5M)
  extra_relations_mean: float = 4.7
  extra_relations_r: float = 0.7
  target_zipf: float = 0.8
  # mentions: concepts by Zipf frequency, Poisson(1.63) per sentence (the
  # open default's 1.63 entities per sentence, bench/synthetic.CorpusStats)
  mention_zipf: float = 1.1
  mentions_per_sentence: float = 1.63
  # words per sentence: 1 + Poisson(23): 36.9 wordpieces per sentence in
  # the open default's records at ~1.5 wordpieces per PubMed word
  extra_words_per_sentence: float = 23.0
  # sentences per abstract: 1 + Poisson(8) (PubMed abstracts: ~9)
  extra_sentences: float = 8.0
  vocabulary: int = 30_000
  word_zipf: float = 1.05

  def check(self) -> None:
    if self.concepts < 2 or self.documents < 1:
      raise BadInputError(f"--concepts {self.concepts} --documents "
                       f"{self.documents}: need at least 2 concepts and 1 "
                       "document")


def _zipf_p(n: int, s: float) -> np.ndarray:
  p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
  return p / p.sum()


def _draw(rng, cdf: np.ndarray, size=None):
  """Indices drawn by a cumulative distribution: O(log n) a draw, where
  `rng.choice(n, p=...)` rebuilds the n-long table on every call."""
  return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"),
                    len(cdf) - 1)


def _vocabulary(rng, n: int) -> list[str]:
  """Pronounceable pseudo-words (2-4 syllables), distinct."""
  onsets = list("bcdfghklmnprstvz") + ["br", "cl", "tr", "st", "ph", "th"]
  vowels = ["a", "e", "i", "o", "u", "ae", "io", "y"]
  codas = ["", "", "n", "s", "l", "r", "x", "m", "t"]
  seen, out = set(), []
  while len(out) < n:
    k = int(rng.integers(2, 5))
    w = "".join(onsets[rng.integers(len(onsets))] +
                vowels[rng.integers(len(vowels))] +
                codas[rng.integers(len(codas))] for _ in range(k))
    if w not in seen:
      seen.add(w)
      out.append(w)
  return out


@dataclasses.dataclass
class Names:
  """English names as word ids, CSR: concept -> names -> words."""
  concept_start: np.ndarray  # (C + 1,) into name rows
  name_start: np.ndarray  # (N + 1,) into words
  words: np.ndarray  # (W,) vocabulary ids

  def text(self, vocab, name: int) -> str:
    a, b = self.name_start[name], self.name_start[name + 1]
    return " ".join(vocab[w] for w in self.words[a:b])


def _names(rng, p: SynthParams, word_p) -> Names:
  per = 1 + rng.negative_binomial(
      p.extra_names_r, p.extra_names_r / (p.extra_names_r +
                                          p.extra_names_mean), p.concepts)
  lengths = 1 + rng.poisson(p.extra_words_mean, int(per.sum()))
  words = _draw(rng, np.cumsum(word_p), int(lengths.sum()))
  cs = np.concatenate([[0], np.cumsum(per)])
  ns = np.concatenate([[0], np.cumsum(lengths)])
  return Names(cs.astype(np.int64), ns.astype(np.int64),
               words.astype(np.int32))


def cui(i: int) -> str:
  return f"C{i + 1:07d}"


def _write_mrconso(path, rng, p: SynthParams, names: Names, vocab) -> int:
  rows = 0
  other = rng.poisson(p.other_language_mean, p.concepts)
  sab = rng.integers(len(SOURCES), size=len(names.name_start) - 1)
  with open(path, "w") as f:
    for c in range(p.concepts):
      a, b = names.concept_start[c], names.concept_start[c + 1]
      for k, n in enumerate(range(a, b)):
        s = SOURCES[sab[n]]
        code = f"D{c + 1:06d}" if s == "MSH" else f"{s[:2]}{n + 1}"
        f.write(f"{cui(c)}|ENG|{'P' if k == 0 else 'S'}|L{n + 1:07d}|PF|"
                f"S{n + 1:07d}|{'Y' if k == 0 else 'N'}|A{n + 1:08d}||"
                f"{code}|{code}|{s}|{'PT' if k == 0 else 'SY'}|{code}|"
                f"{names.text(vocab, n)}|0|N|256|\n")
        rows += 1
      for j in range(other[c]):
        lang = OTHER_LANGUAGES[(c + j) % len(OTHER_LANGUAGES)]
        n = int(a)  # a translation of the preferred name
        f.write(f"{cui(c)}|{lang}|S|L9{c:07d}|PF|S9{c:07d}{j}|N|"
                f"A9{c:07d}{j}||||MSH{lang[:2]}|SY||"
                f"{names.text(vocab, n)} {lang.lower()}|0|N|256|\n")
        rows += 1
  return rows


def _write_mrrel(path, rng, p: SynthParams) -> int:
  per = 1 + rng.negative_binomial(
      p.extra_relations_r, p.extra_relations_r / (
          p.extra_relations_r + p.extra_relations_mean), p.concepts)
  hubs = rng.permutation(p.concepts)  # which concepts are the hubs
  total = int(per.sum())
  targets = hubs[_draw(rng, np.cumsum(_zipf_p(p.concepts, p.target_zipf)),
                       total)]
  kind_p = np.array([r[-1] for r in RELATIONS])
  kinds = _draw(rng, np.cumsum(kind_p / kind_p.sum()), total)
  source = np.repeat(np.arange(p.concepts, dtype=np.int32), per)
  rows, rui, chunk = 0, 0, 1 << 20  # Python ints a chunk at a time
  with open(path, "w") as f:
    for at in range(0, total, chunk):
      part = slice(at, at + chunk)
      for c, t, k in zip(source[part].tolist(), targets[part].tolist(),
                         kinds[part].tolist()):
        if t == c:
          continue
        rel, rela, irel, irela, _ = RELATIONS[k]
        for a, r, b, ra in ((c, rel, t, rela), (t, irel, c, irela)):
          rui += 1
          f.write(f"{cui(a)}|A{a + 1:08d}|SCUI|{r}|{cui(b)}|A{b + 1:08d}|"
                  f"SCUI|{ra}|R{rui:08d}||MSH|MSH|||N||\n")
        rows += 2
  return rows


def _sentence(rng, p: SynthParams, vocab, word_cdf, names: Names,
              concept_cdf, order) -> tuple[str, list]:
  """One sentence of filler words with mentions; (text, [(start, end,
  text, cui)])."""
  words = [vocab[w] for w in _draw(
      rng, word_cdf, 1 + rng.poisson(p.extra_words_per_sentence))]
  for _ in range(rng.poisson(p.mentions_per_sentence)):
    c = int(order[_draw(rng, concept_cdf)])
    a, b = names.concept_start[c], names.concept_start[c + 1]
    n = int(rng.integers(a, b))
    at = int(rng.integers(0, len(words) + 1))
    words.insert(at, (names.text(vocab, n), c))  # a mention: (name, concept)
  text, spans = "", []
  for w in words:
    sep = " " if text else ""
    if isinstance(w, tuple):
      start = len(text) + len(sep)
      text += sep + w[0]
      spans.append((start, len(text), w[0], cui(w[1])))
    else:
      text += sep + w
  return text[0].upper() + text[1:] + ".", spans


def _write_corpus(path, fmt, rng, p: SynthParams, vocab, word_p,
                  names: Names) -> dict:
  concept_cdf = np.cumsum(_zipf_p(p.concepts, p.mention_zipf))
  word_cdf = np.cumsum(word_p)
  order = rng.permutation(p.concepts)  # the most mentioned concepts
  stats = {"documents": 0, "sentences": 0, "mentions": 0}
  with open(path, "w") as f:
    for d in range(p.documents):
      pmid = str(10_000_000 + d)
      title, _ = _sentence(rng, dataclasses.replace(
          p, mentions_per_sentence=0.0), vocab, word_cdf, names,
                           concept_cdf, order)
      body, spans = "", []
      for _ in range(1 + rng.poisson(p.extra_sentences)):
        s, sp = _sentence(rng, p, vocab, word_cdf, names, concept_cdf,
                          order)
        off = len(body) + (1 if body else 0)
        body += (" " if body else "") + s
        spans += [(a + off, b + off, t, c) for a, b, t, c in sp]
        stats["sentences"] += 1
      stats["documents"] += 1
      stats["mentions"] += len(spans)
      shift = len(title) + 1  # readers join title and abstract with a space
      if fmt == "pubtator":
        f.write(f"{pmid}|t|{title}\n{pmid}|a|{body}\n")
        for a, b, t, c in spans:
          f.write(f"{pmid}\t{a + shift}\t{b + shift}\t{t}\tDisease\t{c}\n")
        f.write("\n")
      else:
        f.write(json.dumps({"pmid": pmid, "text": f"{title} {body}",
                            "annotations": [
                                {"id": [c], "mention": t, "span": {
                                    "begin": a + shift, "end": b + shift}}
                                for a, b, t, c in spans]}) + "\n")
  return stats


def generate(out: str, p: SynthParams, fmt: str = "pubtator") -> dict:
  """Writes the files under `out`, a new directory (local or a URL):
  written in a temporary directory and moved into place, so nothing
  partial is left. Returns the summary."""
  p.check()
  if fmt not in ("pubtator", "bern2"):
    raise BadInputError(f"--format {fmt!r}: expected pubtator or bern2")
  if storage.exists(out):
    raise FileExistsError(f"{out} exists; synth writes a new directory")
  local = not storage.is_url(out)
  parent = os.path.dirname(os.path.abspath(out)) if local else None
  if parent:
    os.makedirs(parent, exist_ok=True)
  work = tempfile.mkdtemp(prefix=".synth-", dir=parent)
  try:
    summary = _write_all(work, p, fmt)
    os.chmod(work, 0o755)  # mkdtemp's 0700 would stay on the output
    if local:
      os.rename(work, out)
    else:
      storage.copy_tree(work, out)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return summary


def _write_all(d: str, p: SynthParams, fmt: str) -> dict:
  seeds = np.random.SeedSequence(p.seed).spawn(5)
  rng = [np.random.default_rng(s) for s in seeds]
  vocab = _vocabulary(rng[0], p.vocabulary)
  word_p = _zipf_p(p.vocabulary, p.word_zipf)
  names = _names(rng[1], p, word_p)
  corpus = "corpus.pubtator" if fmt == "pubtator" else "corpus.bern2.jsonl"
  summary = {
      "mrconso_rows": _write_mrconso(os.path.join(d, "MRCONSO.RRF"),
                                     rng[2], p, names, vocab),
      "english_names": int(len(names.name_start) - 1),
      "mrrel_rows": _write_mrrel(os.path.join(d, "MRREL.RRF"), rng[3], p),
      **_write_corpus(os.path.join(d, corpus), fmt, rng[4], p, vocab,
                      word_p, names)}
  codes = sorted({r[i] or r[i - 1] for r in RELATIONS for i in (1, 3)})
  with open(os.path.join(d, "rela_names.tsv"), "w") as f:
    f.writelines(f"{c}\t{REL_NAMES.get(c, c.replace('_', ' '))}\n"
                 for c in codes)
  with open(os.path.join(d, "synth_params.json"), "w") as f:
    json.dump({"params": dataclasses.asdict(p), "format": fmt,
               "corpus": corpus, "summary": summary}, f, indent=2,
              sort_keys=True)
  return summary


def main_args(args) -> int:
  s = generate(args.out, SynthParams(args.concepts, args.documents,
                                     args.seed), args.format)
  print(json.dumps(s, indent=2))
  print(f"written to {storage.display(args.out)} (data_prep umls "
        f"--mrconso {os.path.join(args.out, 'MRCONSO.RRF')} ...)")
  return 0
