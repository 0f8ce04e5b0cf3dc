"""Corpora without phoneme durations (built without aligner output) or without transcripts
(LibriLight's VAD pieces): what the pipeline emits, what it refuses, and the cross-sentence
zero-shot prompts that need no durations."""

import numpy as np
import pytest

from jaxtts.data import features, pipeline
from jaxtts.data.source import CorpusSource
from jaxtts.data.synthetic import write_synthetic_corpus
from jaxtts.infer import prompts as prompts_lib
from jaxtts.train import config as config_lib

KW = dict(num_speakers=2, utterances_per_speaker=6, zero_shot_speakers=2, seed=3,
          min_seconds=0.5, max_seconds=2.0)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
  root = tmp_path_factory.mktemp("optional")
  out = {}
  for name, store in (("full", ("phonemes", "durations")), ("no_durations", ("phonemes",)),
                      ("no_text", ())):
    write_synthetic_corpus(root / name, store=store, **KW)
    out[name] = str(root / name)
  return out


def _data_cfg(corpus, **kw):
  cfg = config_lib.build_config("configs/gmm_vae.py:tiny", []).data
  cfg.unlock()
  cfg.dir = corpus
  for k, v in kw.items():
    cfg[k] = v
  return cfg


def _batches(cfg, n=3):
  it = pipeline.make_iterator(cfg, "train", global_batch_size=2, seed=0, train=True,
                              process_index=0, process_count=1)
  return [next(it) for _ in range(n)]


def test_records_and_manifest_omit_what_the_corpus_lacks(corpora):
  full, bare = CorpusSource(corpora["full"], "train"), CorpusSource(corpora["no_durations"],
                                                                   "train")
  assert features.has(full.manifest, "durations") and not features.has(bare.manifest,
                                                                       "durations")
  assert features.has(bare.manifest, "phonemes")
  a, b = full.example(0), bare.example(0)
  assert "durations" not in b and set(a) - set(b) == {"durations"}
  np.testing.assert_array_equal(a["audio"], b["audio"])
  np.testing.assert_array_equal(a["phonemes"], b["phonemes"])
  none = CorpusSource(corpora["no_text"], "train").example(0)
  assert "phonemes" not in none and "durations" not in none


def test_bucket_batches_without_durations_equal_the_full_ones_less_durations(corpora):
  kw = dict(mode="bucket", bucket_samples=(16000, 32000), max_phonemes=64)
  full = _batches(_data_cfg(corpora["full"], **kw))
  bare = _batches(_data_cfg(corpora["no_durations"], **kw))
  for a, b in zip(full, bare):
    assert set(a) - set(b) == {"durations"} and "durations" in a
    for k in b:
      np.testing.assert_array_equal(a[k], b[k])
  shapes = pipeline.batch_shapes(_data_cfg(corpora["no_durations"], **kw), 2,
                                 CorpusSource(corpora["no_durations"], "train"))
  assert all("durations" not in s and "phonemes" in s for s in shapes)
  assert set(bare[0]) == set(shapes[0])


def test_what_needs_durations_or_transcripts_is_refused_by_name(corpora):
  bucket = dict(mode="bucket", bucket_samples=(16000, 32000), max_phonemes=64)
  with pytest.raises(features.FeatureError, match=r"phone_labels.*durations"):
    _batches(_data_cfg(corpora["no_durations"], extra_features=("phone_labels",)), 1)
  with pytest.raises(features.FeatureError, match=r"no transcripts.*crop"):
    _batches(_data_cfg(corpora["no_text"], **bucket), 1)
  with pytest.raises(features.FeatureError, match="cross-sentence"):
    prompts_lib.build_prompts(corpora["no_durations"], "test_zero_shot", (1,))
  # A codec trains on the untranscribed corpus: crop mode reads audio only.
  crops = _batches(_data_cfg(corpora["no_text"]), 1)[0]
  assert crops["audio"].shape[0] == 2 and "phonemes" not in crops


def test_cross_sentence_prompts_are_whole_other_utterances_of_the_speaker(corpora):
  src = CorpusSource(corpora["no_durations"], "test_zero_shot")
  by_id = {src.example(i)["id"]: src.example(i) for i in range(len(src))}
  lengths = {k: len(v["audio"]) / src.sample_rate for k, v in by_id.items()}
  lo, hi = 0.9, 1.8
  items = prompts_lib.build_cross_sentence_prompts(
      corpora["no_durations"], "test_zero_shot", min_seconds=lo, max_seconds=hi,
      targets_per_speaker=2, seed=5)
  assert items == [] or items[0]["prompt_group"] == "utterance"
  per_speaker = {}
  for it in items:
    target, prompt = by_id[it["target_id"]], by_id[it["source_ids"][0]]
    assert lo <= lengths[it["target_id"]] <= hi
    assert prompt["id"] != target["id"] and prompt["speaker_id"] == target["speaker_id"]
    np.testing.assert_array_equal(it["prompt_audio"], prompt["audio"])
    np.testing.assert_array_equal(it["prompt_phonemes"], prompt["phonemes"])
    assert it["prompt_durations"] is None and it["text"] == target["text"]
    per_speaker[it["speaker_id"]] = per_speaker.get(it["speaker_id"], 0) + 1
  eligible = {}
  for k, v in by_id.items():
    if lo <= lengths[k] <= hi:
      eligible[v["speaker_id"]] = eligible.get(v["speaker_id"], 0) + 1
  assert per_speaker == {s: min(2, n) for s, n in eligible.items()} and per_speaker
  again = prompts_lib.build_cross_sentence_prompts(
      corpora["no_durations"], "test_zero_shot", min_seconds=lo, max_seconds=hi,
      targets_per_speaker=2, seed=5)
  assert [i["id"] for i in again] == [i["id"] for i in items]
  everyone = prompts_lib.build_cross_sentence_prompts(
      corpora["full"], "test_zero_shot", min_seconds=0, max_seconds=99,
      targets_per_speaker=None, seed=5)
  assert len(everyone) == len(src)
  full = CorpusSource(corpora["full"], "test_zero_shot")
  durs = {full.example(i)["id"]: full.example(i)["durations"] for i in range(len(full))}
  for it in everyone:
    np.testing.assert_array_equal(it["prompt_durations"], durs[it["source_ids"][0]])
