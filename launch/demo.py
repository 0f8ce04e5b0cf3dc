"""`make demo`: embedded corpus -> tiny GMM-VAE codec trained on CPU -> held-out reconstructions.

    python -m launch.demo --out runs/demo [--train-seconds 360]

Writes into OUT:
  corpus/            the espeak corpus (ArrayRecord shards + manifest.json)
  train/             the training workdir (config.json, params.json, checkpoints/, tensorboard/,
                     metrics.jsonl, samples/)
  reconstructions/   for held-out (zero-shot) speakers: <id>.target.wav, <id>.recon.wav, <id>.png
  metrics.json       corpus size and build time, train wall time and steps/s, final losses,
                     reconstruction mel distance and SI-SDR on the held-out utterances
Rerunning resumes training from the workdir's checkpoints (the corpus is rebuilt only if absent).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtts.audio import spectral
from jaxtts.audio.io import save_wav
from jaxtts.data.source import CorpusSource
from jaxtts.train import config as config_lib
from jaxtts.train import loop, restore
from jaxtts.train.metrics import save_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_corpus(out: str, args) -> dict:
  from data_pipelines import espeak_corpus  # pylint: disable=import-outside-toplevel
  manifest = os.path.join(out, "manifest.json")
  if os.path.exists(manifest):
    return {"reused": True}
  t0 = time.perf_counter()
  espeak_corpus.main(["--out", out, "--speakers", str(args.speakers),
                      "--zero-shot-speakers", str(args.zero_shot_speakers),
                      "--utterances-per-speaker", str(args.utterances_per_speaker),
                      "--seed", str(args.seed), "--workers", "2"])
  return {"reused": False, "build_seconds": time.perf_counter() - t0}


def corpus_stats(corpus: str) -> dict:
  with open(os.path.join(corpus, "manifest.json")) as f:
    m = json.load(f)
  size = sum(os.path.getsize(os.path.join(corpus, n)) for n in os.listdir(corpus))
  return {"bytes": size, "speakers": len(m["speakers"]),
          "splits": {k: {"num_examples": v["num_examples"], "hours": v["hours"]}
                     for k, v in m["splits"].items()}}


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
  """Scale-invariant SDR in dB (Le Roux et al. 2019), zero-mean signals."""
  ref = reference - reference.mean()
  est = estimate - estimate.mean()
  target = (est @ ref) / max(ref @ ref, 1e-12) * ref
  noise = est - target
  return float(10 * np.log10(max(target @ target, 1e-12) / max(noise @ noise, 1e-12)))


def reconstruct_held_out(workdir: str, corpus: str, out_dir: str, count: int) -> dict:
  """Encodes and decodes whole held-out utterances; writes wavs, PNGs and their metrics."""
  trainer, params = restore.load_trained(workdir)
  task = trainer.task
  source = CorpusSource(corpus, "test_zero_shot", sample_rate=task.sample_rate)
  recon_fn = jax.jit(task.reconstruct)
  os.makedirs(out_dir, exist_ok=True)
  rows = []
  for i in range(min(count, len(source))):
    ex = source.example(i)
    audio = ex["audio"].astype(np.float32) / 32768.0
    padded = np.pad(audio, (0, -len(audio) % task.sample_rate))  # whole seconds: few shapes
    recon = np.asarray(recon_fn(params, jnp.asarray(padded)[None]))[0, :len(audio)]
    mel = float(spectral.multiscale_mel_loss(
        jnp.asarray(recon)[None], jnp.asarray(audio)[None], sample_rate=task.sample_rate,
        window_lengths=tuple(trainer.cfg.loss.mel_window_lengths),
        n_mels=tuple(trainer.cfg.loss.mel_bins)))
    name = ex["id"]
    save_wav(os.path.join(out_dir, f"{name}.target.wav"), audio, task.sample_rate)
    save_wav(os.path.join(out_dir, f"{name}.recon.wav"), recon, task.sample_rate)
    both = np.concatenate([task.log_mel(audio), task.log_mel(recon)], axis=1)
    save_image(os.path.join(out_dir, f"{name}.png"), both,
               title=f"{name}: target (bins 0-79) | reconstruction (bins 80-159)",
               xlabel="frame", ylabel="mel bin")
    rows.append({"id": name, "speaker": ex["speaker"], "seconds": len(audio) / task.sample_rate,
                 "mel_distance": mel, "si_sdr_db": si_sdr(recon, audio)})
  return {"utterances": rows,
          "mean_mel_distance": float(np.mean([r["mel_distance"] for r in rows])),
          "mean_si_sdr_db": float(np.mean([r["si_sdr_db"] for r in rows]))}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="runs/demo")
  parser.add_argument("--speakers", type=int, default=12)
  parser.add_argument("--zero-shot-speakers", type=int, default=3)
  parser.add_argument("--utterances-per-speaker", type=int, default=30)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--steps", type=int, default=2000, help="training steps (tiny codec)")
  parser.add_argument("--reconstructions", type=int, default=6)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  t_start = time.perf_counter()
  corpus, workdir = os.path.join(args.out, "corpus"), os.path.join(args.out, "train")

  print(f"[demo] 1/3 corpus -> {corpus}", flush=True)
  build = build_corpus(corpus, args)

  print(f"[demo] 2/3 training the tiny GMM-VAE codec -> {workdir}", flush=True)
  cfg = config_lib.build_config(os.path.join(ROOT, "configs", "gmm_vae.py") + ":tiny", [
      f"--config.data.dir={corpus}", f"--config.train.steps={args.steps}",
      f"--config.train.seed={args.seed}", "--config.train.eval_every_steps=500",
      "--config.train.sample_every_steps=500", "--config.checkpoint.every_steps=250",
      "--config.discriminator.enabled=False"])  # mel + prior only: fits the 15-minute budget
  t0 = time.perf_counter()
  result = loop.train(cfg, workdir)
  train_seconds = time.perf_counter() - t0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [r for r in map(json.loads, f) if "loss" in r]  # training lines, not eval
  rates = [r["train/steps_per_sec"] for r in logged if "train/steps_per_sec" in r]

  print(f"[demo] 3/3 reconstructing held-out speakers -> {args.out}/reconstructions", flush=True)
  recon = reconstruct_held_out(workdir, corpus, os.path.join(args.out, "reconstructions"),
                               args.reconstructions)
  metrics = {
      "corpus": {**build, **corpus_stats(corpus)},
      "train": {"steps": result["step"], "wall_seconds": train_seconds,
                "steps_per_sec_median": float(np.median(rates)) if rates else None,
                "first_loss": logged[0]["loss"], "final_loss": logged[-1]["loss"],
                "final": result, "device": str(jax.devices()[0].platform)},
      "reconstruction_test_zero_shot": recon,
      "demo_wall_seconds": time.perf_counter() - t_start,
  }
  with open(os.path.join(args.out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1, sort_keys=True)
  print(json.dumps({"demo_wall_seconds": round(metrics["demo_wall_seconds"], 1),
                    "train_steps_per_sec": metrics["train"]["steps_per_sec_median"],
                    "first_loss": metrics["train"]["first_loss"],
                    "final_loss": metrics["train"]["final_loss"],
                    "held_out_mel_distance": recon["mean_mel_distance"],
                    "held_out_si_sdr_db": recon["mean_si_sdr_db"]}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
