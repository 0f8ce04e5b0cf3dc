"""The CPU quality recipe (`make quality`): how far the chain gets in about 2 hours on 2 cores.

    python -m launch.quality --out runs/quality [--codec-seconds S] [--lm-seconds S]

Stages (each resumes: a finished stage's figures are kept in OUT/quality.json and it is
skipped; an unfinished training resumes from its checkpoints):

  1. corpus     a larger espeak corpus (24 training speakers x 120 utterances, 4 held out)
  2. codec      the `make demo` codec recipe (`launch.demo.CODEC_OVERRIDES`) for longer:
                `--codec-seconds` of training on this machine (a 40-step calibration run
                measures the step rate; the step count it gives is kept in quality.json, so
                a rerun trains to the same step)
  3. codec_eval `jaxtts-eval codec` on the held-out speakers, with Whisper's WER of the
                resynthesis beside the recordings'
  4. latents    `jaxtts-codec encode-dataset`
  5. gmm_lm     the tiny GMM-LM for `--lm-seconds`, planned the same way
  6. zero_shot  `jaxtts-eval zero-shot` with 3 s and 8 s prompts
  7. durations  `benchmarks/gmm_lm_free_running.py`: free-running frames per phoneme

and prints the table of `TARGETS` (issue 12's) against what was reached, also written to
OUT/quality.md. The README quotes one run of it ("What the CPU recipe reaches"); nothing in
the tests depends on these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import jax

from benchmarks import gmm_lm_free_running
from jaxtts.codec import cli as codec_cli
from jaxtts.eval.codec_eval import evaluate_codec
from jaxtts.eval.zero_shot import evaluate_zero_shot
from jaxtts.files import write_json
from launch import demo

# (name, how it is read off the stages, target, how it is compared)
TARGETS = (
    ("codec WER - ground-truth WER (points)", "codec_wer_gap", 3.0, "<="),
    ("codec STOI", "codec_stoi", 0.92, ">="),
    ("codec PESQ-wb", "codec_pesq_wb", 3.0, ">="),
    ("codec ViSQOL", "codec_visqol", 3.5, ">="),
    ("GMM-LM WER - ground-truth WER (points)", "lm_wer_gap", 15.0, "<="),
    ("GMM-LM SIM / ground-truth SIM", "lm_sim_ratio", 0.85, ">="),
    ("|free-running / recorded frames per phoneme - 1|", "duration_error", 0.15, "<="),
)


def _stage(state: dict, path: str, name: str, fn):
  if name in state:
    print(f"[quality] {name}: done before, kept", flush=True)
    return state[name]
  print(f"[quality] {name} ...", flush=True)
  t0 = time.perf_counter()
  result = fn()
  state[name] = {**result, "stage_seconds": time.perf_counter() - t0}
  write_json(path, state)
  return state[name]


CALIBRATION_STEPS = 40


def plan_steps(state: dict, path: str, name: str, config: str, overrides, seconds: float,
               scratch: str) -> int:
  """Train steps that fill ``seconds`` on this machine: a `CALIBRATION_STEPS` run of the
  stage's config in ``scratch`` measures the median step rate (compilation excluded by the
  trainer's rate meter); the plan is stored in ``state[name + '_plan']`` and reused."""
  key = f"{name}_plan"
  if key not in state:
    rate = demo.train_stage(config, list(overrides(CALIBRATION_STEPS)),
                            scratch)["steps_per_sec_median"]
    state[key] = {"steps_per_sec": rate, "seconds": seconds,
                  "steps": max(CALIBRATION_STEPS, int(seconds * rate))}
    write_json(path, state)
    shutil.rmtree(scratch, ignore_errors=True)
  print(f"[quality] {name}: {state[key]['steps']} steps "
        f"({state[key]['steps_per_sec']:.2f} steps/s x {seconds:.0f} s)", flush=True)
  return int(state[key]["steps"])


def figures(state: dict) -> dict:
  """The `TARGETS` figures from the stages' results (None where a stage has not run)."""
  out = {}
  codec = {r["metric"]: r["mean"] for r in state.get("codec_eval", {}).get("table", [])}
  if codec:
    out["codec_wer_gap"] = 100.0 * (codec["wer"] - codec["wer_ground_truth"])
    out.update({f"codec_{k}": codec.get(k) for k in ("stoi", "pesq_wb", "visqol")})
  rows = {r["system"]: r for r in state.get("zero_shot", {}).get("table", [])
          if r.get("prompt") == "3 s"}
  if "generated" in rows and "gt" in rows:
    out["lm_wer_gap"] = rows["generated"]["wer"] - rows["gt"]["wer"]
    if rows["gt"].get("sim_prompt"):
      out["lm_sim_ratio"] = rows["generated"]["sim_prompt"] / rows["gt"]["sim_prompt"]
  durations = state.get("durations")
  if durations:
    out["duration_error"] = abs(durations["length_ratio"] - 1.0)
  return out


def table(state: dict) -> str:
  got = figures(state)
  lines = ["| figure | target | reached | met |", "|---|---|---|---|"]
  for label, key, target, op in TARGETS:
    value = got.get(key)
    met = "-" if value is None else (
        "yes" if (value <= target if op == "<=" else value >= target) else "no")
    shown = "-" if value is None else f"{value:.3f}"
    lines.append(f"| {label} | {op} {target} | {shown} | {met} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="runs/quality")
  parser.add_argument("--speakers", type=int, default=24)
  parser.add_argument("--zero-shot-speakers", type=int, default=4)
  parser.add_argument("--utterances-per-speaker", type=int, default=120)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--codec-seconds", type=float, default=2100.0,
                      help="codec training time on this machine")
  parser.add_argument("--lm-seconds", type=float, default=900.0,
                      help="GMM-LM training time on this machine")
  parser.add_argument("--eval-utterances", type=int, default=16)
  args = parser.parse_args(argv)
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  corpus, codec_dir = os.path.join(out, "corpus"), os.path.join(out, "codec")
  latents, lm_dir = os.path.join(out, "latents"), os.path.join(out, "gmm_lm")
  path = os.path.join(out, "quality.json")
  state = json.load(open(path)) if os.path.exists(path) else {}
  state["device"] = str(jax.devices()[0].platform)

  _stage(state, path, "corpus", lambda: {**demo.build_corpus(corpus, args),
                                         **demo.corpus_stats(corpus)})
  codec_overrides = lambda steps: demo.codec_overrides(corpus, steps, args.seed)  # noqa: E731
  codec_steps = plan_steps(state, path, "codec", demo.CODEC_CONFIG, codec_overrides,
                           args.codec_seconds, os.path.join(out, "calibration_codec"))
  _stage(state, path, "codec", lambda: demo.train_stage(
      demo.CODEC_CONFIG, codec_overrides(codec_steps), codec_dir))
  _stage(state, path, "codec_eval", lambda: _strip(evaluate_codec(
      codec_dir, limit=args.eval_utterances, out_dir=os.path.join(out, "codec_eval"),
      progress=False)))

  def encode():
    codec_cli.main(["encode-dataset", "--workdir", codec_dir, "--data-dir", corpus,
                    "--out", latents])
    return {}
  _stage(state, path, "latents", encode)
  lm_overrides = lambda steps: demo.lm_overrides(latents, steps, args.seed)  # noqa: E731
  lm_steps = plan_steps(state, path, "gmm_lm", "gmm_lm.py:tiny", lm_overrides,
                        args.lm_seconds, os.path.join(out, "calibration_gmm_lm"))
  _stage(state, path, "gmm_lm", lambda: demo.train_stage(
      "gmm_lm.py:tiny", lm_overrides(lm_steps), lm_dir))
  _stage(state, path, "zero_shot", lambda: _strip(evaluate_zero_shot(
      lm_dir, split="test_zero_shot", prompt_seconds=(3, 8), limit=args.eval_utterances,
      out_dir=os.path.join(out, "zero_shot_eval"), seed=args.seed, max_seconds=12.0)))
  _stage(state, path, "durations", lambda: gmm_lm_free_running.measure(
      lm_dir, corpus, count=args.eval_utterances, seed=args.seed, max_seconds=12.0))
  state["figures"] = figures(state)
  write_json(path, state)
  text = table(state)
  with open(os.path.join(out, "quality.md"), "w") as f:
    f.write(text)
  print(json.dumps(state["figures"]))
  print(text)
  return 0


def _strip(report: dict) -> dict:
  """A report's figures without its per-utterance rows and markdown (kept in its own dir)."""
  return {k: v for k, v in report.items() if k not in ("rows", "markdown", "failures")}


if __name__ == "__main__":
  raise SystemExit(main())
