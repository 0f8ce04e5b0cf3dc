"""Zero-shot synthesis on a real tiny chain: espeak corpus -> codec (2 steps) -> latent shards
-> GMM-LM (3 steps) -> the generator registry / `jaxtts-synthesize`; and §5.1 prompts."""

import json
import logging
import os

import numpy as np
import pytest

from conftest import run_python as run
from jaxtts.audio.io import save_wav
from jaxtts.data.source import CorpusSource
from jaxtts.infer import prompts as prompts_lib
from jaxtts.infer.base import SynthesisInputError
from jaxtts.infer.registry import load_generator

MAX_SECONDS = 2.0  # every synthesis uses it: one decoder shape
TEXT = "Good morning."


@pytest.fixture(scope="module")
def synth(chain):
  return load_generator(chain["lm"])


def _check_result(result, num_phonemes, hop=200):
  wav = result["wav"]
  assert wav.dtype == np.float32 and len(wav) > 0 and np.all(np.isfinite(wav))
  assert result["sample_rate"] == 16000 and len(wav) == result["frames"] * hop
  assert len(result["durations"]) == len(result["phonemes"]) == num_phonemes
  assert result["durations"].sum() <= result["frames"]
  alignment = np.asarray(result["alignment"])
  assert len(alignment) == result["prompt_frames"] + result["frames"]
  assert np.all(np.diff(alignment) >= 0) and alignment[0] == 0
  assert alignment.max() < len(result["prompt_phonemes"]) + num_phonemes
  assert set(result["timings"]) >= {"encode_s", "generate_s", "decode_s", "rtf"}
  assert result["stopped_by"] in ("stop_logit", "passed_last_phoneme", "max_frames")


def test_synthesize_one_utterance(synth, chain):
  from jaxtts.text import text_to_ids
  audio = chain["prompt_audio"]
  result = synth.synthesize(text=TEXT, prompt_audio=audio, prompt_text=chain["prompt_text"],
                            max_seconds=MAX_SECONDS, seed=0)
  _check_result(result, len(text_to_ids(TEXT)))
  r = synth.frames_per_step  # the tiny preset decodes 2 codec frames per step
  assert r == 2 and result["prompt_frames"] == len(audio) // (200 * r) * r
  assert result["frames"] <= MAX_SECONDS * 80 and result["frames"] % r == 0
  alignment = np.asarray(result["alignment"])
  np.testing.assert_array_equal(alignment[0::2], alignment[1::2])  # one phoneme per step
  assert result["durations"].sum() % r == 0
  # The same request from phoneme ids (as prompts carry them) and a float prompt.
  again = synth.synthesize(prompt_audio=audio.astype(np.float32) / 32768.0,
                           prompt_phonemes=text_to_ids(chain["prompt_text"]),
                           target_phonemes=text_to_ids(TEXT), seed=0, max_seconds=MAX_SECONDS)
  assert again["frames"] == result["frames"]
  np.testing.assert_array_equal(again["alignment"], result["alignment"])


def test_bad_inputs_name_the_field(synth, chain, tmp_path, caplog):
  audio, text = chain["prompt_audio"], chain["prompt_text"]
  cases = [
      (dict(text="", prompt_audio=audio, prompt_text=text), "text"),
      (dict(text="  ...  ", prompt_audio=audio, prompt_text=text), "text"),
      (dict(text=TEXT, prompt_audio=audio, prompt_text=""), "prompt_text"),
      (dict(text=TEXT, prompt_audio=audio[:150], prompt_text=text), "prompt_audio"),
      (dict(text=TEXT, prompt_audio=str(tmp_path / "nope.wav"), prompt_text=text),
       "prompt_audio"),
      (dict(text=TEXT, prompt_audio=np.zeros(16000 * 15, np.float32), prompt_text=text),
       "prompt_audio"),
      (dict(text=TEXT, prompt_audio=audio), "prompt_text"),  # no transcript, no sidecar
      (dict(text=TEXT, prompt_audio=audio, prompt_phonemes=[0, 5]), "prompt_phonemes"),
  ]
  for kwargs, field in cases:
    with pytest.raises(SynthesisInputError) as err:
      synth.prepare(dict(max_seconds=MAX_SECONDS, **kwargs))
    assert err.value.field == field and str(err.value).startswith(field + ":"), kwargs
  with pytest.raises(SynthesisInputError, match="shorter than one decoder step"):
    synth.prepare(dict(text=TEXT, prompt_audio=audio[:150], prompt_text=text))
  with pytest.raises(SynthesisInputError, match="limit of 16 s"):
    synth.prepare(dict(text=TEXT, prompt_audio=np.zeros(16000 * 15, np.float32),
                       prompt_text=text, max_seconds=MAX_SECONDS))
  with pytest.raises(FileNotFoundError, match="nope.wav"):
    synth.prepare(dict(text=TEXT, prompt_audio=str(tmp_path / "nope.wav"), prompt_text=text))
  # A transcript far too short for its audio is only warned about.
  with caplog.at_level(logging.WARNING, logger="jaxtts.infer"):
    request = synth.prepare(dict(text=TEXT, prompt_audio=audio, prompt_text="Oh.",
                                 max_seconds=MAX_SECONDS))
  assert "frames per phoneme" in caplog.text and len(request.prompt_latents) == len(audio) // 200


def test_cli_single_utterance_with_sidecar_transcript(chain, tmp_path):
  save_wav(tmp_path / "prompt.wav", chain["prompt_audio"], 16000)
  (tmp_path / "prompt.txt").write_text(chain["prompt_text"])
  out = tmp_path / "out" / "hello.wav"
  proc = run("-m", "jaxtts.infer", "--workdir", chain["lm"], "--text", TEXT, "--prompt-audio",
             tmp_path / "prompt.wav", "--out", out, "--max-seconds", MAX_SECONDS, "--seed", 3,
             "--stay-mode", "threshold", "--scale-temperature", "0.5")
  summary = json.loads(proc.stdout.splitlines()[-1])
  import soundfile
  wav, rate = soundfile.read(out)
  assert rate == 16000 and len(wav) == summary["frames"] * 200 > 0
  info = json.load(open(tmp_path / "out" / "hello.json"))
  assert len(info["durations"]) == len(info["phonemes"]) and info["timings"]["rtf"] > 0
  assert os.path.getsize(tmp_path / "out" / "hello.alignment.png") > 0
  assert not [p for p in os.listdir(tmp_path / "out") if ".tmp" in p]


def test_cli_manifest_reports_bad_rows(chain, tmp_path):
  items = prompts_lib.build_prompts(chain["corpus"], "test_zero_shot", seconds=(1,))[:2]
  path = prompts_lib.write_prompt_manifest(items, str(tmp_path / "prompts"))
  save_wav(tmp_path / "p.wav", chain["prompt_audio"], 16000)
  rows = [json.loads(l) for l in open(path)]
  rows += [{"id": "with_text", "text": "A cat.", "prompt_audio": "p.wav",
            "prompt_text": chain["prompt_text"]},
           {"id": "missing", "text": TEXT, "prompt_audio": "missing.wav",
            "prompt_text": "Hello."}]
  manifest = tmp_path / "requests.jsonl"
  manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "out"
  proc = run("-m", "jaxtts.infer", "--workdir", chain["lm"], "--manifest", manifest,
             "--out-dir", out, "--max-seconds", MAX_SECONDS, "--batch-size", 4, "--no-progress",
             check=False)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "missing.wav" in proc.stderr
  failures = json.load(open(out / "failures.json"))
  assert [f["id"] for f in failures] == ["missing"] and "prompt_audio" in failures[0]["reason"]
  for rid in [r["id"] for r in rows[:-1]]:
    assert os.path.getsize(out / f"{rid}.wav") > 44
    info = json.load(open(out / f"{rid}.json"))
    assert {"durations", "phonemes", "alignment", "timings", "stopped_by"} <= set(info)
    assert os.path.exists(out / f"{rid}.alignment.png")
  first = json.load(open(out / f"{rows[0]['id']}.json"))
  # 75 frames of prompt at 80 frames/s, cut to whole 2-frame decoder steps
  assert first["prompt_frames"] == round(rows[0]["prompt_seconds"] * 80) // 2 * 2
  assert len(first["prompt_phonemes"]) == len(rows[0]["prompt_phonemes"])


def test_cli_rejects_another_task_workdir(chain, tmp_path):
  save_wav(tmp_path / "p.wav", chain["prompt_audio"], 16000)
  proc = run("-m", "jaxtts.infer", "--workdir", chain["codec"], "--text", TEXT,
             "--prompt-audio", tmp_path / "p.wav", "--out", tmp_path / "x.wav", check=False)
  assert proc.returncode == 1
  assert chain["codec"] in proc.stderr and "'gmm_vae'" in proc.stderr and "gmm_lm" in proc.stderr
  assert "Traceback" not in proc.stderr and not os.path.exists(tmp_path / "x.wav")


def test_build_prompts_cut_at_phoneme_boundaries(chain):
  corpus = chain["corpus"]
  src = CorpusSource(corpus, "test_zero_shot")
  records = {ex["id"]: ex for ex in (src.example(i) for i in range(len(src)))}
  seconds = (1, 3, 8)
  items = prompts_lib.build_prompts(corpus, "test_zero_shot", seconds=seconds, seed=0)
  assert len(items) == len(records) * len(seconds)
  again = prompts_lib.build_prompts(corpus, "test_zero_shot", seconds=seconds, seed=0)
  for it, other in zip(items, again):
    assert it["source_ids"] == other["source_ids"]
  truncated = concatenated = 0
  for it in items:
    target = records[it["target_id"]]
    assert it["target_id"] not in it["source_ids"]
    assert all(records[s]["speaker_id"] == target["speaker_id"] for s in it["source_ids"])
    np.testing.assert_array_equal(it["phonemes"], target["phonemes"])
    frames = len(it["prompt_audio"]) // 200
    assert len(it["prompt_audio"]) % 200 == 0 and it["prompt_durations"].sum() == frames
    assert it["prompt_seconds"] == frames / 80
    # The prompt is a prefix of the concatenated sources, cut at a phoneme boundary ...
    audio = np.concatenate([records[s]["audio"] for s in it["source_ids"]])
    phonemes = np.concatenate([records[s]["phonemes"] for s in it["source_ids"]])
    durations = np.concatenate([records[s]["durations"] for s in it["source_ids"]])
    k = len(it["prompt_phonemes"])
    np.testing.assert_array_equal(it["prompt_audio"], audio[:frames * 200])
    np.testing.assert_array_equal(it["prompt_phonemes"], phonemes[:k])
    np.testing.assert_array_equal(it["prompt_durations"], durations[:k])
    # ... within one phoneme of the requested length.
    want = it["requested_seconds"] * 80
    cum = np.concatenate([[0], np.cumsum(durations)])
    assert cum[k] == frames and cum[k - 1] <= want <= cum[min(k + 1, len(durations))]
    truncated += len(it["source_ids"]) == 1 and k < len(records[it["source_ids"][0]]["phonemes"])
    concatenated += len(it["source_ids"]) > 1
  assert all(len(it["source_ids"]) == 1 for it in items if it["requested_seconds"] == 1)
  assert all(len(it["source_ids"]) > 1 for it in items if it["requested_seconds"] == 8)
  assert truncated >= len(records) and concatenated >= len(records)


def test_requests_the_generator_cannot_serve_name_generator_and_field(synth, chain):
  audio, text = chain["prompt_audio"], chain["prompt_text"]
  ok = dict(text=TEXT, prompt_audio=audio, prompt_text=text, max_seconds=MAX_SECONDS)
  for extra, field in ((dict(sample_rate=24000), "sample_rate"), (dict(speed=2.0), "speed"),
                       (dict(prompt_sample_rate=-5), "prompt_sample_rate")):
    with pytest.raises(SynthesisInputError) as err:
      synth.prepare({**ok, **extra})
    assert err.value.field == field
  with pytest.raises(SynthesisInputError, match="not an option of the gmm_lm generator") as err:
    synth.synthesize(ok, options={"guidance_scale": 2.0})
  assert err.value.field == "guidance_scale"
  # An array prompt at another rate is resampled to the generator's rate first.
  at_8k = (audio[::2].astype(np.float32) / 32768.0)
  request = synth.prepare({**ok, "prompt_audio": at_8k, "prompt_sample_rate": 8000})
  assert abs(len(request.prompt_latents) - len(audio) // 200) <= 1


class _EndToEnd(__import__("jaxtts.infer.base", fromlist=["Generator"]).Generator):
  """A generator without a codec or a transcript (CLONE's shape): silence of the text's
  length. It exercises the base class's checks, not a model."""

  task = "end_to_end_test"
  sample_rate = 16000
  workdirs = {}

  def _prepare(self, request):
    return len(request.text)

  def synthesize_batch(self, prepared, *, seed=0, **options):
    self.check_options(options)
    return [{"wav": np.zeros(n * 160, np.float32), "sample_rate": 16000, "timings": {}}
            for n in prepared]


def test_a_generator_without_codec_or_transcript_fits_the_interface(chain):
  gen = _EndToEnd()
  with pytest.raises(SynthesisInputError, match="end_to_end_test generator takes no "
                                                "prompt_text") as err:
    gen.prepare({"text": "Hi.", "prompt_audio": chain["prompt_audio"], "prompt_text": "x"})
  assert err.value.field == "prompt_text"
  assert gen.resynthesize(np.zeros(1600, np.float32)) is None
  assert len(gen.synthesize(text="Hello.")["wav"]) == 6 * 160


def test_generator_registry_refuses_unknown_components_and_codec_workdirs(chain):
  from jaxtts.workdir import WorkdirError
  with pytest.raises(WorkdirError, match="takes no duration"):
    load_generator(chain["lm"], components={"duration": chain["codec"]})
  with pytest.raises(WorkdirError, match="has no zero-shot generator"):
    load_generator(chain["codec"])
  with pytest.raises(WorkdirError, match="a codec needs"):
    load_generator(chain["lm"], components={"codec": chain["lm"]})


def test_corrupt_checkpoint_is_one_line_naming_step_and_path(chain, tmp_path):
  import shutil
  lm = tmp_path / "lm"
  shutil.copytree(chain["lm"], lm)
  step = max(int(d) for d in os.listdir(lm / "checkpoints") if d.isdigit())
  files = [os.path.join(r, f) for r, _, fs in os.walk(lm / "checkpoints" / str(step) / "state")
           for f in fs]
  largest = max(files, key=os.path.getsize)
  size = os.path.getsize(largest)
  with open(largest, "r+b") as f:  # random bytes over the middle third of the data file
    f.seek(size // 3)
    f.write(np.random.default_rng(0).integers(0, 256, size // 3, dtype=np.uint8).tobytes())
  save_wav(tmp_path / "p.wav", chain["prompt_audio"], 16000)
  proc = run("-m", "jaxtts.infer", "--workdir", lm, "--text", TEXT, "--prompt-audio",
             tmp_path / "p.wav", "--prompt-text", chain["prompt_text"], "--out",
             tmp_path / "x.wav", check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if "jaxtts-synthesize" in l]
  assert len(lines) == 1, proc.stderr
  assert f"checkpoint step {step}" in lines[0]
  assert str(lm / "checkpoints" / str(step) / "state") in lines[0]
  # No checkpoint at all is also one line.
  shutil.rmtree(lm / "checkpoints")
  proc = run("-m", "jaxtts.infer", "--workdir", lm, "--text", TEXT, "--prompt-audio",
             tmp_path / "p.wav", "--prompt-text", chain["prompt_text"], "--out",
             tmp_path / "x.wav", check=False)
  assert proc.returncode == 1 and "no checkpoint" in proc.stderr
  assert "Traceback" not in proc.stderr
