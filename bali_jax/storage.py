"""One path layer for runs and datasets: local paths or any URL tf.io.gfile
reads (gs://, s3:// with the plugin, ram:// in tests).

Every read or write of a run directory or a dataset goes through here, so
`--workdir gs://bucket/run` and `data_dir=gs://bucket/data` work like local
paths (Orbax and tensorflow-datasets take the same URLs natively). Local
paths use the standard library (no TensorFlow import for a local export or
evaluation); URLs use `tf.io.gfile`.

Atomicity: a whole file is written to a sibling temporary file and renamed
over the old one (on an object store the rename replaces the object in
one piece), so a reader sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


def is_url(path: str) -> bool:
  return "://" in str(path)


def _gfile():
  from bali_jax.tf_host import host_tf
  return host_tf().io.gfile


def join(path: str, *parts: str) -> str:
  if is_url(path):
    return "/".join([str(path).rstrip("/"), *parts])
  return os.path.join(path, *parts)


def display(path: str) -> str:
  """How to show a path to the user: URLs as given, local ones absolute."""
  return str(path) if is_url(path) else os.path.abspath(path)


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_url(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
  if is_url(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
  if is_url(path):
    return sorted(p.rstrip("/") for p in _gfile().listdir(path))
  return sorted(os.listdir(path))


def open_file(path: str, mode: str = "r"):
  """A file object for reading or writing (text or binary by `mode`)."""
  if is_url(path):
    return _gfile().GFile(path, mode)
  return open(path, mode)


def read_text(path: str) -> str:
  with open_file(path) as f:
    return f.read()


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())


def write_bytes(path: str, data: bytes) -> None:
  """Writes a whole file atomically (readers see the old or the new)."""
  if is_url(path):  # write beside, then rename over (replaces the object)
    g = _gfile()
    tmp = f"{path}.tmp-{os.getpid()}"
    with g.GFile(tmp, "wb") as f:
      f.write(data)
    g.rename(tmp, path, overwrite=True)
    return
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_png(path: str, fig, dpi: int = 90) -> None:
  """A matplotlib figure as a PNG, laid out, written atomically, closed
  (the training curves, the linking curve and the geometry probe)."""
  import io

  import matplotlib.pyplot as plt
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, dpi=dpi, format="png")
  plt.close(fig)
  write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_write(path: str):
  """A binary file whose contents replace `path` (local or URL) when the
  block exits normally, atomically; streamed through a local temporary
  file, not held in memory (large arrays: name-vector shards)."""
  local = None if is_url(path) else os.path.dirname(os.path.abspath(path))
  if local:
    os.makedirs(local, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=local)
  try:
    with os.fdopen(fd, "wb") as f:
      yield f
    if local:
      os.replace(tmp, path)
    else:  # beside the object, then renamed over it
      g, part = _gfile(), f"{path}.tmp-{os.getpid()}"
      g.copy(tmp, part, overwrite=True)
      g.rename(part, path, overwrite=True)
  finally:
    with contextlib.suppress(OSError):
      os.remove(tmp)


def file_size(path: str) -> int:
  if is_url(path):
    return _gfile().stat(path).length
  return os.path.getsize(path)


def copy_file(src: str, dst: str) -> None:
  """Copies one file (local or URL) over `dst` (local or URL)."""
  if not is_url(src) and not is_url(dst):
    shutil.copyfile(src, dst)
  else:
    _gfile().copy(src, dst, overwrite=True)


def copy_tree(src: str, dst: str) -> None:
  """Copies a directory (local or URL) to another place (local or URL)."""
  if not is_url(src) and not is_url(dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return
  makedirs(dst)
  for name in listdir(src):
    s, d = join(src, name), join(dst, name)
    if isdir(s):
      copy_tree(s, d)
    else:
      copy_file(s, d)


def remove_tree(path: str) -> None:
  """Removes a directory tree (local or URL); a missing one is fine."""
  if is_url(path):
    if _gfile().exists(path):
      _gfile().rmtree(path)
  else:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def local_copy(path: str):
  """A local directory with the contents of `path` (itself when local):
  for libraries that only read local files (HF tokenizers)."""
  if not is_url(path):
    yield path
    return
  tmp = tempfile.mkdtemp(prefix="bali-")
  try:
    copy_tree(path, tmp)
    yield tmp
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def local_staging(path: str):
  """A local directory whose contents end up at `path` when the block
  exits normally (itself when local): for libraries that only write local
  files (HF tokenizers, matplotlib)."""
  if not is_url(path):
    os.makedirs(path, exist_ok=True)
    yield path
    return
  tmp = tempfile.mkdtemp(prefix="bali-")
  try:
    yield tmp
    copy_tree(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
