"""`make demo FAMILY=clone`: CLONE on CPU in under 15 minutes: the embedded espeak corpus ->
a small CLONE (`configs/clone.py:espeak`: text encoder, prosody predictor, phoneme-level
posterior and flow prior, duration predictor, acoustic and posterior wave encoders, Vocos
decoder, our reference encoder) -> zero-shot synthesis for held-out speakers from their
prompts' voices -> `jaxtts-eval zero-shot`. No codec: CLONE is end to end.

    python -m launch.demo --family clone --out runs/demo_clone [--clone-steps N]

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

import jax

from jaxtts.eval.zero_shot import evaluate_zero_shot
from launch.demo import corpus_stats, train_stage, zero_shot
from launch.demo_facodec import build_corpus

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
      f"--config.checkpoint.every_steps={steps}"], clone_dir)

  print(f"[demo clone] 3/4 zero-shot synthesis for held-out speakers -> {out}/zero_shot",
        flush=True)
  metrics["zero_shot"] = zero_shot(clone_dir, corpus, os.path.join(out, "zero_shot"),
                                   args.zero_shot, args.seed)

  print(f"[demo clone] 4/4 jaxtts-eval zero-shot -> {out}/eval", flush=True)
  report = evaluate_zero_shot(clone_dir, split="test_zero_shot", prompt_seconds=(3,),
                              limit=args.eval_utterances, out_dir=os.path.join(out, "eval"),
                              seed=args.seed, max_seconds=6.0)
  metrics["zero_shot_eval"] = {"table": report["table"], "num_failed": report["num_failed"],
                               "wall_seconds": report["wall_seconds"]}
  metrics["device"] = str(jax.devices()[0].platform)
  metrics["demo_wall_seconds"] = time.perf_counter() - t_start
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1, sort_keys=True)
  print(report["markdown"])
  print(json.dumps({"demo_wall_seconds": round(metrics["demo_wall_seconds"], 1),
                    "clone_first_loss": metrics["clone_train"]["first_loss"],
                    "clone_final_loss": metrics["clone_train"]["final_loss"],
                    **{f"eval_{r['system']}_{k}": r.get(k) for r in report["table"]
                       for k in ("wer", "sim_prompt", "dnsmos_ovrl")}}))
  return 0


def add_arguments(parser) -> None:
  """The CLONE demo's own flag (beside launch/demo.py's shared corpus and evaluation flags)."""
  parser.add_argument("--clone-steps", type=int, default=2000, help="CLONE training steps")
