"""`make demo FAMILY=ns3`: NaturalSpeech 3 on CPU in under 15 minutes: the embedded espeak
corpus with F0 -> a small FACodec (`configs/facodec.py:espeak`) -> FACodec code shards with
phone durations and phone-level prosody codes -> a small NS3 (`configs/ns3.py:espeak`: phoneme
encoder, phone-level prosody and duration diffusion, frame-level diffusion over the 6 code
layers) -> zero-shot synthesis for held-out speakers -> `jaxtts-eval zero-shot`.

    python -m launch.demo --family ns3 --out runs/demo_ns3 [--facodec-steps N] [--ns3-steps N]

Writes into OUT:
  corpus/     the espeak corpus with f0 / voiced per 200-sample frame
  facodec/    the FACodec training workdir
  codes/      `jaxtts-codec encode-dataset` shards: codes [F, 6], timbre, phone_prosody_codes
  ns3/        the NS3 training workdir (samples/: generated codes and audio, durations)
  zero_shot/  held-out speakers' texts from 3 s prompts: <id>.wav, <id>.prompt.wav,
              <id>.alignment.png (the generated durations)
  eval/       `jaxtts-eval zero-shot` of the NS3 workdir: report.json, report.md (WER, SIM,
              DNSMOS of generated speech beside ground truth and FACodec resynthesis, the same
              columns as the GMM-LM demo's report), plots/, audio/
  metrics.json
Rerunning resumes each training from its checkpoints (the corpus is rebuilt only if absent).
Expect unintelligible speech: the CPU FACodec is not intelligible yet (issue 13), and NS3
generates its codes.
"""

from __future__ import annotations

import json
import logging
import os
import time

from jaxtts.codec import cli as codec_cli
from launch.demo import build_corpus, corpus_stats, eval_summary, train_stage, zero_shot_and_eval

FACODEC_CONFIG = "facodec.py:espeak"
NS3_CONFIG = "ns3.py:espeak"


def run(args) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  t_start = time.perf_counter()
  out = os.path.abspath(args.out)  # workdir configs name their data by absolute path
  corpus, facodec_dir = os.path.join(out, "corpus"), os.path.join(out, "facodec")
  codes, ns3_dir = os.path.join(out, "codes"), os.path.join(out, "ns3")
  metrics: dict = {}
  print(f"[demo ns3] 1/6 corpus with F0 -> {corpus}", flush=True)
  metrics["corpus"] = {**build_corpus(corpus, args), **corpus_stats(corpus)}

  print(f"[demo ns3] 2/6 training FACodec ({FACODEC_CONFIG}) -> {facodec_dir}", flush=True)
  metrics["facodec_train"] = train_stage(FACODEC_CONFIG, [
      f"--config.data.dir={corpus}", f"--config.train.steps={args.facodec_steps}",
      f"--config.train.seed={args.seed}", "--config.train.eval_every_steps=0",
      "--config.train.sample_every_steps=0",
      f"--config.checkpoint.every_steps={args.facodec_steps}"], facodec_dir)

  print(f"[demo ns3] 3/6 encoding the corpus to FACodec code shards -> {codes}", flush=True)
  t0 = time.perf_counter()
  if not os.path.exists(os.path.join(codes, "manifest.json")):
    codec_cli.main(["encode-dataset", "--workdir", facodec_dir, "--data-dir", corpus,
                    "--out", codes])
  metrics["encode_dataset_seconds"] = time.perf_counter() - t0

  print(f"[demo ns3] 4/6 training NS3 ({NS3_CONFIG}) -> {ns3_dir}", flush=True)
  metrics["ns3_train"] = train_stage(NS3_CONFIG, [
      f"--config.data.dir={codes}", f"--config.train.steps={args.ns3_steps}",
      f"--config.train.seed={args.seed}", "--config.data.eval_split=test_zero_shot",
      f"--config.train.sample_every_steps={args.ns3_steps}",
      f"--config.train.eval_every_steps={args.ns3_steps}",
      f"--config.checkpoint.every_steps={args.ns3_steps}"], ns3_dir)

  report = zero_shot_and_eval(ns3_dir, corpus, out, args, metrics, t_start, 2.75,
                              "demo ns3", "5/6,6/6")
  print(report["markdown"])
  print(json.dumps({"demo_wall_seconds": round(metrics["demo_wall_seconds"], 1),
                    "facodec_final_loss": metrics["facodec_train"]["final_loss"],
                    "ns3_first_loss": metrics["ns3_train"]["first_loss"],
                    "ns3_final_loss": metrics["ns3_train"]["final_loss"],
                    **eval_summary(report)}))
  return 0


def add_arguments(parser) -> None:
  """The NS3 demo's own flags (beside launch/demo.py's corpus, seed, ``--zero-shot`` and
  ``--eval-utterances`` flags, which it shares)."""
  parser.add_argument("--facodec-steps", type=int, default=1000, help="FACodec training steps")
  parser.add_argument("--ns3-steps", type=int, default=800, help="NS3 training steps")
