"""TFDS builders whose examples are exactly our records (CONTRACTS.md), in ArrayRecord files.

* ``jaxtts_corpus``: converts an existing corpus directory of ours (``manifest.json`` +
  ArrayRecord shards, e.g. `jaxtts.data.synthetic.write_synthetic_corpus` output) into TFDS.
* ``jaxtts_librispeech``, ``jaxtts_libritts``, ``jaxtts_librilight``: build from the local
  corpus tree (``manual_dir``, the ``--root`` of ``jaxtts-corpus``) with the planning of
  `data_pipelines.libri_plan` and the records of `data_pipelines.libri_records`: the same
  records, order and manifest as ``jaxtts-corpus librispeech|libritts|librilight`` with the
  same options (`LibriConfig`)::

    tfds_builders.JaxttsLibrispeech(config="clean100", data_dir=TFDS_DIR).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="LibriSpeech"))
    # or (not tried here): tfds build jaxtts_librispeech/clean100 --imports
    #   data_pipelines.tfds_builders --manual_dir LibriSpeech --data_dir TFDS_DIR

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

import dataclasses
import json
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import libri_layouts, libri_plan, libri_records
from jaxtts.data import features as features_lib
from jaxtts.data.source import CorpusError, CorpusSource, read_manifest
from jaxtts.data.tfds_source import INDEX, INT_FIELDS, TEXT_FIELDS, encode_flac
from jaxtts.text.symbols import PhonemeTable


def tfds_features(specs: Mapping[str, Mapping[str, Any]],
                  scalars: Mapping[str, type] | None = None) -> tfds.features.FeaturesDict:
  """The TFDS features of a corpus: scalars, FLAC ``audio`` and one Tensor per array field.

  ``specs``: `jaxtts.data.features.manifest_features` of the manifest; ``scalars``: more
  scalar record fields, name -> ``str`` (Text) or ``int`` (int64).
  """
  feats: dict[str, Any] = {INDEX: tfds.features.Scalar(np.int64)}
  feats.update({k: tfds.features.Text() for k in TEXT_FIELDS})
  feats.update({k: tfds.features.Scalar(np.int64) for k in INT_FIELDS})
  for name, kind in (scalars or {}).items():
    feats[name] = tfds.features.Text() if kind is str else tfds.features.Scalar(np.int64)
  feats["audio"] = tfds.features.Tensor(shape=(), dtype=np.object_)
  for name, spec in specs.items():
    if name == "audio":
      continue
    inner = tuple(int(d) for d in spec.get("inner_shape", ()))
    shape = inner if spec["level"] == "utterance" else (None,) + inner
    feats[name] = tfds.features.Tensor(shape=shape, dtype=np.dtype(spec["dtype"]),
                                       encoding=tfds.features.Encoding.BYTES)
  return tfds.features.FeaturesDict(feats)


def scalar_fields(record: Mapping[str, Any]) -> dict[str, type]:
  """A record's scalar fields beyond the common ones: name -> ``str`` or ``int``."""
  out = {}
  for key, value in record.items():
    if key in TEXT_FIELDS or key in INT_FIELDS or isinstance(value, np.ndarray):
      continue
    if isinstance(value, str):
      out[key] = str
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
      out[key] = int
    else:
      raise CorpusError(f"record {record.get('id', '?')!r} field {key!r} is a "
                        f"{type(value).__name__}: TFDS stores str / int scalars and the "
                        "manifest's array features")
  return out


def to_tfds_example(record: Mapping[str, Any], index: int,
                    specs: Mapping[str, Mapping[str, Any]],
                    scalars: Mapping[str, type] | None = None) -> dict[str, Any]:
  """A record dict -> the TFDS example (FLAC audio); a field outside the features is an error."""
  out: dict[str, Any] = {INDEX: int(index)}
  rid = record.get("id", "?")
  scalars = scalars or {}
  for key, value in record.items():
    if key in TEXT_FIELDS or scalars.get(key) is str:
      out[key] = str(value)
    elif key in INT_FIELDS or scalars.get(key) is int:
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
  missing = [k for k in [*specs, *TEXT_FIELDS, *INT_FIELDS, *scalars] if k not in out]
  if missing:
    raise CorpusError(f"record {rid!r} lacks field(s) {missing} that the manifest lists")
  return out


class RecordBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared by our builders: features from the manifest, the manifest as metadata, our order.

  Subclasses give `_layout` (the manifest's features and extra scalar fields; None when only
  reading a prepared dataset, whose files then give features and metadata), `_prepare`
  (the manifest, at generation time) and `_records(split)` (the split's records in our order).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Records of CONTRACTS.md, FLAC audio, our split order."}

  def __init__(self, **kwargs: Any):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _layout(self) -> tuple[dict[str, Any], dict[str, type]] | None:
    raise NotImplementedError

  def _prepare(self, dl_manager: Any) -> dict[str, Any]:
    raise NotImplementedError

  def _records(self, split: str) -> Iterator[dict[str, Any]]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    layout = self._layout()
    feats = None
    if layout is not None:
      specs, scalars = layout
      feats = tfds_features(specs, scalars)
    return tfds.core.DatasetInfo(builder=self, description=__doc__.splitlines()[0],
                                 features=feats, metadata=tfds.core.MetadataDict(),
                                 disable_shuffling=True)

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    manifest = self._prepare(dl_manager)
    specs, scalars = self._layout()
    have = features_lib.manifest_features(manifest)
    if sorted(have) != sorted(specs):
      raise CorpusError(f"{self.name}: the corpus has features {sorted(have)}, the builder "
                        f"config declares {sorted(specs)}")
    self.info.metadata["manifest"] = manifest
    return {split: self._generate_examples(split) for split in manifest["splits"]}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    specs, scalars = self._layout()
    specs = {k: v for k, v in specs.items() if k != "audio"}
    for i, record in enumerate(self._records(split)):
      yield i, to_tfds_example(record, i, specs, scalars)


class JaxttsCorpus(RecordBuilder):
  """``jaxtts_corpus``: an existing corpus directory of ours (``corpus_dir``) as TFDS."""

  def __init__(self, *, corpus_dir: str | os.PathLike | None = None, **kwargs: Any):
    """``corpus_dir`` to build; omit it to read a prepared dataset (``data_dir``)."""
    self._corpus_dir = None if corpus_dir is None else os.path.abspath(os.fspath(corpus_dir))
    self._cached_layout = None
    super().__init__(**kwargs)

  def _layout(self) -> tuple[dict[str, Any], dict[str, type]] | None:
    if self._corpus_dir is None:
      return None
    if self._cached_layout is None:
      manifest = read_manifest(self._corpus_dir)
      scalars: dict[str, type] = {}
      for split in manifest["splits"]:  # Opening checks every shard; the first record's
        source = CorpusSource(self._corpus_dir, split)  # scalar fields join the features.
        scalars.update(scalar_fields(source.example(0)))
      self._cached_layout = (features_lib.manifest_features(manifest), scalars)
    return self._cached_layout

  def _prepare(self, dl_manager: Any) -> dict[str, Any]:
    if self._corpus_dir is None:
      raise CorpusError("jaxtts_corpus: pass corpus_dir=DIR to build (the corpus to convert)")
    return read_manifest(self._corpus_dir)

  def _records(self, split: str) -> Iterator[dict[str, Any]]:
    source = CorpusSource(self._corpus_dir, split)
    for i in range(len(source)):
      yield source.example(i)


# ---------------------------------------------------------------------------------------------
# LibriSpeech / LibriTTS(-R) / LibriLight from local files (``manual_dir``)


@dataclasses.dataclass(eq=False)
class LibriConfig(tfds.core.BuilderConfig):
  """Options of `data_pipelines.libri_plan.plan_corpus` (the ``jaxtts-corpus <corpus>`` flags).

  ``split_subsets`` / ``split_cuts``: ``train`` / ``test_zero_shot`` -> subsets / LibriHeavy
  cut files (relative paths are under ``manual_dir``); ``alignments``: a TextGrid directory
  (relative: under ``manual_dir``) for ``durations``.
  """
  split_subsets: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  split_cuts: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  seed: int = 0
  shard_size: int = 256
  valid_fraction: float = 0.01
  min_seconds: float = libri_plan.DEFAULT_MIN_SECONDS
  max_seconds: float = libri_layouts.DEFAULT_MAX_SECONDS
  alignments: str | None = None
  f0: bool = False


def _config(name: str, description: str, **kwargs: Any) -> LibriConfig:
  return LibriConfig(name=name, description=description, **kwargs)


class _LibriBuilder(RecordBuilder):
  """``manual_dir`` is the corpus root (the ``--root`` of ``jaxtts-corpus``). The manifest
  equals the one ``jaxtts-corpus <corpus>`` writes for the same options (plus nothing), and
  the records of every split come in its order (shards in order, plan order inside);
  unusable items are skipped and counted there (``filtered``, ``bad_files``) and listed in
  ``info.metadata["bad_files"]``."""

  CORPUS = ""
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the corpus root (jaxtts-corpus --root) as manual_dir."

  def _layout(self) -> tuple[dict[str, Any], dict[str, type]]:
    cfg = self.builder_config
    specs = libri_plan.feature_specs(libri_plan.has_text(self.CORPUS, cfg.split_cuts),
                                     bool(cfg.alignments), cfg.f0)
    return specs, {"source_sample_rate": int}

  def _prepare(self, dl_manager: Any) -> dict[str, Any]:
    cfg = self.builder_config
    root = os.path.abspath(os.fspath(dl_manager.manual_dir))
    under = lambda p: p if os.path.isabs(p) else os.path.join(root, p)
    self._plan = libri_plan.plan_corpus(
        self.CORPUS, root, split_subsets={k: list(v) for k, v in cfg.split_subsets.items()},
        split_cuts={k: [under(c) for c in v] for k, v in cfg.split_cuts.items()},
        seed=cfg.seed, shard_size=cfg.shard_size, valid_fraction=cfg.valid_fraction,
        min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds,
        alignments=under(cfg.alignments) if cfg.alignments else None, f0=cfg.f0)
    self._table = PhonemeTable.from_json(self._plan.manifest_base["phoneme_table"])
    self._stats: dict[str, dict[str, Any]] = {}
    self._manifest = json.loads(json.dumps(self._plan.manifest_base))
    self._finish_manifest()
    return self._manifest

  def _finish_manifest(self) -> None:
    """The counts of the splits generated so far, aggregated as real_corpus.write_manifest."""
    filtered: dict[str, int] = {}
    rates: dict[str, int] = {}
    bad = list(self._plan.listing_bad)
    bad_alignments = 0
    for split in libri_plan.SPLITS:
      stats = self._stats.get(split, {"n": 0, "samples": 0, "filtered": {}, "bad": [],
                                      "rates": {}})
      info = self._manifest["splits"][split]
      info["num_examples"] = stats["n"]
      info["hours"] = round(stats["samples"] / libri_plan.SAMPLE_RATE / 3600, 6)
      bad.extend(stats["bad"])
      bad_alignments += sum(b["reason"].startswith("alignment:") for b in stats["bad"])
      for src, dst in ((stats["filtered"], filtered), (stats["rates"], rates)):
        for k, v in src.items():
          dst[k] = dst.get(k, 0) + v
    self._manifest.update({
        "filtered": dict(sorted(filtered.items())), "bad_files": len(bad),
        "bad_alignments": bad_alignments,
        "source_sample_rates": dict(sorted(rates.items()))})
    self.info.metadata["bad_files"] = bad

  def _records(self, split: str) -> Iterator[dict[str, Any]]:
    stats = {"n": 0, "samples": 0, "filtered": {}, "bad": [], "rates": {}}
    by_shard: dict[int, list[libri_plan.PlannedItem]] = {}
    for p in self._plan.items:
      if p.split == split:
        by_shard.setdefault(p.shard, []).append(p)
    for j in range(self._plan.num_shards[split]):
      for p in by_shard.get(j, []):
        try:
          record = libri_records.make_record(p, self._plan, table=self._table)
        except libri_records.FilteredItem as e:
          stats["filtered"][e.reason] = stats["filtered"].get(e.reason, 0) + 1
          continue
        except libri_records.BadItem as e:
          stats["bad"].append({"id": p.item.id, "path": p.item.audio_path, "reason": e.reason})
          continue
        stats["n"] += 1
        stats["samples"] += len(record["audio"])
        key = str(record["source_sample_rate"])
        stats["rates"][key] = stats["rates"].get(key, 0) + 1
        yield record
    self._stats[split] = stats
    self._finish_manifest()


class JaxttsLibrispeech(_LibriBuilder):
  """``jaxtts_librispeech``: LibriSpeech (16 kHz FLAC, ``.trans.txt``) as our records."""
  CORPUS = "librispeech"
  BUILDER_CONFIGS = [
      _config("clean100", "train-clean-100; zero-shot test-clean",
              split_subsets={"train": ("train-clean-100",), "test_zero_shot": ("test-clean",)}),
      _config("clean460", "train-clean-100 + 360; zero-shot test-clean",
              split_subsets={"train": ("train-clean-100", "train-clean-360"),
                             "test_zero_shot": ("test-clean",)}),
      _config("all960", "all 960 h; zero-shot test-clean",
              split_subsets={"train": ("train-clean-100", "train-clean-360", "train-other-500"),
                             "test_zero_shot": ("test-clean",)}),
  ]


class JaxttsLibritts(_LibriBuilder):
  """``jaxtts_libritts``: LibriTTS or LibriTTS-R (24 kHz WAV, resampled to 16 kHz)."""
  CORPUS = "libritts"
  BUILDER_CONFIGS = [
      _config("clean100", "train-clean-100; zero-shot test-clean",
              split_subsets={"train": ("train-clean-100",), "test_zero_shot": ("test-clean",)}),
      _config("clean460", "train-clean-100 + 360; zero-shot test-clean",
              split_subsets={"train": ("train-clean-100", "train-clean-360"),
                             "test_zero_shot": ("test-clean",)}),
  ]


class JaxttsLibrilight(_LibriBuilder):
  """``jaxtts_librilight``: LibriLight with LibriHeavy cuts (text) or VAD pieces (no text)."""
  CORPUS = "librilight"
  BUILDER_CONFIGS = [
      _config("small_cuts", "LibriHeavy small cuts; zero-shot its test_clean cuts (cut files "
              "in manual_dir)",
              split_cuts={"train": ("libriheavy_cuts_small.jsonl.gz",),
                          "test_zero_shot": ("libriheavy_cuts_test_clean.jsonl.gz",)}),
      _config("small_vad", "the small subset cut at its voice activity (no text)",
              split_subsets={"train": ("small",)}),
  ]
