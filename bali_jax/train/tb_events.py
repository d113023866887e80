"""TensorBoard scalar events, written without a TensorBoard library.

The loop logs scalars only. An event file is a TFRecord file (length,
masked CRC-32C of the length, payload, masked CRC-32C of the payload) of
`tensorflow.Event` protos: a first `file_version: "brain.Event:2"`, then
one `Event{wall_time, step, summary{value{tag, simple_value}}}` per
scalar. Those few proto fields are written by hand here. tensorboardX,
which this replaces, imports torch whenever torch is installed (the bench
extra installs it): 1.9 s of every run's start, for torch tensors we
never log. The files are read back by TensorFlow's own record reader and
`Event` proto in tests/storage_test.py.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time

_CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected
_WRITERS = itertools.count()  # this process's writers: one file each


def _crc_table() -> list[int]:
  table = []
  for n in range(256):
    c = n
    for _ in range(8):
      c = (c >> 1) ^ _CRC32C_POLY if c & 1 else c >> 1
    table.append(c)
  return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for b in data:
    crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
  """TFRecord's masked CRC (a CRC of data holding CRCs stays useful)."""
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes it
  out = bytearray()
  while True:
    byte = n & 0x7F
    n >>= 7
    if n:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited proto field (strings, sub-messages)."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int = 0, tag: str | None = None,
          value: float = 0.0, file_version: str | None = None) -> bytes:
  """One serialized `Event`: a scalar, or the file's version header."""
  out = b"\x09" + struct.pack("<d", wall_time)  # 1: wall_time, fixed64
  if step:
    out += b"\x10" + _varint(step)  # 2: step, varint
  if file_version is not None:
    return out + _field(3, file_version.encode())
  scalar = _field(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
  return out + _field(5, _field(1, scalar))  # summary { value { .. } }


def record(payload: bytes) -> bytes:
  """One TFRecord: length, its masked CRC, payload, its masked CRC."""
  length = struct.pack("<Q", len(payload))
  return (length + struct.pack("<I", _masked(crc32c(length))) + payload
          + struct.pack("<I", _masked(crc32c(payload))))


class ScalarWriter:
  """`add_scalar(tag, value, step)` into a new event file of the local
  directory `logdir` (a gs:// run's events are written to a local
  directory and copied: train/metrics.MetricsWriter), named as
  TensorBoard's writers name theirs."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)  # local: MetricsWriter stages URLs
    now = time.time()
    # the process's writer count keeps a second writer of the same second
    # (a run resumed in-process) out of the first one's file
    name = (f"events.out.tfevents.{int(now)}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_WRITERS)}")
    self.path = os.path.join(logdir, name)
    self._f = open(self.path, "ab")  # local: as above
    self._f.write(record(event(now, file_version="brain.Event:2")))
    self._f.flush()

  def add_scalar(self, tag: str, value: float, step: int) -> None:
    self._f.write(record(event(time.time(), step, tag, float(value))))

  def flush(self) -> None:
    self._f.flush()

  def close(self) -> None:
    self._f.close()
