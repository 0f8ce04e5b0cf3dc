"""Frame-level features: records, manifest `features`, F0 (pyworld), phone labels, crops, derive."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from array_record.python import array_record_module

from jaxtts.audio import f0 as f0_lib
from jaxtts.data import derive, features, pipeline, records, source, synthetic

HOP = 200
SR = 16000


def _read_shard(path):
  reader = array_record_module.ArrayRecordReader(path)
  exs = [records.decode_example(b) for b in reader.read_all()]
  reader.close()
  return exs


def _write_shard(path, exs):
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  for ex in exs:
    writer.write(records.encode_example(ex))
  writer.close()


def _all(it):
  out = list(it)
  it.close()
  return out


def _cfg(corpus_dir, **overrides):
  cfg = pipeline.default_data_config()
  cfg.dir = corpus_dir
  cfg.read_threads = 0
  cfg.prefetch_buffer_size = 0
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


# ---------------------------------------------------------------- records


def test_record_roundtrip_with_codes_f0_voiced_timbre():
  rng = np.random.default_rng(0)
  ex = {"id": "s-00000", "text": "ab", "phonemes": np.array([3, 4], np.int32),
        "durations": np.array([2, 3], np.int32),
        "audio": rng.integers(-3000, 3000, 5 * HOP).astype(np.int16), "sample_rate": SR,
        "speaker_id": 1, "speaker": "s",
        "codes": rng.integers(0, 1024, (5, 6)).astype(np.int16),
        "timbre": rng.standard_normal(7).astype(np.float32),
        "f0": np.array([0, 110.5, 111.25, 0, 98.0], np.float32),
        "voiced": np.array([0, 1, 1, 0, 1], bool)}
  data = records.encode_example(ex)
  assert data == records.encode_example(dict(ex))  # deterministic bytes
  back = records.decode_example(data)
  assert back.keys() == ex.keys()
  for k, v in ex.items():
    if isinstance(v, np.ndarray):
      assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
      np.testing.assert_array_equal(back[k], v, err_msg=k)
    else:
      assert back[k] == v
  wide = {**ex, "codes": ex["codes"].astype(np.int32)}
  assert records.decode_example(records.encode_example(wide))["codes"].dtype == np.int32
  bad = {**ex, "f0": ex["f0"].astype(np.float64)}
  with pytest.raises(records.RecordError, match="'f0'.*float64"):
    records.decode_example(records.encode_example(bad), source="x.array_record")


# ---------------------------------------------------------------- phone labels


def test_phone_labels_match_a_loop_over_durations():
  rng = np.random.default_rng(1)
  for _ in range(20):
    p = int(rng.integers(1, 12))
    phonemes = rng.integers(1, 60, p).astype(np.int32)
    durations = rng.integers(1, 9, p).astype(np.int32)
    labels, index = [], []
    for k in range(p):
      for _ in range(durations[k]):
        labels.append(phonemes[k])
        index.append(k)
    got = features.phone_labels(phonemes, durations)
    assert got.dtype == np.int32 and got.tolist() == labels
    assert features.phone_index(durations).tolist() == index


# ---------------------------------------------------------------- F0


@pytest.mark.parametrize("freq", [95.0, 180.0, 310.0])
def test_f0_of_a_tone_and_silence(freq):
  """A sine in frames [40, 120) of 160, silence elsewhere: voiced frames carry the frequency,
  frames well inside the silence are unvoiced; F = T // hop."""
  t = np.arange(160 * HOP + 37) / SR  # not a whole number of frames: F = T // hop
  x = 0.3 * np.sin(2 * np.pi * freq * t)
  x[:40 * HOP] = 0
  x[120 * HOP:] = 0
  f0, voiced = f0_lib.compute_f0(np.round(x * 32767).astype(np.int16), SR, HOP)
  assert f0.shape == voiced.shape == (160,) and f0.dtype == np.float32 and voiced.dtype == bool
  np.testing.assert_array_equal(voiced, f0 > 0)
  assert voiced[44:116].all()
  np.testing.assert_allclose(f0[44:116], freq, rtol=0.01)
  assert not voiced[:36].any() and not voiced[124:].any()


def test_f0_of_a_harmonic_tone_follows_a_glide():
  """Harmonics of a fundamental gliding 120 -> 240 Hz: F0 at frame f is the fundamental at the
  frame's centre, sample f * hop + hop // 2."""
  n = 120 * HOP
  t = np.arange(n) / SR
  fund = 120.0 * 2 ** (t / t[-1])
  phase = 2 * np.pi * np.cumsum(fund) / SR
  x = sum(0.3 / k * np.sin(k * phase) for k in range(1, 6))
  f0, voiced = f0_lib.compute_f0(x.astype(np.float32), SR, HOP)
  centre = fund[np.arange(120) * HOP + HOP // 2]
  assert voiced[5:115].all()
  np.testing.assert_allclose(f0[5:115], centre[5:115], rtol=0.02)


def test_synthetic_corpus_f0_is_the_speaker_pitch(tmp_path):
  """The synthetic speech is harmonics of the speaker's f0 (+-2% vibrato)."""
  m = synthetic.write_synthetic_corpus(tmp_path, num_speakers=2, utterances_per_speaker=2,
                                       zero_shot_speakers=1, f0=True, max_seconds=1.0)
  src = source.CorpusSource(tmp_path, "train")
  for i in range(len(src)):
    ex = src.example(i)
    assert len(ex["f0"]) == len(ex["audio"]) // HOP
    assert ex["voiced"].mean() > 0.5
    spk = m["speakers"][ex["speaker_id"]]["f0"]
    np.testing.assert_allclose(np.median(ex["f0"][ex["voiced"]]), spk, rtol=0.03)


# ---------------------------------------------------------------- manifest features


def test_manifest_lists_features(tmp_path):
  m = synthetic.write_synthetic_corpus(tmp_path, num_speakers=2, utterances_per_speaker=2,
                                       f0=True, code_quantizers=3, codebook_size=512,
                                       timbre_dim=4, latent_dim=5, max_seconds=1.0)
  with open(tmp_path / "manifest.json") as f:
    assert json.load(f)["features"] == m["features"]
  f = m["features"]
  assert set(f) == {"audio", "phonemes", "durations", "f0", "voiced", "codes", "timbre",
                    "latents"}
  assert (f["codes"]["dtype"], f["codes"]["shape"], f["codes"]["inner_shape"]) == (
      "int16", "[F, 3]", [3])
  assert f["codes"]["codebook_sizes"] == [512] * 3
  assert (f["f0"]["dtype"], f["f0"]["unit"], f["f0"]["method"]) == (
      "float32", "Hz", "pyworld.dio+stonemask")
  assert f["voiced"]["dtype"] == "bool"
  assert (f["timbre"]["level"], f["timbre"]["inner_shape"]) == ("utterance", [4])
  for name in ("f0", "voiced", "codes", "latents"):
    assert (f[name]["level"], f[name]["hop_length"], f[name]["frame_rate"]) == (
        "frame", HOP, SR / HOP)
  src = source.CorpusSource(tmp_path, "train")
  ex = src.example(0)
  for name, spec in f.items():  # every listed feature is in the records, as described
    assert np.asarray(ex[name]).dtype == np.dtype(spec["dtype"]), name
  features.check_record(ex, f, "here")
  # A manifest without the entry (written before it existed) implies the base fields.
  old = {k: v for k, v in m.items() if k != "features"}
  assert set(features.manifest_features(old)) == {"audio", "phonemes", "durations", "latents"}
  old["codes"] = {"num_quantizers": 3, "codebook_sizes": [512] * 3, "hop_length": HOP}
  implied = features.manifest_features(old)["codes"]  # from a top-level "codes" entry
  assert implied == {k: v for k, v in f["codes"].items() if k != "codec_workdir"}


def test_missing_feature_is_an_error_naming_it(tmp_path):
  synthetic.write_synthetic_corpus(tmp_path, num_speakers=2, utterances_per_speaker=2,
                                   max_seconds=1.0)
  path = os.path.join(str(tmp_path), "manifest.json")
  for mode in ("crop", "bucket"):
    cfg = _cfg(str(tmp_path), mode=mode, extra_features=("phone_labels", "f0"))
    with pytest.raises(source.CorpusError, match="'f0'") as err:
      pipeline.make_dataset(cfg, "train", global_batch_size=2, seed=0, train=False,
                            process_index=0, process_count=1)
    assert "'f0'" in str(err.value) and path in str(err.value)
  cfg = _cfg(str(tmp_path), mode="bucket", features="codes")
  with pytest.raises(source.CorpusError, match="data.features.*'codes'"):
    pipeline.make_dataset(cfg, "train", global_batch_size=2, seed=0, train=False,
                          process_index=0, process_count=1)
  # Derived labels need nothing beyond the base fields.
  cfg = _cfg(str(tmp_path), extra_features=("phone_labels", "phone_index"))
  assert _all(iter(pipeline.make_dataset(cfg, "train", global_batch_size=1, seed=0,
                                         train=False, process_index=0, process_count=1)))


def test_record_lacking_a_listed_feature_is_an_error(tmp_path):
  synthetic.write_synthetic_corpus(tmp_path, num_speakers=2, utterances_per_speaker=2,
                                   f0=True, max_seconds=1.0)
  shard = os.path.join(str(tmp_path), "valid-00000-of-00001.array_record")
  exs = _read_shard(shard)
  del exs[1]["f0"]
  _write_shard(shard, exs)
  cfg = _cfg(str(tmp_path), extra_features=("f0",))
  it = iter(pipeline.make_dataset(cfg, "valid", global_batch_size=1, seed=0, train=False,
                                  process_index=0, process_count=1))
  with pytest.raises(source.CorpusError, match=f"{exs[1]['id']}.*{shard}.*'f0'"):
    _all(it)


def test_bad_crop_length_for_frame_features(tmp_path):
  synthetic.write_synthetic_corpus(tmp_path, num_speakers=2, utterances_per_speaker=2,
                                   max_seconds=1.0)
  cfg = _cfg(str(tmp_path), segment_samples=8100, extra_features=("phone_labels",))
  with pytest.raises(ValueError, match="data.segment_samples 8100.*phone_labels"):
    pipeline.make_dataset(cfg, "train", global_batch_size=2, seed=0, train=False,
                          process_index=0, process_count=1)


# ---------------------------------------------------------------- crops and buckets


@pytest.fixture(scope="module")
def indexed_corpus(tmp_path_factory):
  """Records whose audio, sample by sample, says (utterance, frame): every sample of frame f
  of utterance u is ``u * 256 + f + 1``; f0 = 100 + f, voiced = f % 3 == 0, codes[f, q] =
  (u * 256 + f) * 2 + q, timbre = [u, -u]."""
  out = tmp_path_factory.mktemp("indexed")
  m = synthetic.write_synthetic_corpus(out, num_speakers=3, utterances_per_speaker=6,
                                       zero_shot_speakers=1, f0=True, code_quantizers=2,
                                       codebook_size=2**15, timbre_dim=2, seed=4,
                                       min_seconds=0.3, max_seconds=1.5, shard_size=8)
  by_id = {}
  u = 0
  for split, info in m["splits"].items():
    for name in info["shards"]:
      path = os.path.join(str(out), name)
      exs = _read_shard(path)
      for ex in exs:
        frames = len(ex["audio"]) // HOP
        assert frames < 256
        f = np.arange(frames)
        ex["audio"] = np.repeat(u * 256 + f + 1, HOP).astype(np.int16)
        ex["f0"] = (100.0 + f).astype(np.float32)
        ex["voiced"] = f % 3 == 0
        ex["codes"] = ((u * 256 + f)[:, None] * 2 + np.arange(2)).astype(np.int16)
        ex["timbre"] = np.array([u, -u], np.float32)
        by_id[u] = ex
        u += 1
      _write_shard(path, exs)
  return str(out), by_id


EXTRAS = ("phone_labels", "phone_index", "f0", "voiced", "codes", "timbre")


def _expected(ex, name):
  if name == "phone_labels":
    return features.phone_labels(ex["phonemes"], ex["durations"])
  if name == "phone_index":
    return features.phone_index(ex["durations"])
  return ex[name]


def test_crop_mode_aligns_frame_features(indexed_corpus):
  corpus_dir, by_id = indexed_corpus
  seg = 40 * HOP  # some utterances are shorter (padded), most are cropped
  cfg = _cfg(corpus_dir, segment_samples=seg, extra_features=EXTRAS, num_epochs=3)
  batches = _all(iter(pipeline.make_dataset(cfg, "train", global_batch_size=4, seed=11,
                                            train=True, process_index=0, process_count=1)))
  src = source.CorpusSource(corpus_dir, "train")
  want = pipeline.batch_shapes(cfg, 4, src)[0]
  starts, padded = set(), 0
  for b in batches:
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == want
    for r in range(4):
      n = int(b["audio_len"][r])
      assert n % HOP == 0 and n > 0
      value = np.round(b["audio"][r, :n] * 32768).astype(np.int64).reshape(-1, HOP)
      assert (value == value[:, :1]).all()  # the crop starts on a frame boundary
      u, f0 = divmod(int(value[0, 0]) - 1, 256)
      frames = f0 + np.arange(n // HOP)
      np.testing.assert_array_equal(value[:, 0], u * 256 + frames + 1)  # contiguous frames
      ex = by_id[u]
      starts.add(f0)
      padded += n < seg
      for name in EXTRAS:
        got = b[name][r]
        if name == "timbre":
          np.testing.assert_array_equal(got, ex["timbre"])
          continue
        full = np.asarray(_expected(ex, name))
        np.testing.assert_array_equal(got[:n // HOP], full[frames], err_msg=name)
        assert not np.asarray(got[n // HOP:]).any(), name  # padding is zero
  assert padded > 0 and len(starts) > 3  # both paths ran; crops start at many frames


def test_bucket_mode_carries_frame_features(indexed_corpus):
  corpus_dir, by_id = indexed_corpus
  cfg = _cfg(corpus_dir, mode="bucket", bucket_samples=(12000, 24000), max_phonemes=128,
             extra_features=EXTRAS, drop_remainder=False)
  batches = _all(iter(pipeline.make_dataset(cfg, "train", global_batch_size=3, seed=0,
                                            train=False, process_index=0, process_count=1)))
  src = source.CorpusSource(corpus_dir, "train")
  allowed = [{k: (v.shape, v.dtype) for k, v in b.items()} for b in [
      {k: np.zeros(s, d) for k, (s, d) in shapes.items()}
      for shapes in pipeline.batch_shapes(cfg, 3, src)]]
  rows = 0
  for b in batches:
    assert {k: (v.shape, v.dtype) for k, v in b.items()} in allowed
    for r in range(3):
      n = int(b["audio_len"][r])
      if n == 0:
        continue
      rows += 1
      ex = by_id[int(round(b["audio"][r, 0] * 32768)) // 256]
      for name in EXTRAS:
        full = np.asarray(_expected(ex, name))
        if name == "timbre":
          np.testing.assert_array_equal(b[name][r], full)
        else:
          np.testing.assert_array_equal(b[name][r, :n // HOP], full, err_msg=name)
          assert not np.asarray(b[name][r, n // HOP:]).any(), name
  assert rows == len(src)
  # Codes as the primary field (a code model's batches): no audio, code_len frames.
  cfg = _cfg(corpus_dir, mode="bucket", bucket_samples=(12000, 24000), max_phonemes=128,
             features="codes", extra_features=("f0",), drop_remainder=False)
  batches = _all(iter(pipeline.make_dataset(cfg, "train", global_batch_size=3, seed=0,
                                            train=False, process_index=0, process_count=1)))
  for b in batches:
    assert "audio" not in b and b["codes"].dtype == np.int32
    for r in range(3):
      n = int(b["code_len"][r])
      if n:
        ex = by_id[int(b["codes"][r, 0, 0]) // 2 // 256]
        np.testing.assert_array_equal(b["codes"][r, :n], ex["codes"])
        np.testing.assert_array_equal(b["f0"][r, :n], ex["f0"])


# ---------------------------------------------------------------- derive step


def test_add_f0_in_place_is_resumable(tmp_path):
  plain, ref = str(tmp_path / "plain"), str(tmp_path / "ref")
  kw = dict(num_speakers=2, utterances_per_speaker=5, zero_shot_speakers=1, seed=2,
            max_seconds=1.0, shard_size=3)
  synthetic.write_synthetic_corpus(plain, **kw)
  ref_manifest = synthetic.write_synthetic_corpus(ref, f0=True, **kw)
  first = derive.add_f0(plain)
  assert first["manifest_written"] and first["shards_skipped"] == 0
  with open(os.path.join(plain, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["features"]["f0"] == ref_manifest["features"]["f0"]
  assert manifest["features"]["voiced"] == ref_manifest["features"]["voiced"]
  assert not [n for n in os.listdir(plain) if ".tmp" in n]
  for split in manifest["splits"]:
    a, b = source.CorpusSource(plain, split), source.CorpusSource(ref, split)
    for i in range(len(a)):
      x, y = a.example(i), b.example(i)
      assert x["id"] == y["id"]
      for k in ("audio", "phonemes", "durations", "f0", "voiced"):
        assert x[k].dtype == y[k].dtype
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)
  # Rerun: nothing to do. Undo one shard (as if interrupted before it): only it is rewritten.
  again = derive.add_f0(plain)
  assert again["shards_written"] == 0 and again["shards_skipped"] == first["shards_written"]
  shard = os.path.join(plain, manifest["splits"]["train"]["shards"][1])
  before = open(shard, "rb").read()
  _write_shard(shard, [{k: v for k, v in ex.items() if k not in ("f0", "voiced")}
                       for ex in _read_shard(shard)])
  resumed = derive.add_f0(plain)
  assert resumed["shards_written"] == 1
  assert open(shard, "rb").read() == before


def test_derive_out_of_place_and_across_processes(tmp_path):
  """Two processes split the shards; the manifest appears once every shard is done."""
  src_dir, out = str(tmp_path / "in"), str(tmp_path / "out")
  synthetic.write_synthetic_corpus(src_dir, num_speakers=2, utterances_per_speaker=6,
                                   zero_shot_speakers=1, max_seconds=0.8, shard_size=2)
  source.write_speaker_index(src_dir)

  def add(ex):
    return {"codes": np.stack([ex["audio"][::HOP], -ex["audio"][::HOP]], 1).astype(np.int16),
            "timbre": np.full((3,), ex["speaker_id"], np.float32)}

  specs = {"codes": features.codes_spec(2, [2**15, 2**15], HOP, SR, codec_workdir="/w"),
           "timbre": features.utterance_spec("float32", (3,), codec_workdir="/w")}
  r0 = derive.derive_corpus(src_dir, out, add, specs, splits=["train", "valid"],
                            process_index=0, process_count=2)
  assert r0["shards_written"] > 0 and not r0["manifest_written"]
  assert not os.path.exists(os.path.join(out, "manifest.json"))
  r1 = derive.derive_corpus(src_dir, out, add, specs, splits=["train", "valid"],
                            process_index=1, process_count=2)
  assert r1["manifest_written"]
  with open(os.path.join(out, "manifest.json")) as f:
    m = json.load(f)
  assert set(m["splits"]) == {"train", "valid"}
  assert m["features"]["codes"]["codec_workdir"] == "/w"
  for split in ("train", "valid"):
    a, b = source.CorpusSource(src_dir, split), source.CorpusSource(out, split)
    for i in range(len(a)):
      x, y = a.example(i), b.example(i)
      np.testing.assert_array_equal(y["audio"], x["audio"])
      np.testing.assert_array_equal(y["codes"][:, 0], x["audio"][::HOP])
    assert os.path.exists(os.path.join(out, f"{split}.speaker_index.npy"))
  with pytest.raises(source.CorpusError, match=r"returned fields \['codes'\]"):
    derive.derive_corpus(src_dir, str(tmp_path / "bad"), lambda ex: {"codes": add(ex)["codes"]},
                         specs, splits=["valid"])
  with pytest.raises(ValueError, match="in place needs every split"):
    derive.derive_corpus(src_dir, None, add, specs, splits=["valid"])
