"""NaturalSpeech 3 end to end on conftest's tiny chain (`ns3_run`: FACodec -> code shards ->
NS3): the task's logs, loss and samples, the generator (60 function evaluations, durations
given or aligned), its input errors, the ablation switches, and `jaxtts-eval zero-shot`."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtts.data.source import CorpusSource
from jaxtts.infer.base import SynthesisInputError
from jaxtts.train import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(preset, *overrides):
  return config_lib.build_config(os.path.join(ROOT, "configs", f"ns3.py:{preset}"),
                                 list(overrides))


@pytest.fixture(scope="module")
def generator(ns3_run):
  from jaxtts.infer.registry import load_generator
  return load_generator(ns3_run["ns3"])


@pytest.fixture(scope="module")
def examples(ns3_run):
  src = CorpusSource(ns3_run["codes"], "test_zero_shot")
  return [src.example(i) for i in range(3)]


def test_training_logs_both_diffusions_and_reduces_the_held_out_loss(ns3_run):
  """Every level's loss is logged (6 rows >= 6 levels, stratified); the fixed-key eval loss
  on the held-out split falls from step 12 to 24; samples hold generated audio and codes."""
  with open(os.path.join(ns3_run["ns3"], "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  train = [r for r in lines if "train/frame/loss" in r][-1]
  for key in ["phone/loss", "phone/accuracy", "frame/loss", "frame/accuracy", "prompt_frames",
              *(f"frame/level_{q}" for q in range(6)), "phone/level_0", "phone/level_1"]:
    assert np.isfinite(train[f"train/{key}"]), key
  assert 0 < train["train/prompt_frames"] < 200
  evals = {r["step"]: r["eval/loss"] for r in lines if "eval/loss" in r}
  assert sorted(evals) == [12, 24] and evals[24] < evals[12], evals
  [step] = glob.glob(os.path.join(ns3_run["ns3"], "samples", "step_0000024"))
  names = set(os.listdir(os.path.join(step, "sample_0")))
  assert {"generated.wav", "codec_target.wav", "codes_generated.png", "codes_target.png",
          "durations_recorded_vs_generated.png"} <= names, names


def test_generator_sixty_evaluations_given_and_aligned_prompt_durations(generator, examples):
  """One batch of two requests. Paper settings: 4 x 2 + 4 + 6 x 4 x 2 = 60 model calls. Given
  durations are used as they are; without them the transcript is force-aligned on FACodec's
  phone posteriors (every phone a frame, the prompt's frames covered). The output has exactly
  the generated durations' frames; the alignment runs through every phone in order."""
  a, b, c = examples
  given, aligned = generator.synthesize_batch([
      generator.prepare({"prompt_audio": a["audio"], "prompt_phonemes": a["phonemes"],
                         "prompt_durations": a["durations"], "target_phonemes": b["phonemes"]}),
      generator.prepare({"prompt_audio": c["audio"], "prompt_phonemes": c["phonemes"],
                         "target_phonemes": a["phonemes"]})], seed=0)
  assert given["nfe"] == {"phone": 12, "frame": 48, "total": 60}
  np.testing.assert_array_equal(given["prompt_durations"], a["durations"])
  assert given["prompt_durations_from"] == "request"
  assert given["prompt_frames"] == a["durations"].sum()
  d = aligned["prompt_durations"]
  assert aligned["prompt_durations_from"] == "aligner"
  assert (d >= 1).all() and d.sum() == -(-len(c["audio"]) // generator.hop)
  for out, target in ((given, b), (aligned, a)):
    assert len(out["durations"]) == len(target["phonemes"])
    assert out["frames"] == out["durations"].sum() > 0
    assert len(out["wav"]) == out["frames"] * generator.hop
    alignment = out["alignment"]
    assert len(alignment) == out["prompt_frames"] + out["frames"]
    assert (np.diff(alignment) >= 0).all()


def test_generator_input_errors_name_the_field(generator, examples):
  prompt = examples[0]
  base = {"prompt_audio": prompt["audio"], "prompt_phonemes": prompt["phonemes"]}
  cases = [({"target_phonemes": np.ones(200, np.int32)}, "text"),
           ({"target_phonemes": prompt["phonemes"],
             "prompt_durations": prompt["durations"][:-1]}, "prompt_durations"),
           ({"target_phonemes": prompt["phonemes"],
             "prompt_durations": prompt["durations"] + 50}, "prompt_durations"),
           ({"target_phonemes": prompt["phonemes"], "prompt_audio": prompt["audio"][:400]},
            "prompt_audio"),
           ({"text": ""}, "text")]
  for extra, field in cases:
    with pytest.raises(SynthesisInputError) as e:
      generator.synthesize({**base, **extra})
    assert e.value.field == field, (extra.keys(), str(e.value))
  with pytest.raises(SynthesisInputError, match="stay_mode"):
    generator.synthesize({**base, "target_phonemes": prompt["phonemes"]},
                         options={"stay_mode": "x"})


def test_code_shards_must_match_the_config(ns3_run):
  from jaxtts.tasks.ns3 import check_manifest
  with pytest.raises(ValueError, match="num_code_levels=4"):
    check_manifest(_config("tiny", "--config.model.num_code_levels=4"), ns3_run["codes"])
  with pytest.raises(ValueError, match="codebook_size=64"):
    check_manifest(_config("tiny", "--config.model.codebook_size=64"), ns3_run["codes"])
  assert check_manifest(_config("tiny"), ns3_run["codes"]) == 200


@pytest.mark.parametrize("ablation, nfe", [("no_cfg", 60),
                                           ("duration_l2+no_duration_prompt", 57),
                                           ("no_phone_prosody+one_step", 13)])
def test_ablations_train_and_generate(ns3_run, ablation, nfe):
  """Each ablation's loss is finite on a real batch, and the phone-level sampler makes the
  function evaluations it should (`Settings.nfe`, checked against the count the sampler
  returns): no CFG 8 + 4 + 48; L2 durations 8 + 1 + 48 (with the duration prompt hidden); no
  phone-level prosody in one step 0 + 1 + 12; generated durations are tokens in [0,
  max_duration]. (Two ablations share a row: one compiled model each.)"""
  from jaxtts.diffusion import generate
  from jaxtts.tasks.ns3 import NS3Task
  cfg = _config(f"tiny+{ablation}", f"--config.data.dir={ns3_run['codes']}",
                "--config.data.eval_split=test_zero_shot")
  task = NS3Task(cfg)
  batch = next(iter(task.eval_batches("test_zero_shot", 4, 0, 1)))
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  params = jax.tree.map(lambda x: getattr(x, "value", x),
                        task.init_params(jax.random.key(0), batch)["model"],
                        is_leaf=lambda x: hasattr(x, "value"))
  loss = jax.jit(lambda p: task.losses(p, batch, jax.random.key(1), False)[0])(params)
  assert np.isfinite(float(loss))
  settings = generate.Settings.from_config(cfg.synthesis)
  counts = settings.nfe(int(cfg.model.phone_prosody_levels), 6,
                        cfg.model.duration_loss == "l2")
  assert sum(counts.values()) == nfe
  phone_codes, _ = task._phone_codes(batch, jnp.arange(batch["phonemes"].shape[1])[None]
                                     < batch["phoneme_len"][:, None])
  prompt = jnp.minimum(batch["phoneme_len"] // 3, 4)
  _, out, phone_nfe = jax.jit(generate.phone_level, static_argnums=(0, 7, 8))(
      task.model, params, batch["phonemes"], batch["phoneme_len"], prompt, phone_codes,
      jax.random.key(2), settings, bool(cfg.diffusion.duration_prompt))
  assert int(phone_nfe) == counts["phone_prosody"] + counts["duration"]
  target = np.asarray(jnp.arange(out.shape[1])[None] < batch["phoneme_len"][:, None]) & (
      np.arange(out.shape[1])[None] >= np.asarray(prompt)[:, None])
  d = np.asarray(out[..., -1])[target]
  assert (d >= 0).all() and (d <= cfg.model.max_duration).all()


def test_zero_shot_eval_on_the_ns3_chain(ns3_run, tmp_path):
  """`jaxtts-eval zero-shot` takes an NS3 workdir: the same systems and columns as GMM-LM's
  report (ASR, speaker and MOS off here: test_eval runs them on the GMM-LM chain)."""
  from jaxtts.eval.zero_shot import evaluate_zero_shot
  report = evaluate_zero_shot(ns3_run["ns3"], prompt_seconds=(1,), limit=2,
                              out_dir=str(tmp_path), max_seconds=1.0, plots=1,
                              progress=False, asr_model=None, speaker_backend=None, mos=False)
  systems = {r["system"] for r in report["table"]}
  assert systems == {"ground_truth", "codec_resynthesis", "generated"}, report["table"]
  assert report["num_failed"] == 0, report.get("failures")
  assert os.path.getsize(tmp_path / "report.md") > 0
  assert len(glob.glob(str(tmp_path / "audio" / "**" / "*.wav"), recursive=True)) >= 2
