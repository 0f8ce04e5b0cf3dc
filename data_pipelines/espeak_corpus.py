"""The embedded offline corpus: English sentences from a seeded grammar, spoken by espeak-ng.

    jaxtts-corpus --out DIR [--speakers 12] [--zero-shot-speakers 3]
                  [--utterances-per-speaker 40] [--valid-fraction 0.1] [--seed 0]
                  [--shard-size 256] [--workers 1] [--f0] [--overwrite]
    jaxtts-corpus derive f0 --data-dir DIR [--out DIR2] [--workers N]   (data_pipelines.derive)
    jaxtts-corpus librispeech|libritts|librilight --root DIR --out DIR ...  (real_corpus)

One module a step: `data_pipelines.espeak_grammar` writes the sentences,
`data_pipelines.espeak_plan` plans the speakers (espeak voice variants with accent, pitch and
rate), the utterances, splits and shards, and `data_pipelines.espeak_synth` turns one planned
utterance into one record (espeak synthesis, phoneme durations, ``--f0``'s F0). This module
runs the plan through worker processes and writes the shards, the manifest and the speaker
indexes (`build`), and is the CLI (`main`).

Determinism. Every random choice is drawn from ``--seed`` (numpy SeedSequences keyed by
speaker and utterance), `jaxtts.text.espeak.synthesize` is a pure function of its arguments
(a fresh library instance per call), and records are written in plan order whatever the number
of ``--workers``: the same arguments give byte-identical files. Output is written to a
temporary directory beside ``--out`` and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from typing import Sequence

from data_pipelines.espeak_plan import SPLITS, assign_shards, plan_speakers, plan_utterances
from data_pipelines.espeak_plan import shard_name
from data_pipelines.espeak_synth import HOP_LENGTH, SAMPLE_RATE, synthesize_task
from jaxtts.audio import f0 as f0_lib
from jaxtts.data import features, records
from jaxtts.data.source import write_speaker_index
from jaxtts.text import default_phoneme_table, espeak

log = logging.getLogger("jaxtts.espeak_corpus")

FORMAT_VERSION = 1
TASK_SIZE = 32          # utterances per worker task


def _ordered_results(tasks: list, workers: int):
  """Yields task results in task order (``workers`` processes, at most ~4 x workers tasks in
  flight). Synthesis is a pure function of its arguments, so this order is all that
  determinism needs."""
  if workers == 1:
    for task in tasks:
      yield synthesize_task(task)[1]
    return
  # spawn: safe whatever threads the parent runs (JAX, tqdm); workers start once.
  ctx = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
    pending: dict[int, concurrent.futures.Future] = {}
    nxt = 0
    for i in range(len(tasks)):
      while nxt < len(tasks) and nxt < i + 4 * workers:
        pending[nxt] = ex.submit(synthesize_task, tasks[nxt])
        nxt += 1
      yield pending.pop(i).result()[1]


def build(out_dir: str, *, speakers: int = 12, zero_shot_speakers: int = 3,
          utterances_per_speaker: int = 40, valid_fraction: float = 0.1, seed: int = 0,
          shard_size: int = 256, workers: int = 1, overwrite: bool = False,
          progress: bool = True, f0: bool = False) -> dict:
  """Builds the corpus into ``out_dir``; returns the summary dict (also printed by `main`).

  ``f0`` also stores per-frame ``f0`` / ``voiced`` (`data_pipelines.espeak_synth`).
  """
  from array_record.python.array_record_module import ArrayRecordWriter
  from tqdm import tqdm

  t0 = time.time()
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not overwrite and (not os.path.isdir(out_dir)
                                                    or os.listdir(out_dir)):
    raise FileExistsError(f"{out_dir} exists and is not empty (pass --overwrite)")
  if workers < 1:
    raise ValueError(f"--workers must be >= 1, got {workers}")
  if seed < 0:
    raise ValueError(f"--seed must be >= 0, got {seed}")
  table = default_phoneme_table()
  spks = plan_speakers(speakers, zero_shot_speakers, seed)
  utts = plan_utterances(spks, utterances_per_speaker, valid_fraction, seed, table)
  utts, num_shards = assign_shards(utts, shard_size, seed)
  table_json = table.to_json()
  tasks = [(k, utts[i:i + TASK_SIZE], table_json, bool(f0)) for k, i in
           enumerate(range(0, len(utts), TASK_SIZE))]

  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  counts = {s: 0 for s in SPLITS}
  samples = {s: 0 for s in SPLITS}
  skipped = {s: 0 for s in SPLITS}
  try:
    writers = {(s, i): ArrayRecordWriter(os.path.join(tmp, shard_name(s, i, num_shards[s])),
                                         records.WRITER_OPTIONS)
               for s in SPLITS for i in range(num_shards[s])}
    bar = tqdm(total=len(utts), desc="espeak corpus", unit="utt", disable=not progress,
               file=sys.stderr)
    for results in _ordered_results(tasks, workers):
      for r in results:
        if r[0] == "skip":
          _, split, _, uid, reason = r
          skipped[split] += 1
          log.warning("skipped %s: %s", uid, reason)
        else:
          _, split, shard, data, n = r
          writers[(split, shard)].write(data)
          counts[split] += 1
          samples[split] += n
      bar.update(len(results))
    bar.close()
    for w in writers.values():
      w.close()

    speaker_ids = {"train": [s.id for s in spks if s.split == "train"],
                   "valid": [s.id for s in spks if s.split == "train"],
                   "test_zero_shot": [s.id for s in spks if s.split == "test_zero_shot"]}
    manifest = {
        "format_version": FORMAT_VERSION,
        "builder": "espeak",
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "hop_length": HOP_LENGTH,
        "phoneme_table": table_json,
        "speakers": [s.to_json() for s in spks],
        "splits": {s: {"shards": [shard_name(s, i, num_shards[s]) for i in range(num_shards[s])],
                       "num_examples": counts[s],
                       "num_skipped": skipped[s],
                       "hours": round(samples[s] / SAMPLE_RATE / 3600, 6),
                       "speaker_ids": speaker_ids[s]} for s in SPLITS},
        "build_args": {"speakers": speakers, "zero_shot_speakers": zero_shot_speakers,
                       "utterances_per_speaker": utterances_per_speaker,
                       "valid_fraction": valid_fraction, "seed": seed,
                       "shard_size": shard_size, "espeak_ng": espeak.version(),
                       "f0": bool(f0)},
    }
    specs = features.f0_specs(HOP_LENGTH, SAMPLE_RATE, f0_lib.settings()) if f0 else {}
    manifest = features.with_features(manifest, specs)
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
      json.dump(manifest, f, sort_keys=True, indent=1)
      f.write("\n")
    # <split>.speaker_index.npy: class-balanced sampling reads it instead of every record.
    write_speaker_index(tmp, [s for s in SPLITS if counts[s]])  # e.g. no zero-shot speakers
    if os.path.exists(out_dir):
      old = out_dir + f".old-{os.getpid()}"
      os.rename(out_dir, old)
      os.rename(tmp, out_dir)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  total_skipped = sum(skipped.values())
  if total_skipped:
    log.warning("skipped %d utterances whose espeak events did not match the G2P: %s",
                total_skipped, skipped)
  size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
  return {"out": out_dir,
          "examples": counts,
          "hours": {s: round(samples[s] / SAMPLE_RATE / 3600, 4) for s in SPLITS},
          "skipped": skipped,
          "bytes": size,
          "seconds": round(time.time() - t0, 2)}



def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["derive"]:  # `jaxtts-corpus derive f0 ...`: add fields to a corpus
    from data_pipelines import derive  # pylint: disable=import-outside-toplevel
    return derive.main(argv[1:])
  if argv[:1] and argv[0] in ("librispeech", "libritts", "librilight"):  # real corpora
    from data_pipelines import real_corpus  # pylint: disable=import-outside-toplevel
    return real_corpus.main(argv)
  p = argparse.ArgumentParser(prog="jaxtts-corpus", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="jaxtts-corpus derive f0 --data-dir DIR [--out DIR2]: add "
                              "per-frame f0 / voiced to an existing corpus (see "
                              "`jaxtts-corpus derive --help`); jaxtts-corpus "
                              "librispeech|libritts|librilight --root DIR --out DIR ...: a real "
                              "corpus (see `jaxtts-corpus librispeech --help`)")
  p.add_argument("--out", required=True, help="output directory (created atomically)")
  p.add_argument("--speakers", type=int, default=12, help="training speakers (default 12)")
  p.add_argument("--zero-shot-speakers", type=int, default=3,
                 help="held-out speakers for test_zero_shot (default 3)")
  p.add_argument("--utterances-per-speaker", type=int, default=40)
  p.add_argument("--valid-fraction", type=float, default=0.1,
                 help="fraction of each training speaker's utterances that go to valid")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--shard-size", type=int, default=256, help="records per shard")
  p.add_argument("--workers", type=int, default=1, help="processes (output does not depend "
                 "on it)")
  p.add_argument("--f0", action="store_true", help="also store per-frame f0 / voiced (WORLD "
                 "DIO + StoneMask; adds ~7 ms per second of audio)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  summary = build(args.out, speakers=args.speakers, zero_shot_speakers=args.zero_shot_speakers,
                  utterances_per_speaker=args.utterances_per_speaker,
                  valid_fraction=args.valid_fraction, seed=args.seed,
                  shard_size=args.shard_size, workers=args.workers, overwrite=args.overwrite,
                  progress=not args.no_progress, f0=args.f0)
  print(json.dumps(summary, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
