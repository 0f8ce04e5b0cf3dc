"""Adding fields to every record of a corpus: shard by shard, atomic, resumable.

`derive_corpus` reads each shard of a corpus, adds the fields ``fn(record)`` returns, and
writes the shard to ``<shard>.tmp-<process>`` beside its destination, then renames it into
place, so a destination shard is either the old one or complete. A destination shard whose
records already hold every new field is skipped: rerun after an interruption and only the
missing shards are written. Writing in place (``out_dir`` None) replaces the corpus' own
shards. The manifest (the input's, plus the new ``features`` specs, plus ``manifest_updates``)
is written, also through a temporary file, by the call that finds every shard complete, so
with several processes the last one to finish writes it (or rerun any of them).

`add_f0` is the F0 derive step (`jaxtts.audio.f0` on every record), also available as
``jaxtts-corpus derive f0 --data-dir DIR [--out DIR2] [--workers N]``. A stage-2 encoder
adds ``codes`` / ``timbre`` / ``latents`` the same way (``CONTRACTS.md``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import multiprocessing
import os
import shutil
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from array_record.python import array_record_module
from tqdm import tqdm

from jaxtts.audio import f0 as f0_lib
from jaxtts.data import features, records
from jaxtts.data.source import MANIFEST, CorpusError, CorpusSource, read_manifest
from jaxtts.files import write_json

_READ_CHUNK = 64  # records read from a shard at once


def _shard_complete(path: str, fields: Sequence[str], expected: int) -> bool:
  """Whether ``path`` exists, holds ``expected`` records, and its first and last hold ``fields``."""
  if not os.path.isfile(path):
    return False
  try:
    reader = array_record_module.ArrayRecordReader(path)
    n = int(reader.num_records())
    ends = reader.read([0, n - 1]) if n == expected and n > 0 else []
    reader.close()
  except Exception:  # pylint: disable=broad-except
    return False  # An unreadable destination is rewritten.
  if n != expected:
    return False
  return all(set(fields) <= set(records.decode_example(b, source=path)) for b in ends)


def derive_shard(src: str, dst: str, fn: Callable[[dict], Mapping[str, Any]],
                 new_features: Mapping[str, Mapping[str, Any]], *, tag: str = "0",
                 progress: bool = False) -> int:
  """Writes ``dst``: every record of ``src`` plus ``fn(record)``; returns the record count.

  ``fn`` gets the decoded record and returns exactly the fields of ``new_features``; each is
  checked against its spec (`features.check_record`). ``src`` may equal ``dst``.
  """
  tmp = f"{dst}.tmp-{tag}"
  reader = array_record_module.ArrayRecordReader(src)
  writer = array_record_module.ArrayRecordWriter(tmp, records.WRITER_OPTIONS)
  names = set(new_features)
  try:
    n = int(reader.num_records())
    bar = tqdm(total=n, desc=os.path.basename(dst), disable=not progress, leave=False)
    for start in range(0, n, _READ_CHUNK):
      for k, data in enumerate(reader.read(list(range(start, min(n, start + _READ_CHUNK))))):
        where = f"{src} (record {start + k})"
        ex = records.decode_example(data, source=where)
        added = dict(fn(ex))
        if set(added) != names:
          raise CorpusError(f"derive: the function returned fields {sorted(added)} for record "
                            f"{ex['id']!r} in {src}, the new features are {sorted(names)}")
        for name, spec in new_features.items():
          value = added[name]
          if isinstance(value, np.ndarray) and value.dtype != np.dtype(spec["dtype"]):
            raise CorpusError(f"derive: field {name!r} of record {ex['id']!r} is "
                              f"{value.dtype}, its spec says {spec['dtype']}")
        out = {**ex, **added}
        features.check_record(out, new_features, where)
        writer.write(records.encode_example(out))
        bar.update(1)
    bar.close()
    writer.close()
    reader.close()
  except BaseException:
    writer.close()
    reader.close()
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  os.replace(tmp, dst)
  return n


def derive_corpus(data_dir: str, out_dir: str | None, fn: Callable[[dict], Mapping[str, Any]],
                  new_features: Mapping[str, Mapping[str, Any]], *,
                  splits: Sequence[str] | None = None, process_index: int = 0,
                  process_count: int = 1, workers: int = 1,
                  manifest_updates: Mapping[str, Any] | None = None,
                  progress: bool = False) -> dict[str, Any]:
  """Adds ``fn(record)`` (the fields of ``new_features``) to every record (module docstring).

  Args:
    data_dir: the input corpus.
    out_dir: the output corpus directory (created; shards, manifest and speaker indexes are
      written there), or None to rewrite ``data_dir`` in place.
    fn: decoded record -> ``{name: array}`` for exactly the names of ``new_features``.
      Must be picklable when ``workers > 1`` (e.g. a `functools.partial` of a module-level
      function).
    new_features: ``name -> spec`` (`features.frame_spec`, `features.codes_spec`,
      `features.utterance_spec`, ...), merged into the manifest's ``features``.
    splits: splits to derive (default: every non-empty split). In place, only all of them
      (the manifest's features hold for the whole corpus).
    process_index / process_count: this process takes shards ``i % process_count ==
      process_index`` of every split.
    workers: shards processed in parallel by that many processes (spawned).
    manifest_updates: top-level manifest entries to set as well (e.g. the legacy
      ``latents`` entry of a latent corpus).
    progress: a tqdm bar per shard (process 0, serial workers only).

  Returns:
    ``{"shards_written", "shards_skipped", "manifest_written", "out"}``.
  """
  manifest = read_manifest(data_dir)
  present = [s for s, info in manifest["splits"].items() if int(info["num_examples"]) > 0]
  splits = list(present if splits is None else splits)
  unknown = [s for s in splits if s not in present]
  if unknown:
    raise CorpusError(f"{os.path.join(data_dir, MANIFEST)}: no non-empty split(s) {unknown} "
                      f"(non-empty splits: {sorted(present)})")
  in_place = out_dir is None or os.path.abspath(out_dir) == os.path.abspath(data_dir)
  if in_place and sorted(splits) != sorted(present):
    raise ValueError(f"derive in place needs every split {sorted(present)}, got {splits}: "
                     "pass an output directory to derive some splits only")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  out = os.path.abspath(data_dir if in_place else out_dir)
  os.makedirs(out, exist_ok=True)
  fields = sorted(new_features)
  sources = {s: CorpusSource(data_dir, s) for s in splits}
  jobs, skipped, all_shards = [], 0, []
  for split in splits:
    src = sources[split]
    for i, (path, size) in enumerate(zip(src.shard_paths, src.shard_sizes)):
      dst = os.path.join(out, os.path.basename(path))
      all_shards.append((dst, size))
      if i % process_count != process_index:
        continue
      if _shard_complete(dst, fields, size):
        skipped += 1
      else:
        jobs.append((path, dst))
  tag = f"{process_index}-{os.getpid()}"
  if workers > 1 and len(jobs) > 1:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
      futures = [pool.submit(derive_shard, p, d, fn, new_features, tag=f"{tag}-{k}")
                 for k, (p, d) in enumerate(jobs)]
      for fut in futures:
        fut.result()
  else:
    for p, d in jobs:
      derive_shard(p, d, fn, new_features, tag=tag,
                   progress=progress and process_index == 0)
  written_manifest = all(_shard_complete(d, fields, n) for d, n in all_shards)
  if written_manifest:
    new_manifest = features.with_features(manifest, new_features)
    new_manifest.update(dict(manifest_updates or {}))
    new_manifest["splits"] = {s: manifest["splits"][s] for s in
                              (manifest["splits"] if in_place else splits)}
    if not in_place:
      for s in splits:
        index = os.path.join(data_dir, f"{s}.speaker_index.npy")
        if os.path.exists(index):
          shutil.copyfile(index, os.path.join(out, os.path.basename(index)))
    write_json(os.path.join(out, MANIFEST), new_manifest)
  return {"out": out, "shards_written": len(jobs), "shards_skipped": skipped,
          "manifest_written": written_manifest}


def f0_fields(example: Mapping[str, Any], *, sample_rate: int, hop_length: int,
              f0_floor: float = f0_lib.F0_FLOOR, f0_ceil: float = f0_lib.F0_CEIL
              ) -> dict[str, np.ndarray]:
  """``{"f0": float32 [F], "voiced": bool [F]}`` of one record (`jaxtts.audio.f0`)."""
  f0, voiced = f0_lib.compute_f0(example["audio"], sample_rate, hop_length,
                                 f0_floor=f0_floor, f0_ceil=f0_ceil)
  return {"f0": f0, "voiced": voiced}


def add_f0(data_dir: str, out_dir: str | None = None, *, splits: Sequence[str] | None = None,
           workers: int = 1, process_index: int = 0, process_count: int = 1,
           f0_floor: float = f0_lib.F0_FLOOR, f0_ceil: float = f0_lib.F0_CEIL
           ) -> dict[str, Any]:
  """The F0 derive step: `derive_corpus` with ``f0`` and ``voiced`` at the manifest's hop."""
  manifest = read_manifest(data_dir)
  sr, hop = int(manifest["sample_rate"]), int(manifest["hop_length"])
  fn = functools.partial(f0_fields, sample_rate=sr, hop_length=hop, f0_floor=f0_floor,
                         f0_ceil=f0_ceil)
  specs = features.f0_specs(hop, sr, f0_lib.settings(f0_floor, f0_ceil))
  return derive_corpus(data_dir, out_dir, fn, specs, splits=splits, workers=workers,
                       process_index=process_index, process_count=process_count)
