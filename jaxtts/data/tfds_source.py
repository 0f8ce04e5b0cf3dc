"""One split of a TFDS-prepared corpus as a Grain random-access source (``data.source='tfds'``).

The builders in ``data_pipelines/tfds_builders.py`` store our records (CONTRACTS.md) as TFDS
examples in ArrayRecord files: ``audio`` as FLAC bytes (lossless for int16, decoded here with
soundfile), ``id`` / ``text`` / ``speaker`` as Text, ``sample_rate`` / ``speaker_id`` as
scalars, every other array field of the manifest's ``features`` as a Tensor feature, plus
``index`` (the record's position in our split order); other scalar record fields (e.g. the
Libri builders' ``source_sample_rate``) as Text or int64 scalars. The manifest itself is the
builder's ``DatasetInfo.metadata["manifest"]``. Reading follows the stored feature types.

Builders set ``disable_shuffling`` and key every example by its ``index``, so TFDS stores
records in our order; `TfdsSource.example` checks the stored ``index`` on every read, so the
Grain chain (``MapDataset.range(N)`` + a decode map) yields the same batches as over
`jaxtts.data.source.CorpusSource` for the same seed. TensorFlow is not needed.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from jaxtts.data.source import CorpusError, validate_manifest

# Record fields every corpus has, stored as TFDS Text (bytes when read) and int64 scalars.
TEXT_FIELDS = ("id", "text", "speaker")
INT_FIELDS = ("sample_rate", "speaker_id")
INDEX = "index"  # Position of the record in our split order (not a record field).


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise CorpusError("data.source='tfds' needs tensorflow-datasets: pip install -e '.[tfds]'"
                      ) from e
  return tfds


def encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
  """int16 [T] PCM -> FLAC bytes (lossless; b'' for an empty waveform)."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  audio = np.asarray(audio)
  if audio.dtype != np.int16 or audio.ndim != 1:
    raise CorpusError(f"audio must be int16 [T] to store as FLAC, got {audio.dtype} "
                      f"{list(audio.shape)}")
  if audio.size == 0:
    return b""
  buf = io.BytesIO()
  sf.write(buf, audio, int(sample_rate), format="FLAC", subtype="PCM_16")
  return buf.getvalue()


def decode_flac(data: bytes) -> np.ndarray:
  """FLAC bytes -> int16 [T] (inverse of `encode_flac`)."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  if not data:
    return np.zeros((0,), np.int16)
  audio, _ = sf.read(io.BytesIO(data), dtype="int16", always_2d=False)
  return audio


def _kind(name: str, feature: Any, tfds: Any) -> str:
  """How a stored feature reads back: ``text`` (str), ``int``, ``audio`` (FLAC) or ``array``."""
  if name == "audio":
    return "audio"
  if isinstance(feature, tfds.features.Text):
    return "text"
  if tuple(feature.shape) == () and np.dtype(feature.np_dtype).kind in "iu":
    return "int"
  return "array"


class TfdsSource:
  """Split ``split`` of the TFDS dataset ``name``, with `CorpusSource`'s reading interface.

  Attributes:
    name / split / data_dir: what was opened (``data.tfds_name``, the split,
      ``data.tfds_data_dir``; None = TFDS's default directory).
    corpus_dir: the prepared dataset's directory (``DATA_DIR/name/config/version``).
    manifest: our manifest, from the builder's metadata.
    sample_rate / hop_length / phoneme_symbols / speaker_ids: as `CorpusSource`.
  """

  def __init__(self, name: str, split: str, *, data_dir: str | os.PathLike | None = None,
               sample_rate: int | None = None):
    """Opens the prepared dataset; errors name ``data.tfds_name`` / the split / the field."""
    self.name, self.split = str(name), str(split)
    self.data_dir = None if data_dir is None else os.fspath(data_dir)
    tfds = _tfds()
    try:
      builder = tfds.builder(self.name, data_dir=self.data_dir)
    except Exception as e:  # tfds raises DatasetNotFoundError and friends.
      raise CorpusError(f"data.tfds_name: cannot open TFDS dataset {self.name!r} in "
                        f"{self.data_dir or 'the default data dir'} ({type(e).__name__}: {e})"
                        ) from e
    self.corpus_dir = os.fspath(builder.data_dir)
    where = f"TFDS dataset {self.name!r} ({self.corpus_dir})"
    manifest = (builder.info.metadata or {}).get("manifest")
    if not isinstance(manifest, dict):
      raise CorpusError(f"{where}: its metadata has no 'manifest': not built by "
                        "data_pipelines/tfds_builders.py")
    self.manifest = validate_manifest(manifest, where)
    splits = self.manifest["splits"]
    if split not in splits or split not in builder.info.splits:
      raise CorpusError(f"unknown split {split!r} in {where}; valid splits: {sorted(splits)}")
    self.sample_rate = int(self.manifest["sample_rate"])
    if sample_rate is not None and int(sample_rate) != self.sample_rate:
      raise CorpusError(f"{where}: field 'sample_rate' is {self.sample_rate} Hz but the data "
                        f"config expects {sample_rate} Hz (data.sample_rate)")
    self.hop_length = int(self.manifest["hop_length"])
    self.phoneme_symbols: list[str] = list(self.manifest["phoneme_table"]["symbols"])
    self.speaker_ids: list[int] = [int(s) for s in splits[split].get("speaker_ids", [])]
    self._where = where
    self._kinds = {name: _kind(name, feature, tfds)
                   for name, feature in builder.info.features.items() if name != INDEX}
    self._ds = builder.as_data_source(split)
    expected = int(splits[split]["num_examples"])
    if len(self._ds) != expected:
      raise CorpusError(f"{where}: field 'splits.{split}.num_examples' is {expected} but the "
                        f"TFDS split holds {len(self._ds)} examples")
    if expected == 0:
      raise CorpusError(f"{where}: split {split!r} has no examples")
    self._record_speaker_ids: np.ndarray | None = None

  def __getstate__(self) -> dict[str, Any]:  # Grain workers reopen the data source.
    state = dict(self.__dict__)
    state["_ds"] = None
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._ds = _tfds().builder(self.name, data_dir=self.data_dir).as_data_source(self.split)

  def __len__(self) -> int:
    return len(self._ds)

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r}, split={self.split!r}, num_records={len(self)})"

  def locate(self, index: int) -> tuple[str, int]:
    """``(description of the split, position)`` of record ``index`` (for error messages)."""
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range for split {self.split!r} "
                       f"of {len(self)} records")
    return f"{self._where} split {self.split!r}", index

  def _raw(self, index: int) -> dict[str, Any]:
    index = int(index) % len(self)
    try:
      raw = self._ds[index]
    except Exception as e:
      raise CorpusError(f"{self._where}: cannot read record {index} of split {self.split!r} "
                        f"({type(e).__name__}: {e})") from e
    if int(raw[INDEX]) != index:
      raise CorpusError(f"{self._where}: record {index} of split {self.split!r} has index "
                        f"{int(raw[INDEX])}: the dataset was not written in our order "
                        "(build it with data_pipelines/tfds_builders.py)")
    return raw

  def example(self, index: int) -> dict[str, Any]:
    """Record ``index`` as `CorpusSource.example` returns it (str text, int16 audio, ...)."""
    raw = self._raw(index)
    ex: dict[str, Any] = {}
    for key, kind in self._kinds.items():
      value = raw[key]
      if kind == "text":
        ex[key] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
      elif kind == "int":
        ex[key] = int(value)
      elif kind == "audio":
        ex[key] = decode_flac(value)
      else:
        ex[key] = np.asarray(value)
    if ex["sample_rate"] != self.sample_rate:
      raise CorpusError(f"record {ex['id']!r} ({self._where}, position {index}) has sample_rate "
                        f"{ex['sample_rate']} Hz, the manifest says {self.sample_rate} Hz")
    return ex

  def record_speaker_ids(self) -> np.ndarray:
    """int32 [N]: the ``speaker_id`` of every record (read once, no audio decoding), cached."""
    if self._record_speaker_ids is None:
      self._record_speaker_ids = np.asarray(
          [int(self._raw(i)["speaker_id"]) for i in range(len(self))], np.int32)
    return self._record_speaker_ids
