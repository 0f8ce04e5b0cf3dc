"""Opening a corpus directory: manifest validation and a Grain random-access source.

A corpus is ``DIR/manifest.json`` plus ArrayRecord shards (layout in ``CONTRACTS.md``).
`CorpusSource` reads and validates the manifest, opens every shard of one split once to
check that it is readable and that the record counts add up, and then serves records by
global index through `grain.sources.ArrayRecordDataSource`. Every error names the file and,
where it applies, the manifest field or the record, so a broken corpus is found fast.

Optional per-split speaker index: ``DIR/<split>.speaker_index.npy`` (int32 [N], the
``speaker_id`` of record i of the split, in shard order). `CorpusSource.record_speaker_ids`
uses it when present and otherwise reads the records once; `write_speaker_index` writes it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import grain
import numpy as np
from array_record.python import array_record_module

from jaxtts.data import records

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_REQUIRED_MANIFEST_FIELDS = (
    "format_version", "sample_rate", "hop_length", "phoneme_table", "speakers", "splits",
)


class CorpusError(ValueError):
  """A corpus directory, manifest, shard or record that does not match CONTRACTS.md."""


class CorpusFileNotFoundError(CorpusError, FileNotFoundError):
  """The manifest or a shard named by it is missing."""


def speaker_index_path(corpus_dir: str | os.PathLike, split: str) -> str:
  """Path of the optional per-split speaker index, ``DIR/<split>.speaker_index.npy``."""
  return os.path.join(os.fspath(corpus_dir), f"{split}.speaker_index.npy")


def read_manifest(corpus_dir: str | os.PathLike) -> dict[str, Any]:
  """Reads ``DIR/manifest.json`` and checks its top-level fields and splits."""
  path = os.path.join(os.fspath(corpus_dir), MANIFEST)
  if not os.path.isfile(path):
    if not os.path.isdir(os.fspath(corpus_dir)):
      raise CorpusFileNotFoundError(f"corpus directory {os.fspath(corpus_dir)!r} does not "
                                    f"exist (expected {path})")
    raise CorpusFileNotFoundError(f"missing manifest {path}: not a corpus directory "
                                  "(build one with jaxtts-corpus)")
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise CorpusError(f"{path}: cannot read the manifest ({type(e).__name__}: {e})") from e
  return validate_manifest(manifest, path)


def validate_manifest(manifest: Any, path: str) -> dict[str, Any]:
  """Checks a parsed manifest's top-level fields and splits; errors start with ``path``."""
  if not isinstance(manifest, dict):
    raise CorpusError(f"{path}: the manifest is a {type(manifest).__name__}, expected an object")
  missing = [k for k in _REQUIRED_MANIFEST_FIELDS if k not in manifest]
  if missing:
    raise CorpusError(f"{path}: missing field(s) {missing}")
  if manifest["format_version"] != FORMAT_VERSION:
    raise CorpusError(f"{path}: field 'format_version' is {manifest['format_version']!r}, "
                      f"this code reads version {FORMAT_VERSION}")
  table = manifest["phoneme_table"]
  if not isinstance(table, dict) or not isinstance(table.get("symbols"), list):
    raise CorpusError(f"{path}: field 'phoneme_table.symbols' must be a list of symbols")
  if not isinstance(manifest["splits"], dict) or not manifest["splits"]:
    raise CorpusError(f"{path}: field 'splits' must be a non-empty object")
  for name, split in manifest["splits"].items():
    if not isinstance(split, dict):
      raise CorpusError(f"{path}: field 'splits.{name}' must be an object")
    for key in ("shards", "num_examples"):
      if key not in split:
        raise CorpusError(f"{path}: split {name!r} lacks field 'splits.{name}.{key}'")
    if not isinstance(split["shards"], list) or not split["shards"]:
      raise CorpusError(f"{path}: field 'splits.{name}.shards' must be a non-empty list")
  return manifest


def _open_shard(path: str) -> int:
  """Opens one shard, returns its record count; raises `CorpusError` naming the path."""
  if not os.path.isfile(path):
    raise CorpusFileNotFoundError(f"missing shard {path} (listed in {MANIFEST})")
  try:
    reader = array_record_module.ArrayRecordReader(path)
  except Exception as e:  # The C++ reader raises RuntimeError / ValueError.
    raise CorpusError(f"corrupt shard {path}: cannot open as ArrayRecord "
                      f"({type(e).__name__}: {e})") from e
  ok = reader.ok()
  num_records = int(reader.num_records()) if ok else 0
  try:
    reader.close()  # Raises the reader's error status for a broken file.
  except Exception as e:  # pylint: disable=broad-except
    raise CorpusError(f"corrupt shard {path}: not a readable ArrayRecord file "
                      f"({type(e).__name__}: {e})") from e
  if not ok:
    raise CorpusError(f"corrupt shard {path}: not a readable ArrayRecord file")
  return num_records


class RecordLocation:
  """Formats as ``"<shard path> (record <position>)"`` (`CorpusSource.locate`) only when an
  error message uses it, so decoding a good record does not search the shard offsets."""

  __slots__ = ("_source", "_index")

  def __init__(self, source: "CorpusSource", index: int):
    self._source, self._index = source, index

  def __str__(self) -> str:
    path, pos = self._source.locate(int(self._index) % len(self._source))
    return f"{path} (record {pos})"

  def __format__(self, spec: str) -> str:
    return format(str(self), spec)


class CorpusSource:
  """One split of a corpus as a Grain random-access data source of raw record bytes.

  ``source[i]`` is the serialized record ``i`` (shards in manifest order);
  `example` decodes and checks it. The object is picklable (Grain worker processes).

  Attributes:
    corpus_dir: the corpus directory.
    split: the split name.
    manifest: the parsed ``manifest.json``.
    sample_rate: Hz, equal to the manifest's.
    hop_length: samples per duration frame, from the manifest.
    phoneme_symbols: ``symbols[i]`` is phoneme id ``i``; id 0 is ``"<pad>"``.
    speaker_ids: the speaker ids that occur in this split (from the manifest).
    shard_paths: absolute paths of the split's shards.
    shard_sizes: records per shard.
  """

  def __init__(self, corpus_dir: str | os.PathLike, split: str, *,
               sample_rate: int | None = None):
    """Opens ``split`` of the corpus in ``corpus_dir``.

    Args:
      corpus_dir: directory holding ``manifest.json`` and the shards.
      split: one of the manifest's splits (``train``, ``valid``, ``test_zero_shot``).
      sample_rate: the sample rate the caller expects (the data config's); ``None`` skips
        the check.

    Raises:
      CorpusFileNotFoundError: the manifest or a shard is missing.
      CorpusError: a malformed manifest, an unknown split, a sample-rate mismatch, a
        corrupt shard, or shard record counts that differ from ``num_examples``.
    """
    self.corpus_dir = os.path.abspath(os.fspath(corpus_dir))
    self.manifest = read_manifest(self.corpus_dir)
    manifest_path = os.path.join(self.corpus_dir, MANIFEST)
    splits = self.manifest["splits"]
    if split not in splits:
      raise CorpusError(f"unknown split {split!r} in {manifest_path}; valid splits: "
                        f"{sorted(splits)}")
    self.split = split
    self.sample_rate = int(self.manifest["sample_rate"])
    if sample_rate is not None and int(sample_rate) != self.sample_rate:
      raise CorpusError(f"{manifest_path}: field 'sample_rate' is {self.sample_rate} Hz but "
                        f"the data config expects {sample_rate} Hz (data.sample_rate)")
    self.hop_length = int(self.manifest["hop_length"])
    self.phoneme_symbols: list[str] = list(self.manifest["phoneme_table"]["symbols"])
    info = splits[split]
    self.speaker_ids: list[int] = [int(s) for s in info.get("speaker_ids", [])]
    self.shard_paths = [os.path.join(self.corpus_dir, name) for name in info["shards"]]
    self.shard_sizes = [_open_shard(p) for p in self.shard_paths]
    expected = int(info["num_examples"])
    if sum(self.shard_sizes) != expected:
      counts = ", ".join(f"{os.path.basename(p)}: {n}"
                         for p, n in zip(self.shard_paths, self.shard_sizes))
      raise CorpusError(f"{manifest_path}: field 'splits.{split}.num_examples' is {expected} "
                        f"but the shards hold {sum(self.shard_sizes)} records ({counts})")
    if expected == 0:
      raise CorpusError(f"{manifest_path}: split {split!r} has no examples")
    self._offsets = np.cumsum([0] + self.shard_sizes)
    # `path[start:end]` read instructions: ArrayRecordDataSource need not reopen the shards.
    try:
      self._source = grain.sources.ArrayRecordDataSource(
          [f"{p}[0:{n}]" for p, n in zip(self.shard_paths, self.shard_sizes)])
    except Exception as e:
      raise CorpusError(f"cannot open the shards of split {split!r} in {self.corpus_dir} "
                        f"({type(e).__name__}: {e})") from e
    self._record_speaker_ids: np.ndarray | None = None

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def __repr__(self) -> str:
    return (f"CorpusSource({self.corpus_dir!r}, split={self.split!r}, "
            f"num_records={len(self)}, shards={len(self.shard_paths)})")

  def locate(self, index: int) -> tuple[str, int]:
    """``(shard path, position in the shard)`` of record ``index``."""
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range for split {self.split!r} "
                       f"of {len(self)} records")
    shard = int(np.searchsorted(self._offsets, index, side="right") - 1)
    return self.shard_paths[shard], index - int(self._offsets[shard])

  def where(self, index: int) -> "RecordLocation":
    """``"<shard path> (record <position>)"`` of record ``index``, formatted when used."""
    return RecordLocation(self, index)

  def __getitem__(self, index: int) -> bytes:
    """Raw bytes of record ``index``; read errors name the shard and position."""
    index = int(index)
    try:
      return self._source[index]
    except Exception as e:
      path, pos = self.locate(index % len(self))
      raise CorpusError(f"corrupt shard {path}: cannot read record {pos} "
                        f"({type(e).__name__}: {e})") from e

  def example(self, index: int) -> dict[str, Any]:
    """Record ``index`` decoded (`records.decode_example`) and checked.

    Raises:
      CorpusError: unreadable bytes, missing fields, or a ``sample_rate`` that differs from
        the manifest's; the message names the record id and its shard.
    """
    data = self[index]
    try:
      ex = records.decode_example(data, source=self.where(index))
    except records.RecordError as e:
      raise CorpusError(str(e)) from e
    if int(ex["sample_rate"]) != self.sample_rate:
      path, pos = self.locate(int(index) % len(self))
      raise CorpusError(f"record {ex['id']!r} in shard {path} (position {pos}) has "
                        f"sample_rate {ex['sample_rate']} Hz, the manifest says "
                        f"{self.sample_rate} Hz")
    return ex

  def record_speaker_ids(self) -> np.ndarray:
    """int32 [N]: the ``speaker_id`` of every record, cached.

    Read from ``DIR/<split>.speaker_index.npy`` when it exists (checked against the split's
    length), otherwise by decoding every record once.
    """
    if self._record_speaker_ids is None:
      path = speaker_index_path(self.corpus_dir, self.split)
      if os.path.isfile(path):
        try:
          ids = np.load(path).astype(np.int32)
        except Exception as e:
          raise CorpusError(f"{path}: cannot read the speaker index "
                            f"({type(e).__name__}: {e})") from e
        if ids.shape != (len(self),):
          raise CorpusError(f"{path}: speaker index has shape {ids.shape}, split "
                            f"{self.split!r} has {len(self)} records")
      else:
        ids = np.empty((len(self),), np.int32)
        for i in range(len(self)):
          ids[i] = int(self.example(i)["speaker_id"])
      self._record_speaker_ids = ids
    return self._record_speaker_ids


def write_speaker_index(corpus_dir: str | os.PathLike,
                        splits: Sequence[str] | None = None) -> list[str]:
  """Writes ``DIR/<split>.speaker_index.npy`` for ``splits`` (default: all); returns paths."""
  manifest = read_manifest(corpus_dir)
  paths = []
  for split in (splits if splits is not None else sorted(manifest["splits"])):
    src = CorpusSource(corpus_dir, split)
    path = speaker_index_path(corpus_dir, split)
    if os.path.exists(path):
      os.remove(path)
    ids = src.record_speaker_ids()
    np.save(path, ids)
    paths.append(path)
  return paths


def open_source(data_cfg: Any, split: str) -> Any:
  """The split's source for ``data.source``: `CorpusSource` over ``data.dir``
  (``'array_record'``, the default) or `jaxtts.data.tfds_source.TfdsSource` over
  ``data.tfds_name`` in ``data.tfds_data_dir`` (``'tfds'``)."""
  kind = data_cfg.get("source", "array_record") or "array_record"
  if kind == "array_record":
    if not data_cfg.dir:
      raise ValueError("data.dir is not set: point it at a corpus directory")
    return CorpusSource(data_cfg.dir, split, sample_rate=data_cfg.sample_rate)
  if kind == "tfds":
    if not data_cfg.get("tfds_name"):
      raise ValueError("data.tfds_name is not set: name the TFDS dataset (data.source='tfds')")
    from jaxtts.data.tfds_source import TfdsSource  # pylint: disable=g-import-not-at-top
    return TfdsSource(data_cfg.tfds_name, split, data_dir=data_cfg.get("tfds_data_dir") or None,
                      sample_rate=data_cfg.sample_rate)
  raise ValueError(f"data.source must be 'array_record' or 'tfds', got {kind!r}")
