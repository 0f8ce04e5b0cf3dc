"""Tests of the synthetic corpus, CorpusSource validation and the Grain pipeline (CPU)."""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import shutil

import grain
import ml_collections
import numpy as np
import pytest
from array_record.python import array_record_module

from jaxtts.data import pipeline, records, source, synthetic
from jaxtts.tasks.corpus_data import CorpusData

BATCH = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """4 training speakers x 8 utterances (28 train, 4 valid) + 1 zero-shot speaker."""
  out = tmp_path_factory.mktemp("corpus")
  manifest = synthetic.write_synthetic_corpus(out, seed=0)
  return str(out), manifest


@pytest.fixture(scope="module")
def unbalanced_corpus(tmp_path_factory):
  out = tmp_path_factory.mktemp("unbalanced")
  synthetic.write_synthetic_corpus(out, num_speakers=4, utterances_per_speaker=[48, 12, 4, 2, 2],
                                   seed=3, min_seconds=0.2, max_seconds=0.4, shard_size=32)
  return str(out)


def _cfg(corpus_dir: str, **overrides):
  cfg = pipeline.default_data_config()
  cfg.dir = corpus_dir
  cfg.segment_samples = 8000
  cfg.bucket_samples = (16000, 32000, 40000)
  cfg.max_phonemes = 64
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


def _all(it):
  out = list(it)
  it.close()
  return out


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _row_keys(batches):
  """One hash per real row (audio up to audio_len): identifies an utterance / crop."""
  keys = []
  for b in batches:
    for audio, n in zip(b["audio"], b["audio_len"]):
      if n > 0:
        keys.append(hashlib.sha1(audio[:n].tobytes()).hexdigest())
  return keys


def _utterance_keys(corpus_dir, split):
  src = source.CorpusSource(corpus_dir, split)
  keys = {}
  for i in range(len(src)):
    ex = src.example(i)
    audio = ex["audio"].astype(np.float32) * np.float32(1.0 / 32768.0)
    keys[hashlib.sha1(audio.tobytes()).hexdigest()] = ex
  return keys


# ---------------------------------------------------------------- synthetic corpus / source


def test_synthetic_corpus_layout_and_records(corpus, tmp_path):
  corpus_dir, manifest = corpus
  with open(os.path.join(corpus_dir, "manifest.json")) as f:
    text = f.read()
  assert json.loads(text) == manifest
  assert text == json.dumps(manifest, sort_keys=True, indent=1) + "\n"
  assert set(manifest["splits"]) == {"train", "valid", "test_zero_shot"}
  assert manifest["phoneme_table"]["symbols"][0] == "<pad>"
  zero_shot = {s["id"] for s in manifest["speakers"] if s["split"] == "test_zero_shot"}
  assert set(manifest["splits"]["test_zero_shot"]["speaker_ids"]) == zero_shot
  assert not zero_shot & set(manifest["splits"]["train"]["speaker_ids"])
  hop = manifest["hop_length"]
  for split, info in manifest["splits"].items():
    n = len(info["shards"])
    assert info["shards"] == [f"{split}-{i:05d}-of-{n:05d}.array_record" for i in range(n)]
    src = source.CorpusSource(corpus_dir, split, sample_rate=16000)
    assert len(src) == info["num_examples"]
    for i in range(len(src)):
      ex = src.example(i)
      assert set(records.REQUIRED_FIELDS) <= set(ex)
      assert ex["audio"].dtype == np.int16 and len(ex["audio"]) % hop == 0
      assert ex["phonemes"].dtype == np.int32 and ex["durations"].dtype == np.int32
      assert ex["durations"].shape == ex["phonemes"].shape
      assert int(ex["durations"].sum()) == len(ex["audio"]) // hop
      assert ex["durations"].min() >= 1 and ex["phonemes"].min() >= 1
      assert ex["speaker_id"] in info["speaker_ids"]
  # Byte-identical for the same seed.
  synthetic.write_synthetic_corpus(tmp_path, seed=0)
  for name in os.listdir(corpus_dir):
    with open(os.path.join(corpus_dir, name), "rb") as a, open(tmp_path / name, "rb") as b:
      assert a.read() == b.read(), name


def test_source_exposes_manifest_fields(corpus):
  corpus_dir, manifest = corpus
  src = source.CorpusSource(corpus_dir, "train")
  assert src.manifest == manifest
  assert src.phoneme_symbols == manifest["phoneme_table"]["symbols"]
  assert src.speaker_ids == manifest["splits"]["train"]["speaker_ids"]
  assert len(src) == manifest["splits"]["train"]["num_examples"]
  assert isinstance(src[0], bytes)
  ids = src.record_speaker_ids()
  assert [src.example(i)["speaker_id"] for i in range(len(src))] == ids.tolist()


def test_speaker_index_sidecar(corpus, tmp_path):
  corpus_dir = str(tmp_path / "c")
  shutil.copytree(corpus[0], corpus_dir)
  scanned = source.CorpusSource(corpus_dir, "train").record_speaker_ids()
  paths = source.write_speaker_index(corpus_dir, ["train"])
  assert paths == [source.speaker_index_path(corpus_dir, "train")]
  np.testing.assert_array_equal(source.CorpusSource(corpus_dir, "train").record_speaker_ids(),
                                scanned)
  np.save(paths[0], scanned[:3])
  with pytest.raises(source.CorpusError, match="speaker_index"):
    source.CorpusSource(corpus_dir, "train").record_speaker_ids()


# ---------------------------------------------------------------- bad input


@pytest.fixture
def corpus_copy(corpus, tmp_path):
  path = str(tmp_path / "copy")
  shutil.copytree(corpus[0], path)
  return path


def test_missing_manifest(corpus_copy):
  os.remove(os.path.join(corpus_copy, "manifest.json"))
  with pytest.raises(source.CorpusFileNotFoundError, match="manifest.json"):
    pipeline.make_dataset(_cfg(corpus_copy), "train", global_batch_size=BATCH, seed=0,
                          train=True, process_index=0, process_count=1)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    source.CorpusSource(os.path.join(corpus_copy, "nope"), "train")


def test_missing_shard(corpus_copy):
  path = os.path.join(corpus_copy, "train-00001-of-00002.array_record")
  os.remove(path)
  with pytest.raises(source.CorpusFileNotFoundError, match="missing shard .*" + path):
    source.CorpusSource(corpus_copy, "train")


def test_corrupt_shard(corpus_copy):
  path = os.path.join(corpus_copy, "train-00000-of-00002.array_record")
  with open(path, "wb") as f:
    f.write(b"this is not an array record file" * 50)
  with pytest.raises(source.CorpusError, match="corrupt shard .*" + path):
    source.CorpusSource(corpus_copy, "train")
  with pytest.raises(source.CorpusError, match="corrupt shard .*" + path):
    pipeline.make_dataset(_cfg(corpus_copy), "train", global_batch_size=BATCH, seed=0,
                          train=True, process_index=0, process_count=1)


def test_manifest_count_mismatch(corpus_copy):
  mpath = os.path.join(corpus_copy, "manifest.json")
  with open(mpath) as f:
    manifest = json.load(f)
  manifest["splits"]["train"]["num_examples"] += 1
  with open(mpath, "w") as f:
    json.dump(manifest, f)
  with pytest.raises(source.CorpusError, match=r"manifest.json.*splits\.train\.num_examples"):
    source.CorpusSource(corpus_copy, "train")
  source.CorpusSource(corpus_copy, "valid")  # Other splits are fine.


def test_manifest_missing_field(corpus_copy):
  mpath = os.path.join(corpus_copy, "manifest.json")
  with open(mpath) as f:
    manifest = json.load(f)
  del manifest["hop_length"]
  with open(mpath, "w") as f:
    json.dump(manifest, f)
  with pytest.raises(source.CorpusError, match=r"manifest.json.*hop_length"):
    source.CorpusSource(corpus_copy, "train")


def test_wrong_sample_rate_in_config(corpus):
  with pytest.raises(source.CorpusError, match=r"manifest.json.*sample_rate.*22050"):
    pipeline.make_dataset(_cfg(corpus[0], sample_rate=22050), "train", global_batch_size=BATCH,
                          seed=0, train=True, process_index=0, process_count=1)


def test_wrong_sample_rate_in_record(corpus_copy):
  shard = os.path.join(corpus_copy, "valid-00000-of-00001.array_record")
  reader = array_record_module.ArrayRecordReader(shard)
  exs = [records.decode_example(b) for b in reader.read_all()]
  reader.close()
  exs[2]["sample_rate"] = 22050
  bad_id = exs[2]["id"]
  writer = array_record_module.ArrayRecordWriter(shard, "group_size:1")
  for ex in exs:
    writer.write(records.encode_example(ex))
  writer.close()
  it = pipeline.make_iterator(_cfg(corpus_copy), "valid", global_batch_size=1, seed=0,
                              train=False, process_index=0, process_count=1)
  with pytest.raises(source.CorpusError, match=f"{bad_id}.*{shard}.*22050"):
    _all(it)
  it.close()


def test_unknown_split(corpus):
  with pytest.raises(source.CorpusError, match=r"'trian'.*\['test_zero_shot', 'train', 'valid'\]"):
    pipeline.make_dataset(_cfg(corpus[0]), "trian", global_batch_size=BATCH, seed=0,
                          train=True, process_index=0, process_count=1)


def test_bad_config(corpus):
  with pytest.raises(ValueError, match="data.mode"):
    pipeline.make_dataset(_cfg(corpus[0], mode="chop"), "train", global_batch_size=BATCH,
                          seed=0, train=True, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="hop_length"):
    pipeline.make_dataset(_cfg(corpus[0], mode="bucket", bucket_samples=(16100,)), "train",
                          global_batch_size=BATCH, seed=0, train=True, process_index=0,
                          process_count=1)
  with pytest.raises(ValueError, match="does not divide"):
    pipeline.make_dataset(_cfg(corpus[0]), "train", global_batch_size=5, seed=0, train=True,
                          process_index=0, process_count=2)


# ---------------------------------------------------------------- pipeline behaviour


def test_crop_batches_contract_and_determinism(corpus):
  cfg = _cfg(corpus[0])
  kw = dict(global_batch_size=BATCH, train=True, process_index=0, process_count=1)
  it = pipeline.make_iterator(cfg, "train", seed=7, **kw)
  a = _take(it, 10)
  it.close()
  for b in a:
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
        k: s for k, s in pipeline.batch_shapes(cfg, BATCH)[0].items()}
    assert np.abs(b["audio"]).max() <= 1.0
    assert (b["audio_len"] > 0).all() and (b["audio_len"] <= cfg.segment_samples).all()
    for row, n in zip(b["audio"], b["audio_len"]):
      assert not row[n:].any()
  # Same seed -> same batches, whatever the read threads and prefetching.
  it = pipeline.make_iterator(_cfg(corpus[0], read_threads=0, prefetch_buffer_size=0),
                              "train", seed=7, **kw)
  _assert_batches_equal(a, _take(it, 10))
  it.close()
  it = pipeline.make_iterator(cfg, "train", seed=8, **kw)
  b = _take(it, 10)
  it.close()
  assert any(not np.array_equal(x["audio"], y["audio"]) for x, y in zip(a, b))


def test_epochs_have_different_orders(corpus):
  corpus_dir, manifest = corpus
  n = manifest["splits"]["train"]["num_examples"]  # 28 = 7 batches of 4.
  # Segments longer than every utterance: rows are whole utterances.
  cfg = _cfg(corpus_dir, segment_samples=48000)
  it = pipeline.make_iterator(cfg, "train", global_batch_size=BATCH, seed=0, train=True,
                              process_index=0, process_count=1)
  keys = _row_keys(_take(it, 3 * n // BATCH))
  it.close()
  utterances = set(_utterance_keys(corpus_dir, "train"))
  epochs = [keys[i * n:(i + 1) * n] for i in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == sorted(utterances)  # Every utterance once per epoch.
  assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]


def test_num_epochs_and_padded_remainder(corpus):
  corpus_dir, manifest = corpus
  n = manifest["splits"]["valid"]["num_examples"]  # 4
  cfg = _cfg(corpus_dir, segment_samples=48000, drop_remainder=False)
  batches = _all(pipeline.make_iterator(cfg, "valid", global_batch_size=3, seed=0, train=False,
                                        process_index=0, process_count=1))
  assert [b["audio"].shape for b in batches] == [(3, 48000)] * 2
  assert (batches[-1]["audio_len"] > 0).sum() == n - 3
  assert sorted(_row_keys(batches)) == sorted(_utterance_keys(corpus_dir, "valid"))
  cfg.drop_remainder = True
  batches = _all(pipeline.make_iterator(cfg, "valid", global_batch_size=3, seed=0, train=False,
                                        process_index=0, process_count=1))
  assert len(batches) == 1


@pytest.mark.parametrize("mode", ["crop", "bucket"])
def test_host_sharding_partitions_the_data(corpus, mode):
  corpus_dir, manifest = corpus
  n = manifest["splits"]["train"]["num_examples"]
  cfg = _cfg(corpus_dir, mode=mode, num_epochs=1, drop_remainder=False,
             bucket_samples=(16000, 32000, 48000), max_phonemes=128)

  def rows(index, count):
    it = pipeline.make_iterator(cfg, "train", global_batch_size=BATCH, seed=5, train=True,
                                process_index=index, process_count=count)
    batches = _all(it)
    assert all(b["audio"].shape[0] == BATCH // count for b in batches)
    return _row_keys(batches)

  single = rows(0, 1)
  p0, p1 = rows(0, 2), rows(1, 2)
  assert len(single) == n
  assert not set(p0) & set(p1)
  assert sorted(p0 + p1) == sorted(single)


def test_bucket_mode_shapes_and_filtering(corpus, caplog):
  corpus_dir, _ = corpus
  cfg = _cfg(corpus_dir, mode="bucket", num_epochs=1, drop_remainder=False,
             bucket_samples=(16000, 24000, 32000), max_phonemes=48)
  src = source.CorpusSource(corpus_dir, "train")
  exs = [src.example(i) for i in range(len(src))]
  too_long = sum(len(e["audio"]) > 32000 for e in exs)
  too_many = sum(len(e["audio"]) <= 32000 and len(e["phonemes"]) > 48 for e in exs)
  assert too_long > 0 and too_many > 0  # The corpus exercises both filters.
  allowed = {tuple((k, v[0]) for k, v in sorted(s.items()))
             for s in pipeline.batch_shapes(cfg, BATCH)}
  with caplog.at_level(logging.WARNING, logger="jaxtts.data.pipeline"):
    it = pipeline.make_iterator(cfg, "train", global_batch_size=BATCH, seed=0, train=True,
                                process_index=0, process_count=1)
    batches = list(it)
    counts = pipeline.filtered_counts(it)
    it.close()
  assert counts == {"filtered_audio_too_long": too_long, "filtered_too_many_phonemes": too_many}
  assert "filtered_audio_too_long so far: 1" in caplog.text
  assert "filtered_too_many_phonemes so far: 1" in caplog.text
  kept = [e for e in exs if len(e["audio"]) <= 32000 and len(e["phonemes"]) <= 48]
  assert sum(int((b["audio_len"] > 0).sum()) for b in batches) == len(kept)
  for b in batches:
    assert tuple((k, v.shape) for k, v in sorted(b.items())) in allowed
    assert {k: v.dtype for k, v in b.items()} == {
        "audio": np.float32, "audio_len": np.int32, "phonemes": np.int32,
        "phoneme_len": np.int32, "durations": np.int32, "speaker_id": np.int32}
    tb = b["audio"].shape[1]
    smaller = [t for t in cfg.bucket_samples if t < tb]
    for i in range(BATCH):
      t, p = b["audio_len"][i], b["phoneme_len"][i]
      if t == 0:
        continue
      assert (not smaller or t > smaller[-1]) and t <= tb  # Smallest fitting bucket.
      assert b["durations"][i, :p].sum() * 200 == t
      assert not b["audio"][i, t:].any() and not b["phonemes"][i, p:].any()
  # The same rows as the corpus (nothing invented, nothing lost).
  keys = _utterance_keys(corpus_dir, "train")
  for b in batches:
    for i in range(BATCH):
      if b["audio_len"][i] == 0:
        continue
      ex = keys[_row_keys([{k: v[i:i + 1] for k, v in b.items()}])[0]]
      np.testing.assert_array_equal(b["phonemes"][i, :b["phoneme_len"][i]], ex["phonemes"])
      assert b["speaker_id"][i] == ex["speaker_id"]


def test_speaker_balanced_sampling(unbalanced_corpus):
  src = source.CorpusSource(unbalanced_corpus, "train")
  natural = collections.Counter(src.record_speaker_ids().tolist())
  assert max(natural.values()) >= 10 * min(natural.values())
  cfg = _cfg(unbalanced_corpus, speaker_balanced=True, segment_samples=1600)
  it = pipeline.make_iterator(cfg, "train", global_batch_size=8, seed=1, train=True,
                              process_index=0, process_count=1)
  batches = _take(it, 3 * len(src) // 8)
  it.close()
  counts = collections.Counter(np.concatenate([b["speaker_id"] for b in batches]).tolist())
  assert set(counts) == set(natural)
  expected = sum(counts.values()) / len(natural)
  assert max(abs(c - expected) for c in counts.values()) <= 3, counts
  # Each epoch draws the rare speakers' utterances repeatedly and the frequent one's without
  # repeats inside a cycle; deterministic from the seed.
  it = pipeline.make_iterator(cfg, "train", global_batch_size=8, seed=1, train=True,
                              process_index=0, process_count=1)
  _assert_batches_equal(batches[:4], _take(it, 4))
  it.close()
  ds = pipeline.SpeakerBalancedMapDataset(grain.MapDataset.range(len(src)),
                                          src.record_speaker_ids(), seed=0)
  frequent = max(natural, key=natural.get)
  drawn = [ds[i] for i in range(len(ds)) if src.record_speaker_ids()[ds[i]] == frequent]
  assert len(drawn) == len(set(drawn))


def test_epoch_shuffle_matches_numpy_reference(monkeypatch):
  """The global shuffle: epoch e of N elements is default_rng(_mix(seed, e)).permutation(N),
  any element reachable in any order (read threads), disjoint host slices, exact resume."""
  import pickle  # pylint: disable=g-import-not-at-top
  n, seed = 37, 11
  ds = pipeline.EpochShuffleMapDataset(grain.MapDataset.range(n), seed=seed).repeat(None)
  backwards = {i: ds[i] for i in reversed(range(4 * n))}  # Cache filled out of order.
  order = [ds[i] for i in range(4 * n)]
  assert order == [backwards[i] for i in range(4 * n)]
  epochs = [order[e * n:(e + 1) * n] for e in range(4)]
  for e, epoch in enumerate(epochs):
    reference = np.random.default_rng(pipeline._mix(seed, e)).permutation(n)
    assert epoch == reference.tolist()  # Hence a permutation of range(n).
  assert len({tuple(e) for e in epochs}) == 4
  other = pipeline.EpochShuffleMapDataset(grain.MapDataset.range(n), seed=seed + 1)
  assert [other[i] for i in range(n)] != epochs[0]
  # Workers get the dataset pickled: same order, no cached permutations shipped.
  clone = pickle.loads(pickle.dumps(ds))
  assert [clone[i] for i in range(2 * n)] == order[:2 * n]
  # Host slices of the stream: disjoint, together the epoch.
  shards = [[ds[i] for i in range(h, n, 3)] for h in range(3)]
  assert sorted(sum(shards, [])) == list(range(n))
  # Iterator state: a restored iterator continues exactly.
  it = iter(ds.to_iter_dataset())
  _take(it, n - 5)
  state = it.get_state()
  expected = _take(it, 12)  # Crosses into epoch 1.
  fresh = iter(ds.to_iter_dataset())
  fresh.set_state(state)
  assert _take(fresh, 12) == expected == order[n - 5:n + 7]
  # Above max_cached_records: grain's index_shuffle (no memory), still a permutation / epoch.
  monkeypatch.setattr(pipeline.EpochShuffleMapDataset, "max_cached_records", 8)
  big = pipeline.EpochShuffleMapDataset(grain.MapDataset.range(n), seed=seed)
  grain_order = grain.MapDataset.range(n).shuffle(seed=seed)
  assert [big[i] for i in range(2 * n)] == [grain_order[i] for i in range(2 * n)]
  assert sorted(big[i] for i in range(n)) == list(range(n))


def test_crop_window_helpers():
  """Crop starts: deterministic, on the step grid, every choice reachable; frame windows of
  derived labels equal the full labels sliced."""
  load = pipeline._LoadExample.__new__(pipeline._LoadExample)
  load.segment_samples, load.crop_step, load.seed = 1000, 200, 5
  starts = [load.crop_start(i, 1000 + 3 * 200 + 50) for i in range(400)]
  assert starts == [load.crop_start(i, 1650) for i in range(400)]
  assert set(starts) == {0, 200, 400, 600}
  assert load.crop_start(3, 1000) == load.crop_start(3, 10) == 0
  rng = np.random.default_rng(0)
  durations = rng.integers(0, 4, 40).astype(np.int32)  # Zero durations included.
  ex = {"phonemes": rng.integers(1, 50, 40).astype(np.int32), "durations": durations}
  total = int(durations.sum())
  for name in ("phone_labels", "phone_index"):
    field = pipeline._Field(name, 200, (), "int32", derived=True)
    full = pipeline._full_value(field, ex)
    assert len(full) == total
    for first, stop in [(0, 5), (7, 30), (total - 3, total + 10), (total + 2, total + 9)]:
      window = pipeline._frame_window(field, ex, first, stop)
      np.testing.assert_array_equal(window, full[first:stop])
      assert window.dtype == np.int32


def _msgpack_reference(data):
  import msgpack  # pylint: disable=g-import-not-at-top
  return msgpack.unpackb(data, object_hook=records._unpack, raw=False)


def _assert_same_value(a, b):
  assert type(a) is type(b), (a, b)
  if isinstance(a, np.ndarray):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
  elif isinstance(a, dict):
    assert list(a) == list(b)
    for k in a:
      _assert_same_value(a[k], b[k])
  elif isinstance(a, list):
    assert len(a) == len(b)
    for x, y in zip(a, b):
      _assert_same_value(x, y)
  else:
    assert a == b


def test_zero_copy_record_decoding_matches_msgpack(corpus):
  """`decode_example`'s zero-copy path gives msgpack's result (arrays as read-only views of the
  record); what it does not read falls back to msgpack, errors included."""
  import msgpack  # pylint: disable=g-import-not-at-top
  src = source.CorpusSource(corpus[0], "train")
  for i in range(len(src)):
    data = src[i]
    fast = records._decode_zero_copy(data)  # No fallback for the records we write.
    _assert_same_value(fast, _msgpack_reference(data))
    assert not fast["audio"].flags.writeable and np.shares_memory(
        fast["audio"], np.frombuffer(data, np.uint8))
  rng = np.random.default_rng(1)
  example = {
      "id": "s-1", "text": "x" * 40 + "\u00e9" * 200 + "y" * 70000, "sample_rate": 16000,
      "speaker_id": 3, "speaker": "s", "audio": rng.integers(-2**15, 2**15, 70001, np.int16),
      "latents": rng.standard_normal((3, 5), np.float32), "codes": np.zeros((0, 8), np.int16),
      "timbre": np.arange(4, dtype=">f8"), "voiced": np.array([True, False]),
      "scalar": np.array(7, np.int64), "wide": np.zeros((2, 300, 70000 // 2 // 300), np.uint8),
      "ints": [0, 127, 128, 255, 256, 65535, 65536, 2**32, 2**63, -1, -32, -33, -129,
               -2**15 - 1, -2**31 - 1, -2**63],
      "floats": [1.5, np.float32(0.1)], "none": None, "flags": [True, False],
      "raw": b"\x00\x01", "nested": {"a": [{"b": np.arange(3)}], "c": {}},
      "many": {f"k{j}": j for j in range(20)}, "long_list": list(range(20)),
      "not_an_array": {"__nd__": False, "data": b"zz"},
  }
  data = records.encode_example(example)
  _assert_same_value(records._decode_zero_copy(data), _msgpack_reference(data))
  ext = msgpack.packb({"id": msgpack.ExtType(5, b"e")})
  reordered = msgpack.packb({"x": {"data": b"\0" * 4, "dtype": "<i4", "shape": [1],
                                   "__nd__": True}}, use_bin_type=True)
  for odd in (ext, reordered):  # Outside the subset: msgpack decides.
    with pytest.raises(Exception):
      records._decode_zero_copy(odd)
  single = msgpack.packb([0.1, -2.5], use_single_float=True)
  _assert_same_value(records._decode_zero_copy(single), _msgpack_reference(single))
  bad = [data + b"\x00", data[:-3], msgpack.packb({1: 2}), b"\xc1",
         records.encode_example({"id": "a"}),
         msgpack.packb({"a": {"__nd__": True, "dtype": "<i4", "shape": [1], "data": b"\0" * 3}},
                       use_bin_type=True)]
  for blob in bad:
    with pytest.raises(records.RecordError):
      records.decode_example(blob, source="here")


def test_tune_malloc_is_idempotent():
  first = pipeline.tune_malloc()
  assert pipeline.tune_malloc() is first
  assert isinstance(first, bool)


# ---------------------------------------------------------------- checkpointing


@pytest.mark.parametrize("mode", ["crop", "bucket"])
def test_iterator_state_roundtrip(corpus, mode):
  cfg = _cfg(corpus[0], mode=mode)
  kw = dict(global_batch_size=BATCH, seed=3, train=True, process_index=0, process_count=1)
  it = pipeline.make_iterator(cfg, "train", **kw)
  _take(it, 5)
  state = json.loads(json.dumps(it.get_state()))  # What Orbax writes: JSON.
  expected = _take(it, 12)  # Crosses an epoch boundary (7 batches / epoch).
  it.close()
  fresh = pipeline.make_iterator(cfg, "train", **kw)
  fresh.set_state(state)
  _assert_batches_equal(expected, _take(fresh, 12))
  if mode == "bucket":
    assert pipeline.filtered_counts(fresh) == pipeline.filtered_counts(it)
    assert sum(len(b) for b in state["buffered"]) > 0  # Restored buffered elements.
  fresh.close()


def test_orbax_checkpoint_roundtrip(corpus, tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  cfg = _cfg(corpus[0], mode="bucket")
  kw = dict(global_batch_size=BATCH, seed=4, train=True, process_index=0, process_count=1)
  it = pipeline.make_iterator(cfg, "train", **kw)
  _take(it, 4)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  expected = _take(it, 8)
  it.close()
  fresh = pipeline.make_iterator(cfg, "train", **kw)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    assert mngr.latest_step() == 4
    restored = mngr.restore(4, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(fresh)))
  assert restored["data"] is fresh
  _assert_batches_equal(expected, _take(fresh, 8))
  fresh.close()


@pytest.mark.slow
def test_multiprocess_worker_checkpoint(corpus):
  cfg = _cfg(corpus[0], mode="bucket", worker_count=1)
  kw = dict(global_batch_size=BATCH, seed=2, train=True, process_index=0, process_count=1)
  it = pipeline.make_iterator(cfg, "train", **kw)
  first = _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))
  expected = _take(it, 6)
  counts = pipeline.filtered_counts(it)
  it.close()
  # Same batches as the in-process pipeline (one worker does not reorder).
  ref = pipeline.make_iterator(_cfg(corpus[0], mode="bucket"), "train", **kw)
  _assert_batches_equal(first + expected, _take(ref, 9))
  ref.close()
  fresh = pipeline.make_iterator(cfg, "train", **kw)
  fresh.set_state(state)
  _assert_batches_equal(expected, _take(fresh, 6))
  assert pipeline.filtered_counts(fresh) == counts
  fresh.close()


def test_latent_bucket_batches(tmp_path):
  """data.features='latents' (stage 2): latents padded per bucket in frames, lengths, and the
  phonemes of the same records; too-long utterances filtered by their frame count."""
  out = str(tmp_path / "lat")
  synthetic.write_synthetic_corpus(out, num_speakers=2, utterances_per_speaker=6,
                                   zero_shot_speakers=1, seed=3, latent_dim=5)
  cfg = _cfg(out, mode="bucket", features="latents", bucket_samples=(16000, 40000),
             drop_remainder=False)
  batches = _all(iter(pipeline.make_dataset(cfg, "train", global_batch_size=2, seed=0,
                                            train=False, process_index=0, process_count=1)))
  src = source.CorpusSource(out, "train")
  by_id = {src.example(i)["id"]: src.example(i) for i in range(len(src))}
  seen = 0
  for batch in batches:
    assert "audio" not in batch and batch["latents"].shape[0] == 2
    assert batch["latents"].shape[1] in (16000 // 200, 40000 // 200)
    assert batch["latents"].shape[2] == 5 and batch["latents"].dtype == np.float32
    for b in range(2):
      n = int(batch["latent_len"][b])
      if n == 0:
        continue
      match = [ex for ex in by_id.values() if len(ex["latents"]) == n
               and np.array_equal(ex["phonemes"], batch["phonemes"][b, :batch["phoneme_len"][b]])]
      assert match and np.array_equal(match[0]["latents"], batch["latents"][b, :n])
      assert not batch["latents"][b, n:].any()
      seen += 1
  longest = max(len(ex["latents"]) for ex in by_id.values())
  assert seen == sum(1 for ex in by_id.values() if len(ex["latents"]) * 200 <= 40000)
  assert longest * 200 <= 40000 or seen < len(by_id)
  with pytest.raises(ValueError, match="latents"):
    list(pipeline.make_dataset(_cfg(str(tmp_path / "lat"), mode="crop", features="latents"),
                               "train", global_batch_size=2, seed=0, train=False,
                               process_index=0, process_count=1))


def test_latent_iterator_state_roundtrip(tmp_path):
  """A GMM-LM run resumes its latent bucket iterator: buffered elements are replayed into the
  buckets of their frame counts (the records of a latent corpus carry no waveform bucket)."""
  out = str(tmp_path / "lat")
  synthetic.write_synthetic_corpus(out, num_speakers=3, utterances_per_speaker=8,
                                   zero_shot_speakers=1, seed=1, latent_dim=4)
  cfg = _cfg(out, mode="bucket", features="latents", bucket_samples=(16000, 24000, 40000))
  kw = dict(global_batch_size=2, seed=5, train=True, process_index=0, process_count=1)
  it = pipeline.make_iterator(cfg, "train", **kw)
  for _ in range(10):  # until some bucket holds an element: the replay path runs
    _take(it, 1)
    state = json.loads(json.dumps(it.get_state()))
    if sum(len(b) for b in state["buffered"]):
      break
  assert sum(len(b) for b in state["buffered"]) > 0
  expected = _take(it, 8)
  it.close()
  fresh = pipeline.make_iterator(cfg, "train", **kw)
  fresh.set_state(state)
  _assert_batches_equal(expected, _take(fresh, 8))


def test_eval_split_that_the_filters_empty_ends_with_a_warning(corpus, caplog):
  """Every valid utterance is longer than the only bucket: `CorpusData.eval_batches` ends
  after the batches there are (none here), naming the split, instead of raising."""
  class Data(CorpusData):
    cfg = ml_collections.ConfigDict({"data": _cfg(corpus[0], mode="bucket",
                                                  bucket_samples=(1600,))})

  with caplog.at_level(logging.WARNING):
    batches = list(Data().eval_batches("valid", 2, 0, 10))
  assert batches == []
  assert any("eval split 'valid' gave 0 of its 2 batches" in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]
