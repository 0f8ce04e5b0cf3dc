"""The embedded espeak corpus: determinism, record contents, manifest, speakers, coverage."""

import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from data_pipelines import espeak_corpus as C
from data_pipelines import espeak_plan, espeak_synth
from jaxtts.data import records
from jaxtts.text import PhonemeTable, default_phoneme_table, normalize_text, phonemize
from jaxtts.text import espeak, phonemize_clauses

TINY = dict(speakers=6, zero_shot_speakers=2, utterances_per_speaker=6, valid_fraction=0.2,
            shard_size=8, progress=False)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  out = {}
  for name, seed, workers in (("a", 0, 1), ("b", 0, 2), ("c", 1, 1)):
    out[name] = str(root / name)
    C.build(out[name], seed=seed, workers=workers, **TINY)
  return out


def _hashes(d):
  return {f: hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
          for f in sorted(os.listdir(d))}


def _manifest(d):
  with open(os.path.join(d, "manifest.json")) as f:
    return json.load(f)


def _records(d, split):
  m = _manifest(d)
  for shard in m["splits"][split]["shards"]:
    reader = ArrayRecordReader(os.path.join(d, shard))
    for i in range(reader.num_records()):
      yield records.decode_example(reader.read([i])[0], source=f"{shard}[{i}]")


def test_same_seed_is_byte_identical_for_any_worker_count(corpora):
  a, b = _hashes(corpora["a"]), _hashes(corpora["b"])
  assert a == b
  assert len(a) > 4  # manifest + several shards


def test_different_seed_differs(corpora):
  a, c = _hashes(corpora["a"]), _hashes(corpora["c"])
  assert a["manifest.json"] != c["manifest.json"]
  # Audio differs; the speaker index (which speaker each record is) may coincide.
  shared = {f for f in set(a) & set(c) if f.endswith(".array_record")}
  assert shared and all(a[f] != c[f] for f in shared)


def test_manifest_contract(corpora):
  d = corpora["a"]
  text = open(os.path.join(d, "manifest.json")).read()
  m = json.loads(text)
  assert text == json.dumps(m, sort_keys=True, indent=1) + "\n"
  assert {"format_version", "builder", "seed", "sample_rate", "hop_length", "phoneme_table",
          "speakers", "splits", "build_args"} <= set(m)
  assert (m["format_version"], m["builder"], m["seed"]) == (1, "espeak", 0)
  assert (m["sample_rate"], m["hop_length"]) == (16000, 200)
  assert PhonemeTable.from_json(m["phoneme_table"]) == default_phoneme_table()
  assert [s["id"] for s in m["speakers"]] == list(range(len(m["speakers"])))
  assert set(m["splits"]) == {"train", "valid", "test_zero_shot"}
  files = set(os.listdir(d))
  for split, info in m["splits"].items():
    n = len(info["shards"])
    assert info["shards"] == [f"{split}-{i:05d}-of-{n:05d}.array_record" for i in range(n)]
    assert set(info["shards"]) <= files
    counted = sum(ArrayRecordReader(os.path.join(d, s)).num_records() for s in info["shards"])
    assert counted == info["num_examples"] > 0
    assert info["num_skipped"] == 0
    samples = sum(len(ex["audio"]) for ex in _records(d, split))
    assert info["hours"] == round(samples / 16000 / 3600, 6)
  assert m["splits"]["train"]["num_examples"] == 6 * 5   # valid_fraction 0.2 of 6 -> 1 valid
  assert m["splits"]["valid"]["num_examples"] == 6
  assert m["splits"]["test_zero_shot"]["num_examples"] == 2 * 6
  assert files == ({"manifest.json"} | {s for i in m["splits"].values() for s in i["shards"]}
                   | {f"{split}.speaker_index.npy" for split in m["splits"]})


def test_records_are_consistent_with_the_frontend(corpora):
  d = corpora["a"]
  m = _manifest(d)
  table = PhonemeTable.from_json(m["phoneme_table"])
  speakers = {s["id"]: s for s in m["speakers"]}
  ids = set()
  for split in ("train", "valid", "test_zero_shot"):
    for ex in _records(d, split):
      spk = speakers[ex["speaker_id"]]
      assert ex["speaker"] == spk["name"] and ex["id"].startswith(spk["name"] + "-")
      assert spk["split"] == ("test_zero_shot" if split == "test_zero_shot" else "train")
      assert ex["id"] not in ids
      ids.add(ex["id"])
      assert ex["sample_rate"] == 16000
      audio, phon, dur = ex["audio"], ex["phonemes"], ex["durations"]
      assert audio.dtype == np.int16 and audio.ndim == 1 and len(audio) % 200 == 0
      assert phon.dtype == np.int32 and dur.dtype == np.int32
      assert len(phon) == len(dur) > 0
      assert int(dur.sum()) == len(audio) // 200
      assert dur.min() >= 1
      assert normalize_text(ex["text"]) == ex["text"]
      # The stored ids are exactly what inference's G2P gives for the stored text.
      assert table.decode(phon) == phonemize(ex["text"], language=spk["language"])
      assert 0.5 < len(audio) / 16000 < 20
      assert np.abs(audio.astype(np.float32)).max() < 32767


def test_pause_tokens_are_silent(corpora):
  """Durations follow the audio: punctuation tokens (pauses) are far quieter than phonemes."""
  m = _manifest(corpora["a"])
  table = PhonemeTable.from_json(m["phoneme_table"])
  punct, phones = [], []
  for ex in _records(corpora["a"], "train"):
    frames = ex["audio"].astype(np.float64).reshape(-1, 200) / 32768.0
    energy = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)
    bounds = np.concatenate([[0], np.cumsum(ex["durations"])])
    for k, sym in enumerate(table.decode(ex["phonemes"])):
      e = float(np.mean(energy[bounds[k]:bounds[k + 1]]))
      (punct if sym.startswith("<") else phones).append(e)
  assert np.median(punct) < np.median(phones) - 30


def test_zero_shot_speakers_are_held_out(corpora):
  m = _manifest(corpora["a"])
  splits = m["splits"]
  train, zs = set(splits["train"]["speaker_ids"]), set(splits["test_zero_shot"]["speaker_ids"])
  assert train and zs and not train & zs
  assert set(splits["valid"]["speaker_ids"]) == train
  spk = {s["id"]: s for s in m["speakers"]}
  assert not {spk[i]["family"] for i in train} & {spk[i]["family"] for i in zs}
  assert not {spk[i]["variant"] for i in train} & {spk[i]["variant"] for i in zs}
  for split, ids in (("train", train), ("valid", train), ("test_zero_shot", zs)):
    assert {ex["speaker_id"] for ex in _records(corpora["a"], split)} == ids


def test_default_speaker_plan():
  spks = espeak_plan.plan_speakers(12, 3, seed=0)
  assert spks == espeak_plan.plan_speakers(12, 3, seed=0)
  assert spks != espeak_plan.plan_speakers(12, 3, seed=1)
  train = [s for s in spks if s.split == "train"]
  assert len(train) == 12 and len({s.name for s in spks}) == 15
  assert len({(s.variant, s.language, s.pitch, s.pitch_range, s.rate) for s in spks}) == 15
  assert {s.gender for s in train} == {"male", "female"}
  assert {s.language for s in train} == {"en-us", "en"}
  variants = set(espeak.list_variants())
  assert all(s.variant in variants for s in spks)
  # Many training speakers reuse variants with new settings, never a held-out family.
  many = espeak_plan.plan_speakers(60, 3, seed=0)
  held = {s.family for s in many if s.split == "test_zero_shot"}
  assert not held & {s.family for s in many if s.split == "train"}
  assert len({(s.variant, s.language, s.pitch, s.pitch_range, s.rate) for s in many}) == 63


def test_grammar_covers_the_phoneme_table():
  """The default build's training sentences cover every symbol of the table, and nothing else."""
  report = espeak_plan.coverage_report()  # defaults: 12 + 3 speakers, 40 utterances each, seed 0
  assert report["missing"] == [] and report["extra"] == []
  assert set(report["covered"]) == set(default_phoneme_table().symbols[1:])


def test_frame_boundaries():
  b = espeak_synth.frame_boundaries([0, 10, 11, 5000, 5001, 9000], 22050, num_frames=60,
                                    sr_in=22050)
  assert b[0] == 0 and b[-1] == 60 and np.all(np.diff(b) >= 1)
  # Rounded positions are kept where they do not collide: 5000 samples -> 18.14 frames.
  assert b[3] == 18
  with pytest.raises(espeak_synth.AlignmentError):
    espeak_synth.frame_boundaries([0, 1, 2], 100, num_frames=2, sr_in=22050)


def test_mismatched_events_raise():
  text = normalize_text("The cat sat on the mat, and then it slept.")
  table = default_phoneme_table()
  clauses = phonemize_clauses(text, table=table, normalize=False)
  syn = espeak.synthesize(text, voice="en-us+m1")
  starts = espeak_synth.token_starts(clauses, syn, table, text)
  assert len(starts) == sum(len(c.symbols) for c in clauses) and starts[0] == 0
  dropped = [e for e in syn.events if not e.symbol.startswith("_")][3]
  broken = dataclasses.replace(syn, events=tuple(e for e in syn.events if e is not dropped))
  with pytest.raises(espeak_synth.AlignmentError):
    espeak_synth.token_starts(clauses, broken, table, text)


def test_cli(tmp_path, capsys):
  out = tmp_path / "cli"
  assert C.main(["--out", str(out), "--speakers", "2", "--zero-shot-speakers", "1",
                 "--utterances-per-speaker", "2", "--no-progress"]) == 0
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert summary["examples"] == {"train": 2, "valid": 2, "test_zero_shot": 2}
  assert set(summary) >= {"examples", "hours", "seconds", "skipped"}
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # temp dir renamed away
  with pytest.raises(FileExistsError):
    C.main(["--out", str(out), "--speakers", "2", "--zero-shot-speakers", "1",
            "--utterances-per-speaker", "2", "--no-progress"])
  before = _hashes(str(out))
  C.main(["--out", str(out), "--speakers", "2", "--zero-shot-speakers", "1",
          "--utterances-per-speaker", "2", "--no-progress", "--overwrite"])
  assert _hashes(str(out)) == before


def test_speaker_index_matches_records(corpora):
  """`<split>.speaker_index.npy` (read by class-balanced sampling) lists each record's speaker."""
  for split in ("train", "valid", "test_zero_shot"):
    index = np.load(os.path.join(corpora["a"], f"{split}.speaker_index.npy"))
    np.testing.assert_array_equal(index, [r["speaker_id"] for r in _records(corpora["a"], split)])


def test_corpus_without_zero_shot_speakers(tmp_path):
  """`--zero-shot-speakers 0`: an empty test_zero_shot split that says so when opened."""
  from jaxtts.data.source import CorpusError, CorpusSource
  out = str(tmp_path / "c")
  C.build(out, seed=0, workers=1, **{**TINY, "zero_shot_speakers": 0})
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  assert manifest["splits"]["test_zero_shot"]["num_examples"] == 0
  assert len(CorpusSource(out, "train")) == manifest["splits"]["train"]["num_examples"] > 0
  assert not os.path.exists(os.path.join(out, "test_zero_shot.speaker_index.npy"))
  with pytest.raises(CorpusError, match="test_zero_shot.*no examples"):
    CorpusSource(out, "test_zero_shot")


def test_f0_option_and_derive_step(tmp_path, capsys):
  """`--f0` stores WORLD F0 per 200-sample frame; `jaxtts-corpus derive f0` adds the same
  values to a corpus built without it."""
  from jaxtts.audio import f0 as f0_lib
  small = dict(speakers=2, zero_shot_speakers=1, utterances_per_speaker=2, valid_fraction=0.5,
               shard_size=8, progress=False, seed=0)
  with_f0, plain = str(tmp_path / "f0"), str(tmp_path / "plain")
  C.build(with_f0, f0=True, **small)
  C.build(plain, **small)
  m = _manifest(with_f0)
  assert {"f0", "voiced"} <= set(m["features"]) and m["build_args"]["f0"] is True
  assert (m["features"]["f0"]["hop_length"], m["features"]["f0"]["unit"]) == (200, "Hz")
  assert set(_manifest(plain)["features"]) == {"audio", "phonemes", "durations"}
  voiced = []
  for ex in _records(with_f0, "train"):
    f0, v = f0_lib.compute_f0(ex["audio"], 16000, 200)
    assert ex["f0"].shape == (len(ex["audio"]) // 200,) and ex["voiced"].dtype == bool
    np.testing.assert_array_equal(ex["f0"], f0)
    np.testing.assert_array_equal(ex["voiced"], v)
    assert 60 < np.median(ex["f0"][ex["voiced"]]) < 500  # espeak voices' pitch
    voiced.append(ex["voiced"].mean())
  assert 0.2 < np.mean(voiced) < 0.95  # speech has voiced and unvoiced frames
  assert C.main(["derive", "f0", "--data-dir", plain]) == 0
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert summary["manifest_written"] and summary["shards_written"] == 3
  assert _manifest(plain)["features"] == m["features"]
  for split in ("train", "valid", "test_zero_shot"):
    for a, b in zip(_records(plain, split), _records(with_f0, split)):
      assert a.keys() == b.keys()
      for k in ("audio", "f0", "voiced"):
        np.testing.assert_array_equal(a[k], b[k])
