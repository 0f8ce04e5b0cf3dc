"""`make demo`: the whole chain on CPU in under 15 minutes: embedded corpus -> small GMM-VAE
codec (STFT encoder, source-filter Vocos head, pitch in the latent) -> held-out reconstructions -> latent shards -> tiny GMM-LM -> zero-shot synthesis.

    python -m launch.demo --out runs/demo [--codec-steps 6000] [--lm-steps 500]
    python -m launch.demo --family facodec --out runs/demo_facodec   (launch/demo_facodec.py)
    python -m launch.demo --family ns3 --out runs/demo_ns3           (launch/demo_ns3.py)
    python -m launch.demo --family clone --out runs/demo_clone       (launch/demo_clone.py)

Writes into OUT:
  corpus/            the espeak corpus (ArrayRecord shards + manifest.json)
  train/             the codec's training workdir (config.json, params.json, checkpoints/,
                     tensorboard/, metrics.jsonl, samples/)
  reconstructions/   held-out (zero-shot) speakers: <id>.target.wav, <id>.recon.wav, <id>.png
  latents/           `jaxtts-codec encode-dataset` shards (records + latents) for stage 2
  gmm_lm/            the GMM-LM's training workdir (alignment images under samples/)
  zero_shot/         held-out speakers' texts from 3 s prompts: <id>.wav, <id>.alignment.png
  eval/              `jaxtts-eval zero-shot` of the GMM-LM: report.json, report.md (WER, SIM,
                     DNSMOS of generated speech beside ground truth and codec resynthesis),
                     plots/, audio/
  metrics.json       corpus, training figures, reconstruction metrics, synthesis timings
Rerunning resumes each training from its checkpoints (the corpus is rebuilt only if absent).
The CPU budget trains the codec (`configs/gmm_vae.py:cpu`: the STFT encoder, the source-filter
Vocos head driven by the latent's pitch channels, λ = 0.1, mel + APNet amplitude loss) without
its discriminators, on 24 training voices (`SPEAKERS`): the codec must generalise to the
held-out voices: with 12 training voices their STOI was 0.72, with 24 0.80 (48: no better).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import jax
import numpy as np

from jaxtts.audio.io import save_wav
from jaxtts.data.source import CorpusSource
from jaxtts.train import config as config_lib
from jaxtts.train import loop
from jaxtts.codec.registry import load_codec
from jaxtts.codec import cli as codec_cli
from jaxtts.eval import codec_metrics
from jaxtts.eval.zero_shot import evaluate_zero_shot
from jaxtts.infer import prompts as prompts_lib
from jaxtts.infer.base import save_alignment_image
from jaxtts.infer.registry import load_generator
from jaxtts.plots import display_mel, save_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("mel_distance", "stft_distance", "si_sdr", "pesq_wb", "stoi")


# The CPU codec recipe (`make demo`, `make quality`): `configs/gmm_vae.py:cpu`, the STFT
# encoder and the source-filter Vocos head (pitch in the latent) with mel + APNet amplitude +
# prior (λ = 0.1), no discriminators.
CODEC_CONFIG = "gmm_vae.py:cpu"
# The corpus' training voices per demo (`--zero-shot-speakers` more are held out). The codec chain's codec is judged on
# held-out voices, and more training voices is what made it generalise (the codec preset's
# docstring); the other families' demos were measured on 12 and keep it.
SPEAKERS = {"gmm_lm": 24, "other": 12}
CODEC_OVERRIDES = ["--config.eval.sample_metrics=('mel_distance','si_sdr')"]


def codec_overrides(corpus: str, steps: int, seed: int, extra=()) -> list[str]:
  return CODEC_OVERRIDES + [f"--config.data.dir={corpus}", f"--config.train.steps={steps}",
                            f"--config.train.seed={seed}", *[f"--config.{kv}" for kv in extra]]


def lm_overrides(latents: str, steps: int, seed: int) -> list[str]:
  return [f"--config.data.dir={latents}", f"--config.train.steps={steps}",
          f"--config.train.seed={seed}", "--config.train.eval_every_steps=250",
          "--config.train.sample_every_steps=250", "--config.checkpoint.every_steps=250",
          "--config.data.bucket_samples=(48000,80000,112000)"]


def build_corpus(out: str, args) -> dict:
  """The demos' espeak corpus (every family's), with frame F0 and voicing (``--f0``: FACodec's
  prosody targets, the source-filter decoders' excitation); reused when it exists."""
  from data_pipelines import espeak_corpus  # pylint: disable=import-outside-toplevel
  manifest = os.path.join(out, "manifest.json")
  if os.path.exists(manifest):
    return {"reused": True}
  t0 = time.perf_counter()
  espeak_corpus.main(["--out", out, "--speakers", str(args.speakers),
                      "--zero-shot-speakers", str(args.zero_shot_speakers),
                      "--utterances-per-speaker", str(args.utterances_per_speaker),
                      "--seed", str(args.seed), "--workers", "2", "--f0"])
  return {"reused": False, "build_seconds": time.perf_counter() - t0}


def corpus_stats(corpus: str) -> dict:
  with open(os.path.join(corpus, "manifest.json")) as f:
    m = json.load(f)
  size = sum(os.path.getsize(os.path.join(corpus, n)) for n in os.listdir(corpus))
  return {"bytes": size, "speakers": len(m["speakers"]),
          "splits": {k: {"num_examples": v["num_examples"], "hours": v["hours"]}
                     for k, v in m["splits"].items()}}


def reconstruct_held_out(codec_workdir: str, corpus: str, out_dir: str, count: int) -> dict:
  """Encodes and decodes whole held-out utterances with `jaxtts-codec`'s `Codec`; writes wavs,
  spectrogram PNGs and the reconstruction metrics of `jaxtts.eval.codec_metrics`."""
  codec = load_codec(codec_workdir)
  source = CorpusSource(corpus, "test_zero_shot", sample_rate=codec.sample_rate)
  os.makedirs(out_dir, exist_ok=True)
  rows = []
  for i in range(min(count, len(source))):
    ex = source.example(i)
    audio = ex["audio"].astype(np.float32) / 32768.0
    recon = codec.resynthesize(audio)
    name = ex["id"]
    save_wav(os.path.join(out_dir, f"{name}.target.wav"), audio, codec.sample_rate)
    save_wav(os.path.join(out_dir, f"{name}.recon.wav"), recon, codec.sample_rate)
    both = np.concatenate([display_mel(audio, codec.sample_rate),
                           display_mel(recon, codec.sample_rate)], axis=1)
    save_image(os.path.join(out_dir, f"{name}.png"), both,
               title=f"{name}: target (bins 0-79) | reconstruction (bins 80-159)",
               xlabel="frame", ylabel="mel bin")
    scores = codec_metrics.compute_all(recon, audio, codec.sample_rate, metrics=METRICS)
    rows.append({"id": name, "speaker": ex["speaker"],
                 "seconds": len(audio) / codec.sample_rate, **scores})
  return {"utterances": rows,
          **{f"mean_{m}": float(np.mean([r[m] for r in rows])) for m in METRICS}}


def train_stage(config: str, overrides: list[str], workdir: str) -> dict:
  cfg = config_lib.build_config(os.path.join(ROOT, "configs", config), overrides)
  t0 = time.perf_counter()
  result = loop.train(cfg, workdir)
  seconds = time.perf_counter() - t0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [r for r in map(json.loads, f) if "loss" in r]  # training lines, not eval
  rates = [r["train/steps_per_sec"] for r in logged if "train/steps_per_sec" in r]
  return {"steps": result["step"], "wall_seconds": seconds,
          "steps_per_sec_median": float(np.median(rates)) if rates else None,
          "first_loss": logged[0]["loss"], "final_loss": logged[-1]["loss"], "final": result}


def zero_shot(lm_workdir: str, corpus: str, out_dir: str, count: int, seed: int) -> dict:
  """Synthesizes held-out speakers' texts from 3-second prompts of their other utterances."""
  synth = load_generator(lm_workdir)
  items = prompts_lib.build_prompts(corpus, "test_zero_shot", seconds=(3,), seed=seed)[:count]
  os.makedirs(out_dir, exist_ok=True)
  rows = []
  for item in items:
    prompt = item["prompt_audio"].astype(np.float32) / 32768.0
    request = {"text": item["text"], "prompt_audio": prompt,
               "prompt_phonemes": item["prompt_phonemes"], "target_phonemes": item["phonemes"],
               "prompt_durations": item["prompt_durations"]}
    out = synth.synthesize({k: v for k, v in request.items() if k in synth.request_fields},
                           seed=seed)
    name = item["id"]
    save_wav(os.path.join(out_dir, f"{name}.prompt.wav"), prompt, out["sample_rate"])
    save_wav(os.path.join(out_dir, f"{name}.wav"), out["wav"], out["sample_rate"])
    save_alignment_image(os.path.join(out_dir, f"{name}.alignment.png"), out,
                         title=f"{name}: alignment (prompt at 0.5)")
    rows.append({"id": name, "text": item["text"], "prompt_sources": item["source_ids"],
                 "seconds": len(out["wav"]) / out["sample_rate"],
                 "durations": [int(d) for d in out["durations"]],
                 "stopped_by": out["stopped_by"], "timings": out["timings"]})
  return {"utterances": rows}


def zero_shot_and_eval(workdir: str, corpus: str, out: str, args, metrics: dict,
                       t_start: float, max_seconds: float, label: str, steps: str) -> dict:
  """The last two stages every TTS demo shares: zero-shot synthesis of held-out speakers into
  ``out/zero_shot``, then `jaxtts-eval zero-shot` into ``out/eval``; writes
  ``out/metrics.json`` and returns the report. ``steps``: the two stages' numbers, e.g.
  ``"6/7,7/7"``."""
  first, second = steps.split(",")
  print(f"[{label}] {first} zero-shot synthesis for held-out speakers -> {out}/zero_shot",
        flush=True)
  metrics["zero_shot"] = zero_shot(workdir, corpus, os.path.join(out, "zero_shot"),
                                   args.zero_shot, args.seed)
  print(f"[{label}] {second} jaxtts-eval zero-shot -> {out}/eval", flush=True)
  report = evaluate_zero_shot(workdir, split="test_zero_shot", prompt_seconds=(3,),
                              limit=args.eval_utterances, out_dir=os.path.join(out, "eval"),
                              seed=args.seed, max_seconds=max_seconds)
  metrics["zero_shot_eval"] = {"table": report["table"], "num_failed": report["num_failed"],
                               "wall_seconds": report["wall_seconds"]}
  metrics["device"] = str(jax.devices()[0].platform)
  metrics["demo_wall_seconds"] = time.perf_counter() - t_start
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1, sort_keys=True)
  return report


def eval_summary(report: dict) -> dict:
  """The report table's WER, SIM and DNSMOS per system, for the demos' last JSON line."""
  return {f"eval_{r['system']}_{k}": r.get(k) for r in report["table"]
          for k in ("wer", "sim_prompt", "dnsmos_ovrl")}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--family", default="gmm_lm",
                      choices=("gmm_lm", "facodec", "ns3", "clone"),
                      help="gmm_lm: codec -> GMM-LM -> zero-shot TTS (this file); facodec: "
                           "FACodec reconstruction, voice conversion, probes; ns3: FACodec -> "
                           "NaturalSpeech 3 diffusion -> zero-shot TTS (launch/demo_ns3.py); "
                           "clone: CLONE end to end -> zero-shot TTS (launch/demo_clone.py)")
  parser.add_argument("--out", default=None, help="default: runs/demo[_<family>]")
  parser.add_argument("--speakers", type=int, default=None,
                      help=f"training voices of the espeak corpus (default: "
                           f"{SPEAKERS['gmm_lm']} for the codec -> GMM-LM chain, "
                           f"{SPEAKERS['other']} for the other families)")
  parser.add_argument("--zero-shot-speakers", type=int, default=3)
  parser.add_argument("--utterances-per-speaker", type=int, default=30)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--codec-steps", type=int, default=6000)
  parser.add_argument("--codec-set", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override for the codec's training (model.excitation=True)")
  parser.add_argument("--lm-steps", type=int, default=500)
  parser.add_argument("--reconstructions", type=int, default=6)
  parser.add_argument("--zero-shot", type=int, default=4, help="held-out syntheses")
  parser.add_argument("--eval-utterances", type=int, default=6,
                      help="held-out texts scored by jaxtts-eval zero-shot")
  from launch import demo_clone, demo_facodec, demo_ns3  # pylint: disable=import-outside-toplevel
  demo_facodec.add_arguments(parser)
  demo_ns3.add_arguments(parser)
  demo_clone.add_arguments(parser)
  args = parser.parse_args(argv)
  if args.speakers is None:
    args.speakers = SPEAKERS["gmm_lm" if args.family == "gmm_lm" else "other"]
  args.out = args.out or ("runs/demo" if args.family == "gmm_lm" else f"runs/demo_{args.family}")
  if args.family == "facodec":
    return demo_facodec.run(args)
  if args.family == "ns3":
    return demo_ns3.run(args)
  if args.family == "clone":
    return demo_clone.run(args)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  t_start = time.perf_counter()
  out = os.path.abspath(args.out)  # workdir configs name their data by absolute path
  corpus, codec_dir = os.path.join(out, "corpus"), os.path.join(out, "train")
  latents, lm_dir = os.path.join(out, "latents"), os.path.join(out, "gmm_lm")
  metrics = {}

  print(f"[demo] 1/7 corpus -> {corpus}", flush=True)
  metrics["corpus"] = {**build_corpus(corpus, args), **corpus_stats(corpus)}

  print(f"[demo] 2/7 training the CPU GMM-VAE codec (source-filter Vocos head) -> {codec_dir}", flush=True)
  metrics["codec_train"] = train_stage(
      CODEC_CONFIG, codec_overrides(corpus, args.codec_steps, args.seed, args.codec_set),
      codec_dir)

  print(f"[demo] 3/7 reconstructing held-out speakers -> {out}/reconstructions", flush=True)
  metrics["reconstruction_test_zero_shot"] = reconstruct_held_out(
      codec_dir, corpus, os.path.join(out, "reconstructions"), args.reconstructions)

  print(f"[demo] 4/7 encoding the corpus to latent shards -> {latents}", flush=True)
  t0 = time.perf_counter()
  codec_cli.main(["encode-dataset", "--workdir", codec_dir, "--data-dir", corpus,
                  "--out", latents])
  metrics["encode_dataset_seconds"] = time.perf_counter() - t0

  print(f"[demo] 5/7 training the tiny GMM-LM -> {lm_dir}", flush=True)
  metrics["gmm_lm_train"] = train_stage(
      "gmm_lm.py:tiny", lm_overrides(latents, args.lm_steps, args.seed), lm_dir)

  report = zero_shot_and_eval(lm_dir, corpus, out, args, metrics, t_start, 8.0, "demo",
                              "6/7,7/7")
  recon = metrics["reconstruction_test_zero_shot"]
  print(json.dumps({"demo_wall_seconds": round(metrics["demo_wall_seconds"], 1),
                    "codec_final_loss": metrics["codec_train"]["final_loss"],
                    "gmm_lm_first_loss": metrics["gmm_lm_train"]["first_loss"],
                    "gmm_lm_final_loss": metrics["gmm_lm_train"]["final_loss"],
                    **{f"held_out_{m}": recon[f"mean_{m}"] for m in METRICS},
                    "zero_shot_files": len(metrics["zero_shot"]["utterances"]),
                    **eval_summary(report)}))
  print(report["markdown"])
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
