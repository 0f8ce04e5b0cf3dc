"""TFDS builders whose examples are exactly our records (CONTRACTS.md), in ArrayRecord files.

* ``jaxtts_corpus``: converts an existing corpus directory of ours (``manifest.json`` +
  ArrayRecord shards, e.g. `jaxtts.data.synthetic.write_synthetic_corpus` output) into TFDS.

Storage (read back by `jaxtts.data.tfds_source.TfdsSource`, ``data.source='tfds'``): ``audio`` as
FLAC bytes (lossless for int16), ``id`` / ``text`` / ``speaker`` as Text, ``sample_rate`` /
``speaker_id`` as int64 scalars, every other field of the manifest's ``features`` as a Tensor
([N, *inner] per phoneme / frame, [*inner] per utterance) in its stored dtype, and ``index``,
the record's position in our split order. Examples are keyed by ``index`` with
``disable_shuffling``, so TFDS keeps our order. The manifest is ``info.metadata["manifest"]``.

  from data_pipelines import tfds_builders
  tfds_builders.JaxttsCorpus(corpus_dir=DIR, data_dir=TFDS_DIR).download_and_prepare()
  # then data.source='tfds', data.tfds_name='jaxtts_corpus', data.tfds_data_dir=TFDS_DIR

One prepared corpus per ``data_dir`` for ``jaxtts_corpus`` (name and version are fixed).
TensorFlow is not needed (tensorflow-datasets only, the ``tfds`` extra).
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from jaxtts.data import features as features_lib
from jaxtts.data.source import CorpusError, CorpusSource, read_manifest
from jaxtts.data.tfds_source import INDEX, INT_FIELDS, TEXT_FIELDS, encode_flac

SPLITS = ("train", "valid", "test_zero_shot")


def tfds_features(manifest: Mapping[str, Any]) -> tfds.features.FeaturesDict:
  """The TFDS features of a corpus: scalars, FLAC ``audio`` and one Tensor per array field."""
  feats: dict[str, Any] = {INDEX: tfds.features.Scalar(np.int64)}
  feats.update({k: tfds.features.Text() for k in TEXT_FIELDS})
  feats.update({k: tfds.features.Scalar(np.int64) for k in INT_FIELDS})
  feats["audio"] = tfds.features.Tensor(shape=(), dtype=np.object_)
  for name, spec in features_lib.manifest_features(manifest).items():
    if name == "audio":
      continue
    inner = tuple(int(d) for d in spec.get("inner_shape", ()))
    shape = inner if spec["level"] == "utterance" else (None,) + inner
    feats[name] = tfds.features.Tensor(shape=shape, dtype=np.dtype(spec["dtype"]),
                                       encoding=tfds.features.Encoding.BYTES)
  return tfds.features.FeaturesDict(feats)


def to_tfds_example(record: Mapping[str, Any], index: int,
                    specs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  """A record dict -> the TFDS example (FLAC audio); a field outside the features is an error."""
  out: dict[str, Any] = {INDEX: int(index)}
  rid = record.get("id", "?")
  for key, value in record.items():
    if key in TEXT_FIELDS:
      out[key] = str(value)
    elif key in INT_FIELDS:
      out[key] = int(value)
    elif key == "audio":
      out[key] = encode_flac(value, int(record["sample_rate"]))
    elif key in specs:
      value = np.asarray(value)
      if value.dtype != np.dtype(specs[key]["dtype"]):
        raise CorpusError(f"record {rid!r} field {key!r} is {value.dtype}, the manifest's "
                          f"features say {specs[key]['dtype']}")
      out[key] = value
    else:
      raise CorpusError(f"record {rid!r} field {key!r} is not in the manifest's features: "
                        "TFDS stores only listed fields")
  missing = [k for k in list(specs) + list(TEXT_FIELDS) + list(INT_FIELDS) if k not in out]
  if missing:
    raise CorpusError(f"record {rid!r} lacks field(s) {missing} that the manifest lists")
  return out


class RecordBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared by our builders: features and metadata from the manifest, our order kept.

  Subclasses give `_build_manifest` (None when only reading a prepared dataset: features and
  metadata then come from its files) and `_generate_examples(split)` yielding records.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Records of CONTRACTS.md, FLAC audio, our split order."}

  def __init__(self, **kwargs: Any):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _build_manifest(self) -> dict[str, Any] | None:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    manifest = self._build_manifest()
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.splitlines()[0],
        features=tfds_features(manifest) if manifest is not None else None,
        metadata=tfds.core.MetadataDict(manifest=manifest) if manifest is not None else None,
        disable_shuffling=True)

  def _records(self, split: str) -> Iterator[dict[str, Any]]:
    raise NotImplementedError

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    manifest = self.info.metadata["manifest"]
    return {split: self._generate_examples(split) for split in manifest["splits"]}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    specs = features_lib.manifest_features(self.info.metadata["manifest"])
    specs = {k: v for k, v in specs.items() if k != "audio"}
    for i, record in enumerate(self._records(split)):
      yield i, to_tfds_example(record, i, specs)


class JaxttsCorpus(RecordBuilder):
  """``jaxtts_corpus``: an existing corpus directory of ours (``corpus_dir``) as TFDS."""

  def __init__(self, *, corpus_dir: str | os.PathLike | None = None, **kwargs: Any):
    """``corpus_dir`` to build; omit it to read a prepared dataset (``data_dir``)."""
    self._corpus_dir = None if corpus_dir is None else os.path.abspath(os.fspath(corpus_dir))
    super().__init__(**kwargs)

  def _build_manifest(self) -> dict[str, Any] | None:
    if self._corpus_dir is None:
      return None
    manifest = read_manifest(self._corpus_dir)
    # Records must be decodable with their features; validate every split up front.
    for split in manifest["splits"]:
      CorpusSource(self._corpus_dir, split)
    return manifest

  def _records(self, split: str) -> Iterator[dict[str, Any]]:
    if self._corpus_dir is None:
      raise CorpusError("jaxtts_corpus: pass corpus_dir=DIR to build (the corpus to convert)")
    source = CorpusSource(self._corpus_dir, split)
    for i in range(len(source)):
      yield source.example(i)
