"""Why the small codec does not learn: GMM-VAE variants trained for the same CPU time, each
scored on held-out speakers by `jaxtts-eval codec` (mel and STFT distance, PESQ, STOI, and
Whisper's WER of the resynthesis beside the recordings'). Prints one JSON line per variant
and writes OUT/sweep.json and OUT/curves.png (valid mel loss against training seconds).

    python -m benchmarks.codec_sweep --corpus runs/demo/corpus --out runs/codec_sweep \\
        [--seconds 360] [--variants dac_l50 vocos_l50 vocos_l1] [--eval-limit 12]

Every variant starts from the `make demo` codec (`configs/gmm_vae.py:tiny`, mel + prior, no
discriminators) and changes one thing (see `VARIANTS`): the decoder (DAC's transposed
convolutions or the Vocos head), λ of eq. 4 (per latent dimension), the latent size. The
number of steps is set for an equal budget: a 40-step run measures each variant's step rate,
and the same workdir is then resumed up to ``seconds x rate`` steps (train.steps may grow on
resume). Rerunning reuses finished variants. The latent statistics of the last training log
(``latent/var_mean`` against ``latent/rms`` and the responsibilities) show the scale-down
cheat: a deterministic encoder can shrink its deviations from a component mean, and a
decoder amplify them, so the prior term constrains only the scale.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from jaxtts.eval.codec_eval import evaluate_codec
from jaxtts.plots import figure, save_figure
from jaxtts.train import config as config_lib
from jaxtts.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALIBRATION_STEPS = 40
DEMO = ["--config.discriminator.enabled=False", "--config.train.eval_every_steps=100",
        "--config.train.sample_every_steps=100000", "--config.checkpoint.every_steps=100",
        "--config.eval.sample_metrics=('mel_distance',)"]
VOCOS = ["--config.model.decoder=vocos", "--config.model.vocos.dim=256",
         "--config.model.vocos.intermediate_dim=768", "--config.model.vocos.num_layers=6"]
LR_1E3 = ["--config.train.optimizers.generator.learning_rate=1e-3"]
CPU = VOCOS + LR_1E3 + ["--config.loss.prior_weight=0.1"]
VENC = ["--config.model.encoder=vocos"]
VENC_SMALL = VENC + ["--config.model.vocos_encoder.dim=128",
                     "--config.model.vocos_encoder.intermediate_dim=384",
                     "--config.model.vocos_encoder.num_layers=2"]
DAC_MEL = ["--config.loss.mel_window_lengths=(32,64,128,256,512,1024,2048)",
           "--config.loss.mel_bins=(5,10,20,40,80,160,320)"]
VARIANTS = {
    "dac_l50": [],                                              # the demo codec as it was
    "dac_l0.1": ["--config.loss.prior_weight=0.1"],
    # The tiny preset's learning rate (schedule-free 3e-3): the Vocos head does not learn.
    "vocos_l50_lr3e-3": VOCOS,
    "vocos_l0.1_lr3e-3": VOCOS + ["--config.loss.prior_weight=0.1"],
    "vocos_l50": VOCOS + LR_1E3,
    "vocos_l1": VOCOS + LR_1E3 + ["--config.loss.prior_weight=1.0"],
    "vocos_l0.1": VOCOS + LR_1E3 + ["--config.loss.prior_weight=0.1"],
    "vocos_l0.1_d64": VOCOS + LR_1E3 + ["--config.loss.prior_weight=0.1",
                                        "--config.model.latent_dim=64"],
    "dac_l0.1_lr1e-3": LR_1E3 + ["--config.loss.prior_weight=0.1"],
    # Session 2 (the `cpu` preset = vocos_l0.1): the STFT encoder, DAC's seven mel scales.
    "cpu_venc": CPU + VENC,
    "cpu_dacmel": CPU + DAC_MEL,
    "cpu_venc_dacmel": CPU + VENC + DAC_MEL,
    "cpu_venc_d64": CPU + VENC + ["--config.model.latent_dim=64"],
    "cpu_venc_small": CPU + VENC_SMALL,
    "cpu_venc_lr2e-3": VOCOS + VENC + ["--config.loss.prior_weight=0.1",
                                       "--config.train.optimizers.generator.learning_rate=2e-3"],
    # APNet's losses on the head's spectrum (jaxtts/audio/phase.py), on the small encoder.
    "cpu_venc_small_amp": CPU + VENC_SMALL + ["--config.loss.spectrum_amplitude_weight=15"],
    "cpu_venc_small_amp_phase": CPU + VENC_SMALL + ["--config.loss.spectrum_amplitude_weight=15",
                                                    "--config.loss.spectrum_phase_weight=5"],
}
METRICS = ("mel_distance", "stft_distance", "pesq_wb", "stoi")


def _log(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def train_variant(name: str, corpus: str, workdir: str, seconds: float, seed: int) -> dict:
  overrides = DEMO + VARIANTS[name] + [f"--config.data.dir={corpus}",
                                       f"--config.train.seed={seed}"]
  build = lambda steps: config_lib.build_config(  # noqa: E731
      os.path.join(ROOT, "configs", "gmm_vae.py:tiny"),
      overrides + [f"--config.train.steps={steps}"])
  t0 = time.perf_counter()
  loop.train(build(CALIBRATION_STEPS), workdir)
  rates = [r["train/steps_per_sec"] for r in _log(workdir) if "train/steps_per_sec" in r]
  rate = float(np.median(rates))
  steps = max(CALIBRATION_STEPS, int(seconds * rate))
  loop.train(build(steps), workdir)
  return {"steps": steps, "steps_per_sec": rate, "wall_seconds": time.perf_counter() - t0}


def summary(workdir: str) -> dict:
  log = _log(workdir)
  train = [r for r in log if "loss" in r]
  last = train[-1]
  out = {k.removeprefix("train/"): last[k] for k in last
         if k.startswith("train/latent/") or k in ("train/mel_loss", "train/prior_nll")}
  valid = [(r["step"], r["eval/mel_loss"]) for r in log if "eval/mel_loss" in r]
  out["eval_mel_loss"] = valid
  return out


def plot_curves(results: dict, path: str) -> None:
  fig = figure(figsize=(7, 4))
  ax = fig.add_subplot()
  for name, r in results.items():
    curve = r["latents"]["eval_mel_loss"]
    seconds = [s / r["train"]["steps_per_sec"] for s, _ in curve]
    values = [v for _, v in curve]
    ax.plot(seconds, values, marker="o", label=name)
  ax.set_xlabel("training seconds (2 CPU cores)")
  ax.set_ylabel("held-out (valid split) multi-scale mel L1")
  ax.legend()
  save_figure(fig, path)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--corpus", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--seconds", type=float, default=360.0, help="training budget per variant")
  parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
  parser.add_argument("--eval-limit", type=int, default=12)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  out = os.path.abspath(args.out)
  corpus = os.path.abspath(args.corpus)
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, "sweep.json")
  results = json.load(open(path)) if os.path.exists(path) else {}
  for name in args.variants:
    if name in results:
      continue
    workdir = os.path.join(out, name)
    train = train_variant(name, corpus, workdir, args.seconds, args.seed)
    report = evaluate_codec(workdir, limit=args.eval_limit, metrics=METRICS, plots=3,
                            progress=False)
    results[name] = {"overrides": VARIANTS[name], "train": train, "latents": summary(workdir),
                     "eval": {r["metric"]: r["mean"] for r in report["table"]}}
    print(json.dumps({"variant": name, **train, **results[name]["eval"],
                      "latent_var_mean": results[name]["latents"].get("latent/var_mean"),
                      "latent_rms": results[name]["latents"].get("latent/rms")}), flush=True)
    with open(path, "w") as f:
      json.dump(results, f, indent=1)
  for name in results:  # the logs' latest figures (also for variants of an earlier run)
    results[name]["latents"] = summary(os.path.join(out, name))
  with open(path, "w") as f:
    json.dump(results, f, indent=1)
  plot_curves(results, os.path.join(out, "curves.png"))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
