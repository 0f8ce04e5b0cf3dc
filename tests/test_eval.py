"""`jaxtts-eval` end to end on the tiny chain of conftest (real Whisper, Resemblyzer, DNSMOS):
the numbers of a 3-step model are bad; these tests check the reports' structure and that
every figure comes from the audio that was written."""

import json
import os

import numpy as np
import pytest

from conftest import run_python
from jaxtts.audio.io import load_wav, save_wav, wav_sample_rate
from jaxtts.data.source import CorpusSource

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorer():
  from jaxtts.eval.score import Scorer
  return Scorer()


@pytest.fixture(scope="module")
def zero_shot(chain, scorer, tmp_path_factory):
  from jaxtts.eval.zero_shot import evaluate_zero_shot
  out = str(tmp_path_factory.mktemp("zero_shot_eval"))
  # 15 s prompts + 2 s to generate exceed tiny's 16 s max_total_seconds: refused per row.
  report = evaluate_zero_shot(chain["lm"], prompt_seconds=(1, 15), samples_per_text=2,
                              limit=2, out_dir=out, max_seconds=2.0, plots=1, progress=False,
                              scorer=scorer)
  return report, out


def test_zero_shot_report_structure(zero_shot):
  report, out = zero_shot
  for name in ("report.json", "report.md", "plots/metrics.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  assert len([n for n in os.listdir(os.path.join(out, "plots")) if n.startswith("mel-")]) == 1
  assert len([n for n in os.listdir(os.path.join(out, "plots"))
              if n.startswith("alignment-")]) == 1
  with open(os.path.join(out, "report.json")) as f:
    on_disk = json.load(f)
  assert on_disk["table"] == json.loads(json.dumps(report["table"]))
  table = {(r["prompt"], r["system"]): r for r in report["table"]}
  assert set(table) == {(p, s) for p in ("1 s", "15 s")
                        for s in ("ground_truth", "codec_resynthesis", "generated")}
  assert report["num_targets"] == 2
  # 1 s prompts: 2 targets x 2 samples; 15 s prompts: refused (4 requests), not fatal.
  assert table[("1 s", "generated")]["n"] == 4 and table[("15 s", "generated")]["n"] == 0
  assert table[("1 s", "ground_truth")]["n"] == table[("15 s", "ground_truth")]["n"] == 2
  refused = [f for f in report["failures"] if "max_total_seconds" in f["reason"]]
  assert len(refused) == 4 and report["num_failed"] == len(report["failures"]) == 4
  md = open(os.path.join(out, "report.md")).read()
  for header in ("WER (%)", "SIM (prompt)", "DNSMOS OVRL", "Duration spread (frames)"):
    assert header in md
  assert md == report["markdown"]


def _assert_transcripts_match_their_own_texts(rows):
  """Whisper heard these recordings: its transcripts are closer to their own texts than to
  each other's (a fixed WER bound on two short utterances is at the mercy of one word)."""
  from jaxtts.eval.asr import word_error_rate
  texts, hyps = [r["text"] for r in rows], [r["hypothesis"] for r in rows]
  assert len(set(texts)) >= 2, texts
  own = word_error_rate(texts, hyps)["cer"]
  others = [next(t for t in texts[i + 1:] + texts[:i] if t != texts[i])
            for i in range(len(texts))]
  shifted = word_error_rate(others, hyps)["cer"]
  assert own < 0.5 * shifted, (own, shifted, list(zip(texts, hyps)))


def test_zero_shot_figures_come_from_the_audio(zero_shot, scorer, chain):
  from jaxtts.eval.asr import word_error_rate
  report, _ = zero_shot
  rows = report["rows"]
  gen = [r for r in rows if r["system"] == "generated"]
  gt = [r for r in rows if r["system"] == "ground_truth"]
  for r in rows:
    wav = load_wav(r["wav"])
    assert r["seconds"] == pytest.approx(len(wav) / wav_sample_rate(r["wav"]), abs=1e-3)
    assert 1.0 <= r["dnsmos_ovrl"] <= 5.0
    # The row's WER is that of its own transcript.
    assert r["wer"] == pytest.approx(word_error_rate([r["text"]], [r["hypothesis"]])["wer"])
    # SIM is computed, or the speaker encoder's refusal is recorded on the row.
    for name in ("sim_prompt", "sim_reference"):
      assert (-1.0 <= r[name] <= 1.0) if name in r else "speech" in r["errors"][name]
  assert report["num_metric_failures"] == sum(len(r.get("errors", ())) for r in rows)
  # A recording compared with itself; the prompt is another recording of the same speaker.
  for r in gt:
    assert r["sim_reference"] == pytest.approx(1.0, abs=1e-5) and r["sim_prompt"] > 0.5
  # espeak ground truth is intelligible to Whisper; a 3-step model's output is not.
  table = {(r["prompt"], r["system"]): r for r in report["table"]}
  _assert_transcripts_match_their_own_texts(gt)
  assert table[("1 s", "ground_truth")]["cer"] < 50.0
  assert table[("1 s", "generated")]["wer"] > table[("1 s", "ground_truth")]["wer"]
  # Corpus-level WER of the group from its rows' transcripts.
  w = word_error_rate([r["text"] for r in gen], [r["hypothesis"] for r in gen])
  assert table[("1 s", "generated")]["wer"] == pytest.approx(100 * w["wer"])
  # Diversity across the two samples of each item: per phoneme the population std of its
  # sampled duration, averaged over phonemes and then items, in NumPy from the durations the
  # generator returns for the same requests and seeds (generation is deterministic).
  from jaxtts.eval import zero_shot as zs
  from jaxtts.infer.prompts import build_prompts
  synth = zs.load_generator(chain["lm"])
  items, _ = zs._select(build_prompts(synth.corpus_dir, "test_zero_shot", (1, 15), 0), 2)
  samples = [zs._synthesize(synth, items, k, k, 8, 2.0, False)[0] for k in range(2)]
  spreads = [np.std(np.stack([np.asarray(s[it["id"]]["durations"], np.float64)
                              for s in samples]), axis=0).mean()
             for it in items if it["requested_seconds"] == 1.0]
  assert len(spreads) == 2
  assert table[("1 s", "generated")]["phoneme_duration_std_frames"] == pytest.approx(
      np.mean(spreads), rel=1e-9, abs=1e-12)
  stops = report["synthesis"]["stopped_by"]
  assert sum(stops.values()) == 4


def test_zero_shot_is_deterministic(zero_shot, chain, scorer, tmp_path):
  from jaxtts.eval.zero_shot import evaluate_zero_shot
  report, _ = zero_shot
  again = evaluate_zero_shot(chain["lm"], prompt_seconds=(1,), samples_per_text=2, limit=2,
                             out_dir=str(tmp_path), max_seconds=2.0, plots=0, progress=False,
                             scorer=scorer)
  first = {r["id"]: r for r in report["rows"] if r["prompt_seconds"] == 1.0}
  for r in again["rows"]:
    assert r["hypothesis"] == first[r["id"]]["hypothesis"]
    assert r["seconds"] == first[r["id"]]["seconds"]
    np.testing.assert_array_equal(load_wav(r["wav"]), load_wav(first[r["id"]]["wav"]))


def test_score_cli_counts_bad_rows(chain, tmp_path):
  source = CorpusSource(chain["corpus"], "test_zero_shot")
  rows = []
  for i in range(2):
    ex = source.example(i)
    save_wav(tmp_path / f"gt{i}.wav", ex["audio"], ex["sample_rate"])
    rows.append({"id": ex["id"], "wav": f"gt{i}.wav", "text": ex["text"], "group": "gt"})
  (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00not a wav")
  rows += [{"id": "missing", "wav": "nope.wav", "text": "hello"},
           {"id": "corrupt", "wav": "corrupt.wav", "text": "hello"},
           {"id": "empty", "wav": "gt0.wav", "text": " ... "}]
  manifest = tmp_path / "generated.jsonl"
  manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
  proc = run_python("-m", "jaxtts.eval.cli", "score", "--manifest", manifest, "--no-progress",
                    "--no-sim", "--no-mos", check=False)
  assert proc.returncode == 1, proc.stderr[-2000:]
  with open(tmp_path / "generated.eval" / "report.json") as f:
    report = json.load(f)
  assert report["num_empty_text"] == 1 and report["num_failed"] == 3
  reasons = {f["id"]: f["reason"] for f in report["failures"]}
  assert "nope.wav" in reasons["missing"] and "corrupt" in reasons
  assert any("line 6" in f["reason"] or f["line"] == 6 for f in report["failures"])
  (gt,) = [r for r in report["table"] if r["system"] == "gt"]
  assert gt["n"] == 2 and gt["cer"] < 50.0
  _assert_transcripts_match_their_own_texts([r for r in report["rows"] if "hypothesis" in r])
  assert "| gt | 2 |" in proc.stdout


def test_codec_eval(chain, tmp_path):
  from jaxtts.eval.codec_eval import evaluate_codec
  report = evaluate_codec(chain["codec"], corpus_dir=chain["corpus"], limit=2,
                          out_dir=str(tmp_path), metrics=("mel_distance", "si_sdr", "stoi"),
                          plots=1, progress=False)
  assert [r["metric"] for r in report["table"]] == ["mel_distance", "si_sdr", "stoi", "wer",
                                                   "wer_ground_truth"]
  assert all(r["n"] == 2 and np.isfinite(r["mean"]) for r in report["table"])
  # The same Whisper on the recordings and the resynthesis, against the corpus texts: the
  # recordings' own transcripts must come out near their texts (espeak speech, Whisper base).
  _assert_transcripts_match_their_own_texts(
      [{"text": r["text"], "hypothesis": r["transcript_target"]} for r in report["rows"]])
  rows = {r["metric"]: r["mean"] for r in report["table"]}
  from jaxtts.eval.asr import word_error_rate
  want = word_error_rate([r["text"] for r in report["rows"]],
                         [r["transcript_recon"] for r in report["rows"]])["wer"]
  assert rows["wer"] == want
  assert report["rows"][0]["seconds"] > 0.5
  assert os.path.isfile(tmp_path / "report.md") and os.path.isfile(tmp_path / "report.json")
  assert len(os.listdir(tmp_path / "plots")) == 1 and len(os.listdir(tmp_path / "audio")) == 2
  with pytest.raises(ValueError, match="--metrics"):
    evaluate_codec(chain["codec"], corpus_dir=chain["corpus"], metrics=("wer",))


def test_cli_errors_name_the_problem(chain):
  proc = run_python("-m", "jaxtts.eval.cli", "zero-shot", "--workdir", chain["codec"],
                    "--no-progress", check=False)
  assert proc.returncode == 2 and "'gmm_vae'" in proc.stderr and "gmm_lm" in proc.stderr
  proc = run_python("-m", "jaxtts.eval.cli", "zero-shot", "--workdir", chain["lm"],
                    "--asr-model", "large-v3", "--limit", "1", "--max-seconds", "1",
                    "--no-progress", check=False)
  assert proc.returncode == 2 and "large-v3" in proc.stderr


def test_gmm_lm_samples_decode_a_mixture_sample(chain):
  """The GMM-LM's training samples (last step, with the latents' codec) decode a teacher-forced
  *sample* of the mixture beside its mean (they differ: the mean is no sample of a
  multimodal mixture), and log Tables 3-4's teacher-forcing mel distance."""
  import glob
  import json
  import soundfile as sf
  [step_dir] = glob.glob(os.path.join(chain["lm"], "samples", "step_*"))
  sample, _ = sf.read(os.path.join(step_dir, "sample_0", "teacher_forced_sample.wav"))
  mean, _ = sf.read(os.path.join(step_dir, "sample_0", "teacher_forced_mean.wav"))
  assert sample.shape == mean.shape and np.abs(sample - mean).max() > 1e-3
  logged = [json.loads(line) for line in open(os.path.join(chain["lm"], "metrics.jsonl"))]
  [value] = [r["valid/teacher_forced_mel_distance"] for r in logged
             if "valid/teacher_forced_mel_distance" in r]
  assert np.isfinite(value) and value > 0


def test_librispeech_protocol_prompts_with_whole_other_utterances(chain, scorer, tmp_path):
  """`--protocol librispeech`: one target per speaker, each prompted by a whole other
  utterance of its speaker (the prompt wav is that recording, sample for sample)."""
  from jaxtts.eval.zero_shot import evaluate_zero_shot
  report = evaluate_zero_shot(chain["lm"], protocol="librispeech", target_seconds=(0, 99),
                              targets_per_speaker=1, out_dir=str(tmp_path),
                              max_seconds=2.0, plots=0, progress=False, scorer=scorer)
  assert {line["prompt"] for line in report["table"]} == {"utterance"}
  src = CorpusSource(report["corpus_dir"], "test_zero_shot")
  records = {src.example(i)["id"]: src.example(i) for i in range(len(src))}
  counts = {}
  for r in records.values():
    counts[r["speaker_id"]] = counts.get(r["speaker_id"], 0) + 1
  generated = [r for r in report["rows"] if r["system"] == "generated"]
  assert report["failures"] == []
  assert len(generated) == report["num_targets"] == sum(n > 1 for n in counts.values()) > 0
  speakers = set()
  for r in generated:
    target_id, prompt_id = r["item_id"].split("-prompt-")
    target, prompt = records[target_id], records[prompt_id]
    assert prompt_id != target_id and prompt["speaker_id"] == target["speaker_id"]
    speakers.add(target["speaker_id"])
    np.testing.assert_array_equal(load_wav(r["prompt_wav"]),
                                  prompt["audio"].astype(np.float32) / 32768.0)
  assert len(speakers) == len(generated)
