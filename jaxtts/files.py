"""Writing files so a reader never sees half of one: write to a temporary name beside the
target (same folder, same extension), then `os.replace` it into place (atomic on POSIX)."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Iterator

import numpy as np


def temporary_name(path: str) -> str:
  """``<root>.tmp-<pid><ext>``: beside ``path``, with its extension (libraries that pick a
  format from the extension, e.g. soundfile or matplotlib, still see it)."""
  root, ext = os.path.splitext(path)
  return f"{root}.tmp-{os.getpid()}{ext}"


def atomic_write(path: str, write: Callable[[str], Any]) -> None:
  """Calls ``write(tmp)`` on `temporary_name` (path), then renames it to ``path``; a failed
  write leaves no temporary file and the old ``path`` untouched."""
  tmp = temporary_name(path)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[Any]:
  """``with atomic_open(path) as f:`` writes ``f`` under a temporary name and renames it to
  ``path`` when the block ends without an exception."""
  tmp = temporary_name(path)
  try:
    with open(tmp, mode, **kwargs) as f:
      yield f
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def json_default(obj: Any) -> Any:
  """``json.dump(..., default=json_default)`` for NumPy scalars and arrays."""
  if isinstance(obj, (np.floating, np.integer, np.bool_)):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_json(path: str, obj: Any, **kwargs) -> None:
  """``obj`` as JSON (sorted keys, indent 1, NumPy values converted), atomically."""
  with atomic_open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, sort_keys=True, default=json_default, **kwargs)
    f.write("\n")


def round_up(n: int, unit: int) -> int:
  """``n`` rounded up to a whole number (at least one) of ``unit``s: length buckets, so a
  corpus compiles a handful of shapes."""
  return max(int(unit), -(-int(n) // int(unit)) * int(unit))
