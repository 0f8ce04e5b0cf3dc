"""Exposure bias of a trained GMM-LM: how its hard alignment moves on its own frames.

Synthesizes held-out texts from §5.1 prompts and compares, per target phoneme, the frames the
free-running decoder spends (``durations`` of the GMM-LM generator) with the ground-truth durations
of the same texts (the corpus' per-phoneme frame counts). A model that has learnt to align on
real frames but not on its own advances too fast (ratio < 1) or stalls (ratio > 1, stopped by
the length guard). Prints one JSON line.

    python benchmarks/gmm_lm_free_running.py --workdir runs/demo/gmm_lm \
        --corpus runs/demo/corpus --count 8 [--stay-mode st_gumbel] [--scale-temperature 0.8]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxtts.infer import prompts as prompts_lib  # pylint: disable=wrong-import-position
from jaxtts.data.source import CorpusSource  # pylint: disable=wrong-import-position
from jaxtts.infer.registry import load_generator  # pylint: disable=wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="trained gmm_lm workdir")
  p.add_argument("--corpus", required=True, help="corpus (or latent corpus) with durations")
  p.add_argument("--split", default="test_zero_shot")
  p.add_argument("--prompt-seconds", type=float, default=3.0)
  p.add_argument("--count", type=int, default=8)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--stay-mode", default=None)
  p.add_argument("--scale-temperature", type=float, default=None)
  p.add_argument("--max-seconds", type=float, default=8.0)
  args = p.parse_args(argv)
  print(json.dumps(measure(args.workdir, args.corpus, split=args.split,
                           prompt_seconds=args.prompt_seconds, count=args.count, seed=args.seed,
                           stay_mode=args.stay_mode, scale_temperature=args.scale_temperature,
                           max_seconds=args.max_seconds)))
  return 0


def measure(workdir: str, corpus: str, *, split: str = "test_zero_shot",
            prompt_seconds: float = 3.0, count: int = 8, seed: int = 0,
            stay_mode: str | None = None, scale_temperature: float | None = None,
            max_seconds: float = 8.0) -> dict:
  """The figures `main` prints: generated against recorded frames per phoneme."""
  synth = load_generator(workdir)
  items = prompts_lib.build_prompts(corpus, split, seconds=(prompt_seconds,),
                                    seed=seed)[:count]
  source = CorpusSource(corpus, split)
  truth = {}
  for i in range(len(source)):
    ex = source.example(i)
    truth[ex["id"]] = np.asarray(ex["durations"]) * source.hop_length / synth.hop
  rows, stops = [], collections.Counter()
  for k, item in enumerate(items):
    out = synth.synthesize(
        {"text": item["text"], "prompt_audio": item["prompt_audio"].astype(np.float32) / 32768.0,
         "prompt_phonemes": item["prompt_phonemes"], "target_phonemes": item["phonemes"]},
        seed=seed + k, options={"max_seconds": max_seconds, "stay_mode": stay_mode,
                                "scale_temperature": scale_temperature})
    gen, ref = np.asarray(out["durations"], float), truth[item["target_id"]]
    stops[out["stopped_by"]] += 1
    rows.append({"id": item["id"], "generated_frames": float(gen.sum()),
                 "ground_truth_frames": float(ref.sum()),
                 "phonemes_visited": float(np.mean(gen > 0)), "stopped_by": out["stopped_by"]})
  gen_total = sum(r["generated_frames"] for r in rows)
  ref_total = sum(r["ground_truth_frames"] for r in rows)
  phonemes = sum(len(it["phonemes"]) for it in items)
  return {
      "workdir": workdir, "utterances": len(rows),
      "generated_frames_per_phoneme": gen_total / max(phonemes, 1),
      "ground_truth_frames_per_phoneme": ref_total / max(phonemes, 1),
      "length_ratio": gen_total / max(ref_total, 1e-9),
      "phonemes_visited": float(np.mean([r["phonemes_visited"] for r in rows])),
      "stopped_by": dict(stops), "rows": rows}


if __name__ == "__main__":
  sys.exit(main())
