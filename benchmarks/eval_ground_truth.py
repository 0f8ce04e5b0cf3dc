"""The evaluation floor of a corpus: `jaxtts-eval score` on its ground-truth recordings.

Writes a scoring manifest of a split's recordings (each row's ``prompt_wav`` another recording,
from the same speaker in group ``same_speaker`` and from a different speaker in group
``cross_speaker``), scores it with the same code as ``jaxtts-eval score`` and prints one JSON
line: the ASR's WER/CER on real speech (no TTS system can be judged below it with this ASR)
and mean SIM for same- vs cross-speaker pairs (what the speaker encoder can separate).

    python benchmarks/eval_ground_truth.py --corpus runs/demo/corpus --split test_zero_shot \
        --per-speaker 10 --out /tmp/gt_eval
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxtts.audio.io import save_wav  # pylint: disable=wrong-import-position
from jaxtts.data.source import CorpusSource  # pylint: disable=wrong-import-position
from jaxtts.eval.score import Scorer, score_manifest  # pylint: disable=wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--corpus", required=True)
  p.add_argument("--split", default="test_zero_shot")
  p.add_argument("--per-speaker", type=int, default=10, help="utterances per speaker")
  p.add_argument("--out", required=True)
  p.add_argument("--asr-model", default="base")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  source = CorpusSource(args.corpus, args.split)
  by_speaker: dict[int, list[int]] = {}
  for i, spk in enumerate(source.record_speaker_ids()):
    by_speaker.setdefault(int(spk), []).append(i)
  if len(by_speaker) < 2:
    raise SystemExit(f"{args.split}: cross-speaker pairs need two speakers, "
                     f"found {len(by_speaker)}")
  os.makedirs(os.path.join(args.out, "wav"), exist_ok=True)
  rng = np.random.default_rng(args.seed)
  chosen = {s: idx[:args.per_speaker] for s, idx in by_speaker.items()}
  paths = {}
  for idx in chosen.values():
    for i in idx:
      ex = source.example(i)
      paths[i] = os.path.join(args.out, "wav", f"{ex['id']}.wav")
      save_wav(paths[i], ex["audio"], ex["sample_rate"])
  rows = []
  speakers = sorted(chosen)
  for s in speakers:
    for n, i in enumerate(chosen[s]):
      ex = source.example(i)
      same = chosen[s][(n + 1) % len(chosen[s])]
      other = chosen[speakers[(speakers.index(s) + 1 + rng.integers(len(speakers) - 1))
                              % len(speakers)]]
      cross = other[int(rng.integers(len(other)))]
      for group, prompt in (("same_speaker", same), ("cross_speaker", cross)):
        rows.append({"id": f"{ex['id']}-{group}", "wav": paths[i], "text": ex["text"],
                     "prompt_wav": paths[prompt], "group": group})
  manifest = os.path.join(args.out, "ground_truth.jsonl")
  with open(manifest, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  report = score_manifest(manifest, os.path.join(args.out, "report"),
                          scorer=Scorer(args.asr_model, "ge2e", None, mos=True))
  table = {r["system"]: r for r in report["table"]}
  print(json.dumps({
      "corpus": os.path.abspath(args.corpus), "split": args.split,
      "speakers": len(speakers), "utterances": len(paths), "asr_model": args.asr_model,
      "ground_truth_wer_percent": table["same_speaker"].get("wer"),
      "ground_truth_cer_percent": table["same_speaker"].get("cer"),
      "sim_same_speaker": table["same_speaker"].get("sim_prompt"),
      "sim_cross_speaker": table["cross_speaker"].get("sim_prompt"),
      "dnsmos_ovrl": table["same_speaker"].get("dnsmos_ovrl"),
      "num_failed": report["num_failed"], "report": report["out_dir"]}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
