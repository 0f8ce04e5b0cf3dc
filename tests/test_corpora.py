"""Real-corpus builders (data_pipelines/libri_{layouts,plan,records}.py, real_corpus.py) on espeak
fixture trees in the LibriSpeech / LibriTTS(-R) / LibriLight + LibriHeavy layouts
(data_pipelines/fixtures.py)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import alignments, fixtures, libri_layouts, libri_plan, libri_records
from data_pipelines import real_corpus
from data_pipelines.espeak_corpus import main as corpus_main
from jaxtts.audio.io import resample
from jaxtts.data.source import CorpusSource
from jaxtts.text import normalize_text

LS_SPLITS = {"train": ["train-clean-100"], "test_zero_shot": ["test-clean"]}
COMMON = dict(seed=3, shard_size=4, valid_fraction=0.34, max_seconds=6.0, progress=False)


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
  return fixtures.build_all(str(tmp_path_factory.mktemp("fixtures")))


@pytest.fixture(scope="module")
def ls_built(fx, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("ls") / "corpus")
  summary = real_corpus.build("librispeech", fx["librispeech"], out, split_subsets=LS_SPLITS,
                              alignments=fx["alignments"], **COMMON)
  return out, summary


def _records(out: str) -> dict[str, list[dict]]:
  splits = _manifest(out)["splits"]
  return {s: [src.example(i) for i in range(len(src))]
          for s in libri_plan.SPLITS if splits[s]["num_examples"] for src in [CorpusSource(out, s)]}


def _files(out: str) -> dict[str, bytes]:
  names = sorted(n for n in os.listdir(out) if not n.endswith(".summary.json"))
  return {n: open(os.path.join(out, n), "rb").read() for n in names}


def _manifest(out: str) -> dict:
  with open(os.path.join(out, "manifest.json")) as f:
    return json.load(f)


def _trim(x: np.ndarray) -> np.ndarray:
  return x[:len(x) - len(x) % 200]


def test_librispeech_records_match_source(fx, ls_built):
  out, summary = ls_built
  m = _manifest(out)
  assert summary["manifest_written"] and summary["utterances_per_s_per_worker"] > 0
  assert [s["name"] for s in m["speakers"]] == ["19", "26", "103", "1034", "121", "237"]
  assert [s["split"] for s in m["speakers"]] == ["train"] * 4 + ["test_zero_shot"] * 2
  assert [s["gender"] for s in m["speakers"]] == ["male", "female"] * 3  # SPEAKERS.TXT
  assert sorted(m["features"]) == ["audio", "durations", "phonemes"]
  recs = _records(out)
  assert {r["speaker"] for r in recs["test_zero_shot"]} == {"121", "237"}
  assert len(recs["valid"]) == 4 and len(recs["train"]) == 8  # 1 of 3 per train speaker
  for split, rows in recs.items():
    subset = "test-clean" if split == "test_zero_shot" else "train-clean-100"
    for r in rows:
      spk, chapter, _ = r["id"].split("-")
      d = os.path.join(fx["librispeech"], subset, spk, chapter)
      src, sr = sf.read(os.path.join(d, r["id"] + ".flac"), dtype="int16")
      assert sr == 16000 and np.array_equal(r["audio"], _trim(src))
      line = [ln for ln in open(os.path.join(d, f"{spk}-{chapter}.trans.txt"))
              if ln.startswith(r["id"] + " ")][0]
      assert r["text"] == normalize_text(line.split(" ", 1)[1].strip().capitalize())
      assert m["speakers"][r["speaker_id"]]["name"] == r["speaker"] == spk
      assert r["durations"].sum() == len(r["audio"]) // 200 and r["durations"].min() >= 1
      assert len(r["durations"]) == len(r["phonemes"])
      assert r["source_sample_rate"] == 16000
  ids = np.load(os.path.join(out, "train.speaker_index.npy"))
  assert ids.tolist() == [r["speaker_id"] for r in recs["train"]]


def test_librispeech_bad_files_and_filtered(ls_built):
  out, _ = ls_built
  m = _manifest(out)
  assert m["filtered"] == {"too_long": 1}
  assert m["bad_files"] == 4 and m["bad_alignments"] == 1
  bad = {b["id"]: b["reason"] for b in map(json.loads, open(os.path.join(out, "bad_files.jsonl")))}
  assert bad["19-198-0003"].startswith("unreadable audio")
  assert bad["19-198-0004"].startswith("text:")
  assert bad["19-198-0006"] == "no transcript"
  assert bad["237-134-0002"].startswith("alignment:")


def test_determinism_hosts_and_resume(fx, ls_built, tmp_path):
  out, _ = ls_built
  want = _files(out)
  args = dict(split_subsets=LS_SPLITS, alignments=fx["alignments"], **COMMON)
  two = str(tmp_path / "two")
  s0 = real_corpus.build("librispeech", fx["librispeech"], two, shard=0, num_shards=2, **args)
  assert not s0["manifest_written"] and s0["planned"]
  s1 = real_corpus.build("librispeech", fx["librispeech"], two, shard=1, num_shards=2,
                         workers=2, **args)
  assert s1["manifest_written"] and s0["shards_written"] + s1["shards_written"] == 7
  assert not s1["planned"]  # read call 0's plan
  assert _files(two) == want  # same bytes (plan included) from 2 calls, one with 2 workers
  victim = "train-00001-of-00003.array_record"
  os.remove(os.path.join(two, victim))
  stale = os.path.join(two, victim + ".tmp-0-12345")
  open(stale, "wb").write(b"killed mid-write")
  again = real_corpus.build("librispeech", fx["librispeech"], two, **args)
  assert again["shards_written"] == 1 and again["shards_skipped"] == 6 and not again["planned"]
  assert _files(two) == want and not os.path.exists(stale)
  other = str(tmp_path / "seed")
  real_corpus.build("librispeech", fx["librispeech"], other, **dict(args, seed=4))
  assert _files(other)["train-00000-of-00003.array_record"] != want[
      "train-00000-of-00003.array_record"]
  with pytest.raises(ValueError, match=r"other arguments \(--seed\)"):
    real_corpus.build("librispeech", fx["librispeech"], other, **args)


def test_plan_once_then_shards_without_listing(fx, tmp_path, caplog, capsys):
  """--plan-only plans once; the shard builders read the plan, not the corpus (its cut
  manifests are gone by then), and write the files of a fresh build. A truncated plan is
  planned again (with a warning), a plan of other arguments refused naming the flag."""
  cuts = {}
  for split, key in (("train", "small"), ("test_zero_shot", "test_clean")):
    cuts[split] = [str(tmp_path / os.path.basename(fx["cuts"][key]))]
    shutil.copy(fx["cuts"][key], cuts[split][0])
  out = str(tmp_path / "c")
  args = dict(split_subsets={}, split_cuts=cuts, **COMMON)
  first = real_corpus.build("librilight", fx["librilight"], out, plan_only=True, **args)
  assert first["planned"] and os.listdir(out) == [real_corpus.PLAN]
  path = os.path.join(out, real_corpus.PLAN)
  plan = open(path, "rb").read()
  open(path, "wb").write(plan[:len(plan) // 2])  # cut short (a copy interrupted, a full disk)
  with caplog.at_level(logging.WARNING, logger="jaxtts.real_corpus"):
    again = real_corpus.build("librilight", fx["librilight"], out, plan_only=True, **args)
  assert again["planned"] and open(path, "rb").read() == plan
  assert [r.getMessage().count("not an intact plan") for r in caplog.records] == [1]
  flags = ["--seed", "3", "--shard-size", "2", "--valid-fraction", "0.34", "--max-seconds", "6"]
  rc = corpus_main(["librilight", "--root", fx["librilight"], "--out", out, "--cuts",
                    f"train={cuts['train'][0]}", "--cuts",
                    f"test_zero_shot={cuts['test_zero_shot'][0]}", *flags, "--plan-only"])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and "\n" not in err and "other arguments (--shard-size)" in err
  for files in cuts.values():
    os.remove(files[0])  # what listing reads is gone: the shards must come from the plan
  built = [real_corpus.build("librilight", fx["librilight"], out, shard=i, num_shards=2, **args)
           for i in (0, 1)]
  assert not any(b["planned"] for b in built) and built[1]["manifest_written"]
  fresh = str(tmp_path / "fresh")
  real_corpus.build("librilight", fx["librilight"], fresh, split_subsets={}, split_cuts={
      "train": [fx["cuts"]["small"]], "test_zero_shot": [fx["cuts"]["test_clean"]]}, **COMMON)
  same = lambda d: {n: b for n, b in _files(d).items() if n not in ("manifest.json",
                                                                     real_corpus.PLAN)}
  assert same(out) == same(fresh) and sum(n.endswith(".array_record") for n in same(out)) >= 3
  want = _manifest(fresh)
  want["build_args"]["cuts"] = cuts
  assert _manifest(out) == want


def test_textgrid_durations(tmp_path):
  path = str(tmp_path / "a.TextGrid")
  alignments.write_textgrid(path, [(0.0, 0.02, "sil"), (0.02, 0.05, "h"), (0.05, 0.1, "@"),
                                   (0.1, 0.2, "sp"), (0.2, 0.3, "<.>")], 0.3)
  # token starts 0 (leading silence to 'h'), 0.05 s -> frame 4, 0.2 s -> frame 16; 24 frames
  assert alignments.durations(path, ["h", "@", "<.>"], 24).tolist() == [4, 12, 8]
  with pytest.raises(libri_records.BadItem, match="alignment:"):
    alignments.durations(path, ["h", "@", "<,>"], 24)
  with pytest.raises(libri_records.BadItem, match="alignment:.*ends at"):
    alignments.durations(path, ["h", "@", "<.>"], 40)


@pytest.mark.parametrize("variant", ["libritts", "libritts_r"])
def test_libritts_resampled_without_durations(fx, tmp_path, variant):
  out = str(tmp_path / "c")
  rc = corpus_main(["libritts", "--root", fx[variant], "--out", out, "--split",
                    "train=train-clean-100", "--split", "test_zero_shot=test-clean",
                    "--max-seconds", "6", "--shard-size", "4", "--no-progress"])
  assert rc == 0
  m = _manifest(out)
  assert sorted(m["features"]) == ["audio", "phonemes"]
  assert m["build_args"]["variant"] == os.path.basename(fx[variant])
  assert m["filtered"] == {"too_long": 1} and m["bad_files"] == 3
  n = sum(m["splits"][s]["num_examples"] for s in libri_plan.SPLITS)
  assert n == 18 and m["source_sample_rates"] == {"24000": 18}
  for split, rows in _records(out).items():
    subset = "test-clean" if split == "test_zero_shot" else "train-clean-100"
    for r in rows:
      assert "durations" not in r
      spk, chapter = r["id"].split("_")[:2]
      base = os.path.join(fx[variant], subset, spk, chapter, r["id"])
      src, sr = sf.read(base + ".wav", dtype="int16")
      x = resample(src.astype(np.float32) / 32768.0, sr, 16000)
      want = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
      assert sr == 24000 and np.array_equal(r["audio"], _trim(want))
      assert r["text"] == normalize_text(open(base + ".normalized.txt").read().strip())


def test_librilight_cuts_to_the_sample(fx, tmp_path):
  out = str(tmp_path / "c")
  real_corpus.build("librilight", fx["librilight"], out,
                    split_subsets={}, split_cuts={"train": [fx["cuts"]["small"]],
                                                  "test_zero_shot": [fx["cuts"]["test_clean"]]},
                    f0=True, **COMMON)
  m = _manifest(out)
  assert sorted(m["features"]) == ["audio", "f0", "phonemes", "voiced"]
  assert m["filtered"] == {"too_long": 1} and m["bad_files"] == 2
  cuts = {}
  for f in fx["cuts"].values():
    cuts.update({c["id"]: c for c in map(json.loads, gzip.open(f, "rt"))})
  recs = _records(out)
  assert sum(map(len, recs.values())) == 18
  for rows in recs.values():
    for r in rows:
      c = cuts[r["id"]]
      rec = sf.read(os.path.join(fx["librilight"], c["recording"]["id"] + ".flac"),
                    dtype="int16")[0]
      a = int(round(c["start"] * 16000))
      assert np.array_equal(r["audio"], _trim(rec[a:a + int(round(c["duration"] * 16000))]))
      assert r["text"] == normalize_text(c["custom"]["texts"][0])
      assert r["speaker"] == c["supervisions"][0]["speaker"]
      assert len(r["f0"]) == len(r["audio"]) // 200
  with pytest.raises(FileNotFoundError, match="not found under it"):
    libri_layouts.list_items("librilight", str(tmp_path), [], cuts=[fx["cuts"]["small"]])


def test_librilight_vad_pieces_keep_silences(fx, tmp_path):
  out = str(tmp_path / "c")
  real_corpus.build("librilight", fx["librilight"], out,
                    split_subsets={"train": ["small"], "test_zero_shot": ["medium"]}, **COMMON)
  m = _manifest(out)
  assert sorted(m["features"]) == ["audio"] and m["build_args"]["text"] is False
  assert m["bad_files"] == 1 and m["filtered"] == {"too_long": 1}
  joined = 0
  for rows in _records(out).values():
    for r in rows:
      assert "phonemes" not in r and r["text"] == ""
      subset, spk, book, piece = r["id"].split("/")
      stem, k = piece.rsplit("_", 1)
      path = os.path.join(fx["librilight"], subset, spk, book, stem)
      vad = json.load(open(path + ".json"))["voice_activity"]
      a, b = libri_layouts.vad_pieces(vad, 6.0)[int(k)]
      rec = sf.read(path + ".flac", dtype="int16")[0]
      seg = rec[int(round(a * 16000)):int(round(a * 16000)) + int(round((b - a) * 16000))]
      assert np.array_equal(r["audio"], _trim(seg))
      if sum(a <= s[0] and s[1] <= b for s in vad) > 1:  # a silence inside, kept
        joined += 1
        assert np.any(np.convolve(r["audio"] == 0, np.ones(800), "valid") == 800)
  assert joined >= 4


def test_user_errors_are_one_line(fx, tmp_path, capsys):
  rc = corpus_main(["librispeech", "--root", fx["librispeech"], "--out", str(tmp_path / "x"),
                    "--split", "train=train-other-500", "--no-progress"])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and "\n" not in err and "train-other-500" in err
  with pytest.raises(ValueError, match="valid is carved"):
    libri_plan.plan_corpus("librispeech", fx["librispeech"], split_subsets={"valid": ["test-clean"],
                      "train": ["train-clean-100"]}, seed=0, shard_size=4, valid_fraction=0.1)
  with pytest.raises(ValueError, match="also in train"):
    libri_plan.plan_corpus("librispeech", fx["librispeech"], split_subsets={
        "train": ["train-clean-100"], "test_zero_shot": ["train-clean-100"]}, seed=0,
        shard_size=4, valid_fraction=0.1)
