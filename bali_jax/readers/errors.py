"""Bad-input policy shared by every reader.

A reader that meets a bad record either raises `BadInputError` naming the
file, the line or record and the problem (the default), or, when the user
asked for `--on-bad-record=skip`, counts it under a reason and goes on. The
counts end up in the data card.
"""

from __future__ import annotations

import collections
import dataclasses


class BadInputError(ValueError):
  """Input that cannot be used; the message names file, place and problem."""


@dataclasses.dataclass
class BadRecords:
  """What to do with bad records, and how many were skipped per reason."""
  skip: bool = False
  counts: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  examples: dict = dataclasses.field(default_factory=dict)

  def report(self, reason: str, where: str, detail: str) -> None:
    """Raise, or count and remember the first place this reason occurred."""
    message = f"{where}: {detail}"
    if not self.skip:
      raise BadInputError(message)
    self.counts[reason] += 1
    self.examples.setdefault(reason, message)

  def merge(self, other: "BadRecords") -> None:
    self.counts.update(other.counts)
    for k, v in other.examples.items():
      self.examples.setdefault(k, v)

  def to_dict(self) -> dict:
    return {k: {"count": self.counts[k], "first": self.examples.get(k)}
            for k in sorted(self.counts)}


def read_lines(path: str, bad: BadRecords, opener=None):
  """Yields (line number, text) of a UTF-8 file (gzip-compressed when it
  ends in .gz), reporting bad bytes and a truncated or corrupt file (at
  the line where reading stopped)."""
  import gzip
  import zlib
  opener = opener or (gzip.open if path.endswith(".gz") else open)
  lineno = 0
  try:
    with opener(path, "rb") as f:
      for lineno, raw in enumerate(f, 1):
        try:
          yield lineno, raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
          bad.report("non-utf8", f"{path}:{lineno}",
                     f"not valid UTF-8 ({e.reason} at byte {e.start})")
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    bad.report("truncated-or-corrupt-file", f"{path}:{lineno + 1}",
               f"cannot read further: {type(e).__name__}: {e}")
