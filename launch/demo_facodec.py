"""`make demo FAMILY=facodec`: FACodec on CPU in under 15 minutes: the embedded espeak corpus
with F0 -> a small FACodec (`configs/facodec.py:espeak`: STFT encoder, Vocos head, the paper's
six FVQ codebooks, supervision and gradient-reversal heads) -> held-out reconstructions,
zero-shot voice conversion between held-out speakers, and the disentanglement probes.

    python -m launch.demo --family facodec --out runs/demo_facodec [--steps N]

Writes into OUT:
  corpus/     the espeak corpus with f0 / voiced per 200-sample frame
  train/      the FACodec training workdir (config.json, params.json with counts per part,
              checkpoints/, tensorboard/: losses, accuracies, code usage, audio, VC samples)
  eval/       `jaxtts-eval codec` of the held-out speakers: report.md / report.json with the
              reconstruction table (mel / STFT distance, SI-SDR, PESQ, STOI, MCD, Whisper
              WER beside the recordings'), the VC table (SIM to prompt and to source, WER)
              and the probe table; audio/ and plots/ (reconstructions), vc/ (conversions)
  metrics.json
Rerunning resumes training from its checkpoints (the corpus is rebuilt only if absent).
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax

from jaxtts.eval.codec_eval import evaluate_codec
from jaxtts.train import config as config_lib
from jaxtts.train import loop
from launch.demo import build_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "facodec.py:espeak"
METRICS = ("mel_distance", "stft_distance", "si_sdr", "pesq_wb", "stoi", "mcd")


def run(args) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  t_start = time.perf_counter()
  out = os.path.abspath(args.out)
  corpus, workdir = os.path.join(out, "corpus"), os.path.join(out, "train")
  metrics: dict = {}
  print(f"[demo facodec] 1/3 corpus with F0 -> {corpus}", flush=True)
  metrics["corpus"] = build_corpus(corpus, args)

  print(f"[demo facodec] 2/3 training FACodec ({CONFIG}) -> {workdir}", flush=True)
  cfg = config_lib.build_config(os.path.join(ROOT, "configs", CONFIG), [
      f"--config.data.dir={corpus}", f"--config.train.steps={args.steps}",
      f"--config.train.seed={args.seed}", "--config.train.eval_every_steps=500",
      "--config.train.sample_every_steps=1000",
      "--config.eval.sample_metrics=('mel_distance',)",
      *[f"--config.{kv}" for kv in args.facodec_set]])
  t0 = time.perf_counter()
  result = loop.train(cfg, workdir)
  metrics["train"] = {"steps": result["step"], "wall_seconds": time.perf_counter() - t0,
                      "final": result}

  print(f"[demo facodec] 3/3 reconstruction, voice conversion and probes -> {out}/eval",
        flush=True)
  report = evaluate_codec(workdir, split="test_zero_shot", limit=args.eval_utterances,
                          out_dir=os.path.join(out, "eval"), metrics=METRICS,
                          vc_pairs=args.vc_pairs, probe_utterances=args.probe_utterances,
                          plots=args.eval_utterances)
  metrics["eval"] = {k: report.get(k) for k in ("table", "vc_table", "probe_table",
                                                "wall_seconds")}
  metrics["device"] = str(jax.devices()[0].platform)
  metrics["demo_wall_seconds"] = time.perf_counter() - t_start
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1, sort_keys=True)
  print(report["markdown"])
  print(json.dumps({"demo_wall_seconds": round(metrics["demo_wall_seconds"], 1),
                    "train_steps": result["step"]}))
  return 0


def add_arguments(parser) -> None:
  """The FACodec demo's own flags (beside launch/demo.py's corpus, seed and
  ``--eval-utterances`` flags, which it shares)."""
  parser.add_argument("--steps", type=int, default=2000, help="FACodec training steps")
  parser.add_argument("--facodec-set", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override for FACodec's training (model.excitation=True)")
  parser.add_argument("--vc-pairs", type=int, default=8)
  parser.add_argument("--probe-utterances", type=int, default=120)
