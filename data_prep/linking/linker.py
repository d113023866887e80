"""Dictionary linker for raw text: longest match over all concept names.

Matching is on lower-cased word tokens (`\\w+` or single punctuation), left
to right, longest name first, non-overlapping. A name shared by several
concepts links to all of them (a multi-concept mention, as multi-CUI BERN2
mentions), up to `max_senses`; more ambiguous names are dropped.

Acronyms (names in capitals of at most `acronym_chars` letters, "WAS" for
Wiskott-Aldrich syndrome, "CAN", and one-word names with two or more
capitals, "chILD", "COVID-19") match case-sensitively: lower-cased many are
English words ("was", "can", "child") and would flood the corpus.

Specificity filter: without one, generic names flood the corpus (HPO
modifiers "Severe", "Acute", "Left"; MONDO's root "disease"; its "disease
characteristic" branch, e.g. "common"). We drop (1) concepts marked not
linkable by the graph readers (those subtrees, and genes, whose symbols are
ambiguous words), (2) names shorter than `min_chars` or made of digits and
punctuation only, (3) a stop-list of generic words. `LinkStats` reports
what was linked so it can be spot-checked in the data card.

Precision rules for synonyms (names other than a concept's preferred
label, the first name):
* scopes: a reader may mark names as not for linking (`kg.link_excluded`:
  OBO RELATED/BROAD/NARROW synonyms feed the concept's names but never
  link text; only the label and EXACT synonyms do);
* single common words: a one-word synonym does not link by itself when it
  is a general English word (a whole-word entry of the general-domain
  vocabulary of the starter BERT: "wound" for injury, "face", "weakness")
  or a modifier that occurs as a word in the names of at least
  `modifier_concepts` other concepts ("pituitary" for hypophysitis occurs
  in 151), unless it is a spelling or plural variant of the label
  ("Anaemia", "Seizures"). The label itself always links. What the rules
  removed is counted in the data card.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import re

from bali_jax.readers.corpus import Mention
from bali_jax.readers.kg import KnowledgeGraph

_WORD = re.compile(r"\w+|[^\w\s]")
STOP_NAMES = frozenset("""
disease diseases disorder disorders syndrome syndromes condition conditions
abnormality abnormalities abnormal anomaly finding findings sign signs
symptom symptoms phenotype phenotypes trait traits lesion lesions
defect defects deficiency problem problems complication complications
case cases control controls patient patients normal increased decreased
high low large small left right bilateral unilateral severe mild moderate
acute chronic common rare onset progressive episodic recurrent all other
unknown type group stage grade age death cell cells tissue level levels
change changes effect effects activity function response risk rate
""".split())


@functools.lru_cache(maxsize=1)
def general_english_words() -> frozenset[str]:
  """Whole-word entries (letters only, >= 3) of the starter's uncased
  general-domain BERT vocabulary (Wikipedia + books): common English."""
  from bali_jax.open_data import starter_model_dir
  with open(os.path.join(starter_model_dir(), "vocab.txt"),
            encoding="utf-8") as f:
    return frozenset(w for w in (l.strip() for l in f)
                     if len(w) >= 3 and w.isalpha() and w.islower())


def _variant_key(word: str) -> str:
  """British/American spelling and plural folded: anaemia -> anemia."""
  w = word.lower().replace("ae", "e").replace("oe", "e")
  return w[:-1] if w.endswith("s") else w


def _single_word_rule(name: str, label: str, node: int, common, modifiers,
                      limit: int) -> str | None:
  """Why a one-word synonym (not the label, not acronym-like) must not link
  by itself, or None: a general English word, or a modifier of `limit`+
  other concepts' names; spelling/plural variants of the label are kept."""
  if " " in name or not name.isalpha() or (
      _variant_key(name) == _variant_key(label)):
    return None
  word = name.lower()
  if word in common:
    return "single common word"
  users = modifiers.get(word, ())
  if len(users) - (node in users) >= limit:
    return "single modifier word"
  return None


@dataclasses.dataclass
class LinkStats:
  texts: int = 0
  texts_linked: int = 0
  mentions: int = 0
  per_concept: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)

  def merge(self, o: "LinkStats") -> None:
    self.texts += o.texts
    self.texts_linked += o.texts_linked
    self.mentions += o.mentions
    self.per_concept.update(o.per_concept)

  def to_dict(self, kg: KnowledgeGraph, top: int = 25) -> dict:
    return {
        "texts": self.texts, "texts_with_mention": self.texts_linked,
        "fraction_linked": self.texts_linked / max(self.texts, 1),
        "mentions": self.mentions,
        "mentions_per_text": self.mentions / max(self.texts, 1),
        "distinct_concepts": len(self.per_concept),
        "most_linked": [
            {"concept": kg.concept_ids[kg.index[c]] if c in kg.index else c,
             "name": kg.names[kg.index[c]][0] if c in kg.index else "",
             "mentions": n}
            for c, n in self.per_concept.most_common(top)],
    }


class DictionaryLinker:
  def __init__(self, kg: KnowledgeGraph, min_chars: int = 3,
               max_senses: int = 3, stop_names=STOP_NAMES,
               acronym_chars: int = 6, common_words=None,
               modifier_concepts: int = 100):
    self._options = dict(min_chars=min_chars, max_senses=max_senses,
                         stop_names=stop_names, acronym_chars=acronym_chars,
                         common_words=common_words,
                         modifier_concepts=modifier_concepts)
    common = (general_english_words() if common_words is None
              else frozenset(common_words))
    modifiers = self._modifier_words(kg, modifier_concepts)
    self.removed = collections.Counter()  # rule -> names not linked
    self.removed_examples: dict[str, list[str]] = collections.defaultdict(
        list)
    # held-out synonyms must never link text: build after reserving them
    self.built_after_reserve = kg.heldout is not None
    self.stats = LinkStats()
    index: dict[tuple[str, ...], list[str]] = collections.defaultdict(list)
    for i, (cid, names) in enumerate(zip(kg.concept_ids, kg.names)):
      if not kg.linkable[i]:
        continue
      # MONDO lists acronyms twice ("PIG" and "pig"): the lower-cased copy
      # of an acronym is an English word, not a name.
      acronyms = {n.lower() for n in names if n.isupper()}
      excluded = kg.link_excluded.get(i, ())
      for k, name in enumerate(names):
        if not name.isupper() and name in acronyms:
          continue
        capitals = sum(ch.isupper() for ch in name)
        rule = None
        if name in excluded:
          rule = "scope"
        elif k > 0 and capitals < 2:  # a synonym, not acronym-like
          rule = _single_word_rule(name, names[0], i, common, modifiers,
                                   modifier_concepts)
        if rule:
          self.removed[rule] += 1
          if len(self.removed_examples[rule]) < 12:
            self.removed_examples[rule].append(f"{name} ({cid})")
          continue
        acronym = (name.isupper() and len(name.replace(" ", "")) <=
                   acronym_chars) or (" " not in name and capitals >= 2)
        # case-sensitive keys are marked with a leading "\0" word
        key = (("\0",) + tuple(_WORD.findall(name)) if acronym
               else tuple(_WORD.findall(name.lower())))
        text = " ".join(key).lower()
        if (len(name) < min_chars or text in stop_names
            or not any(ch.isalpha() for ch in name)):
          continue
        if cid not in index[key]:
          index[key].append(cid)
    self.names = {k: v for k, v in index.items() if len(v) <= max_senses}
    self.max_words = max((len(k) for k in self.names), default=0)
    self.first_words = {k[1] if k[0] == "\0" else k[0] for k in self.names}

  @staticmethod
  def _modifier_words(kg: KnowledgeGraph, limit: int) -> dict[str, set]:
    """word -> concepts with a multi-word name containing it (only words
    that reach `limit`, to keep it small)."""
    counts: dict[str, set] = collections.defaultdict(set)
    for i, names in enumerate(kg.names):
      for n in names:
        if " " in n:
          for w in set(n.lower().split()):
            counts[w].add(i)
    return {w: c for w, c in counts.items() if len(c) >= limit}

  def rules_removed(self) -> dict:
    """For the data card: names each precision rule kept from linking."""
    return {r: {"names": n, "examples": self.removed_examples[r]}
            for r, n in self.removed.items()}

  def rebuilt(self, kg: KnowledgeGraph) -> "DictionaryLinker":
    """The same linker over the graph's current names."""
    return DictionaryLinker(kg, **self._options)

  def _match(self, words, i):
    """Longest (n, concepts) starting at word i, or None."""
    if (words[i][0].lower() not in self.first_words
        and words[i][0] not in self.first_words):
      return None
    for n in range(min(self.max_words, len(words) - i), 0, -1):
      raw = tuple(w for w, _, _ in words[i:i + n])
      lower = tuple(w.lower() for w in raw)
      found = self.names.get(lower) or self.names.get(("\0",) + raw)
      if found:
        return n, found
    return None

  def link(self, text: str) -> list[Mention]:
    words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(text)]
    out, i = [], 0
    while i < len(words):
      match = self._match(words, i)
      if match:
        n, concepts = match
        out.append(Mention(words[i][1], words[i + n - 1][2], list(concepts)))
        self.stats.per_concept.update(concepts)
        i += n
      else:
        i += 1
    self.stats.texts += 1
    self.stats.mentions += len(out)
    self.stats.texts_linked += bool(out)
    return out
