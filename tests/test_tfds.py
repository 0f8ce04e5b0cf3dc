"""TFDS builders and ``data.source='tfds'``: the records and batches of our ArrayRecord path."""

import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from data_pipelines import tfds_builders  # pylint: disable=g-import-not-at-top
from jaxtts.data import pipeline, synthetic
from jaxtts.data.source import CorpusSource
from jaxtts.data.tfds_source import TfdsSource

tfds.disable_progress_bar()


def assert_same_example(a: dict, b: dict) -> None:
  """Every field equal: same keys, str/int values equal, arrays equal in dtype, shape, bits."""
  assert sorted(a) == sorted(b), (sorted(a), sorted(b))
  for key, value in a.items():
    other = b[key]
    if isinstance(value, np.ndarray):
      assert isinstance(other, np.ndarray) and other.dtype == value.dtype, key
      assert other.shape == value.shape and other.tobytes() == value.tobytes(), key
    else:
      assert type(other) is type(value) and other == value, (key, value, other)


def assert_same_corpus(corpus_dir: str, name: str, data_dir: str) -> None:
  """Every split: same ids in the same order, every example field equal, same manifest."""
  for split in CorpusSource(corpus_dir, split="train").manifest["splits"]:
    ours, theirs = CorpusSource(corpus_dir, split), TfdsSource(name, split, data_dir=data_dir)
    assert len(ours) == len(theirs)
    assert theirs.manifest == ours.manifest
    for i in range(len(ours)):
      assert_same_example(ours.example(i), theirs.example(i))
    np.testing.assert_array_equal(ours.record_speaker_ids(), theirs.record_speaker_ids())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A synthetic corpus with every optional field, and its ``jaxtts_corpus`` conversion."""
  root = tmp_path_factory.mktemp("tfds")
  corpus = str(root / "corpus")
  synthetic.write_synthetic_corpus(corpus, num_speakers=3, utterances_per_speaker=6,
                                   zero_shot_speakers=1, seed=3, shard_size=5, latent_dim=4,
                                   f0=True, code_quantizers=2, codebook_size=64, timbre_dim=3)
  data_dir = str(root / "tfds_data")
  tfds_builders.JaxttsCorpus(corpus_dir=corpus, data_dir=data_dir).download_and_prepare()
  return corpus, data_dir


def test_converter_keeps_every_record(converted):
  corpus, data_dir = converted
  assert_same_corpus(corpus, "jaxtts_corpus", data_dir)


@pytest.mark.parametrize("mode", ["crop", "bucket"])
def test_pipeline_batches_match_array_record(converted, mode):
  corpus, data_dir = converted
  cfg = pipeline.default_data_config()
  cfg.dir = corpus
  cfg.mode = mode
  cfg.bucket_samples = (16000, 32000, 48000)
  cfg.extra_features = ("f0", "codes", "timbre") if mode == "bucket" else ("f0", "voiced")
  cfg.speaker_balanced = mode == "bucket"
  tf_cfg = cfg.copy_and_resolve_references()
  tf_cfg.source, tf_cfg.tfds_name, tf_cfg.tfds_data_dir = "tfds", "jaxtts_corpus", data_dir
  tf_cfg.dir = None
  kwargs = dict(global_batch_size=4, seed=7, train=True, process_index=0, process_count=1)
  ours = pipeline.make_iterator(cfg, "train", **kwargs)
  theirs = pipeline.make_iterator(tf_cfg, "train", **kwargs)
  for _ in range(6):
    a, b = next(ours), next(theirs)
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
      assert a[key].dtype == b[key].dtype, key


def test_tfds_source_errors_name_the_field(converted, tmp_path):
  _, data_dir = converted
  cfg = pipeline.default_data_config()
  cfg.source = "tfds"
  with pytest.raises(ValueError, match="data.tfds_name"):
    pipeline.make_iterator(cfg, "train", global_batch_size=2, seed=0, train=True,
                           process_index=0, process_count=1)
  with pytest.raises(ValueError, match="data.tfds_name"):
    TfdsSource("no_such_dataset_here", "train", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="unknown split 'nope'"):
    TfdsSource("jaxtts_corpus", "nope", data_dir=data_dir)
  with pytest.raises(ValueError, match="data.sample_rate"):
    TfdsSource("jaxtts_corpus", "train", data_dir=data_dir, sample_rate=24000)
  cfg.source = "webdataset"
  with pytest.raises(ValueError, match="data.source"):
    pipeline.make_iterator(cfg, "train", global_batch_size=2, seed=0, train=True,
                           process_index=0, process_count=1)


@pytest.fixture(scope="module")
def libri_trees(tmp_path_factory):
  from data_pipelines import fixtures  # pylint: disable=g-import-not-at-top
  return fixtures.build_all(str(tmp_path_factory.mktemp("libri_trees")))


LIBRI_CASES = {
    "librispeech": dict(split_subsets={"train": ["train-clean-100"],
                                       "test_zero_shot": ["test-clean"]},
                        alignments="alignments", f0=True),
    "libritts": dict(split_subsets={"train": ["train-clean-100"],
                                    "test_zero_shot": ["test-clean"]}),
    "librilight": dict(split_subsets={},
                       split_cuts={"train": ["small"], "test_zero_shot": ["test_clean"]}),
}


@pytest.mark.parametrize("corpus", sorted(LIBRI_CASES))
def test_libri_builder_matches_jaxtts_corpus(libri_trees, tmp_path, corpus):
  """The TFDS builder and `jaxtts-corpus <corpus>` give the same manifest, ids and records."""
  from data_pipelines import real_corpus  # pylint: disable=g-import-not-at-top
  case = dict(LIBRI_CASES[corpus])
  root = libri_trees[corpus]
  if "alignments" in case:
    case["alignments"] = libri_trees["alignments"]
  if "split_cuts" in case:
    case["split_cuts"] = {s: [libri_trees["cuts"][k] for k in v]
                          for s, v in case["split_cuts"].items()}
  common = dict(seed=1, shard_size=2, valid_fraction=0.34, max_seconds=6.0, **case)
  ours = str(tmp_path / "ours")
  real_corpus.build(corpus, root, ours, progress=False, **common)
  builder_cls = {"librispeech": tfds_builders.JaxttsLibrispeech,
                 "libritts": tfds_builders.JaxttsLibritts,
                 "librilight": tfds_builders.JaxttsLibrilight}[corpus]
  data_dir = str(tmp_path / "tfds_data")
  config = tfds_builders.LibriConfig(name="fixture", **common)
  builder = builder_cls(config=config, data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  manifest = CorpusSource(ours, "train").manifest
  assert manifest["filtered"] and manifest["bad_files"]  # the fixtures' bad items were met
  assert builder.info.metadata["manifest"] == manifest
  assert_same_corpus(ours, f"{builder.name}/fixture", data_dir)
