"""`make demo FAMILY=clone`: CLONE on CPU in under 15 minutes: the embedded espeak corpus ->
a small CLONE (`configs/clone.py:espeak`: text encoder, prosody predictor, phoneme-level
posterior and flow prior, duration predictor, acoustic and posterior wave encoders, Vocos
decoder, our reference encoder) -> zero-shot synthesis for held-out speakers from their
prompts' voices -> `jaxtts-eval zero-shot`. No codec: CLONE is end to end.

    python -m launch.demo --family clone --out runs/demo_clone [--clone-steps N]
        [--clone-set model.excitation=True ...]

Writes into OUT:
  corpus/     the espeak corpus (durations at hop 200)
  clone/      the training workdir (samples/: target, reconstruction through the posterior and
              synthesis from text with predicted prosody and durations; mel images; durations)
  zero_shot/  held-out speakers' texts with 3 s prompts' voices: <id>.wav, <id>.prompt.wav,
              <id>.alignment.png (the predicted durations)
  eval/       `jaxtts-eval zero-shot` of the CLONE workdir: report.json, report.md
  metrics.json
Rerunning resumes training from its checkpoints (the corpus is rebuilt only if absent).
"""

from __future__ import annotations

import json
import logging
import os
import time

from launch.demo import build_corpus, corpus_stats, eval_summary, train_stage, zero_shot_and_eval

CONFIG = "clone.py:espeak"


def run(args) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  t_start = time.perf_counter()
  out = os.path.abspath(args.out)  # workdir configs name their data by absolute path
  corpus, clone_dir = os.path.join(out, "corpus"), os.path.join(out, "clone")
  metrics: dict = {}
  print(f"[demo clone] 1/4 corpus -> {corpus}", flush=True)
  metrics["corpus"] = {**build_corpus(corpus, args), **corpus_stats(corpus)}

  print(f"[demo clone] 2/4 training CLONE ({CONFIG}) -> {clone_dir}", flush=True)
  steps = int(args.clone_steps)
  metrics["clone_train"] = train_stage(CONFIG, [
      f"--config.data.dir={corpus}", f"--config.train.steps={steps}",
      f"--config.train.seed={args.seed}", "--config.data.eval_split=test_zero_shot",
      f"--config.train.sample_every_steps={steps}", f"--config.train.eval_every_steps={steps}",
      f"--config.checkpoint.every_steps={steps}",
      *[f"--config.{kv}" for kv in args.clone_set]], clone_dir)

  report = zero_shot_and_eval(clone_dir, corpus, out, args, metrics, t_start, 6.0,
                              "demo clone", "3/4,4/4")
  print(report["markdown"])
  print(json.dumps({"demo_wall_seconds": round(metrics["demo_wall_seconds"], 1),
                    "clone_first_loss": metrics["clone_train"]["first_loss"],
                    "clone_final_loss": metrics["clone_train"]["final_loss"],
                    **eval_summary(report)}))
  return 0


def add_arguments(parser) -> None:
  """The CLONE demo's own flag (beside launch/demo.py's shared corpus and evaluation flags)."""
  parser.add_argument("--clone-steps", type=int, default=2000, help="CLONE training steps")
  parser.add_argument("--clone-set", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override for CLONE's training (e.g. model.excitation=True)")
