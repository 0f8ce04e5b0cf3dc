"""Input-pipeline throughput: host batches per second in crop and bucket mode.

Builds a synthetic corpus in a temporary directory (or reads ``--data-dir``), then for each
mode builds the training iterator, takes ``--warmup`` batches (pipeline start, thread and
worker start-up) and times the next ``--batches``. Prints one JSON line::

  {"benchmark": "input_pipeline", "corpus": ..., "config": {...},
   "crop": {"batches_per_s", "examples_per_s", "audio_seconds_per_s", "padded_fraction", ...},
   "bucket": {...}}

``audio_seconds_per_s`` counts real audio (``audio_len``), ``padded_fraction`` the share of
the emitted audio samples that are padding.

  python benchmarks/input_pipeline.py --batches 200 --batch-size 32 --worker-count 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

from jaxtts.data import pipeline, synthetic


def _measure(cfg, split: str, *, batch_size: int, batches: int, warmup: int,
             sample_rate: int) -> dict:
  start = time.perf_counter()
  it = pipeline.make_iterator(cfg, split, global_batch_size=batch_size, seed=0, train=True,
                              process_index=0, process_count=1)
  for _ in range(warmup):
    next(it)
  first = time.perf_counter() - start
  examples = real = emitted = 0
  shapes = set()
  t0 = time.perf_counter()
  for _ in range(batches):
    b = next(it)
    examples += int((b["audio_len"] > 0).sum())
    real += int(b["audio_len"].sum())
    emitted += int(b["audio"].size)
    shapes.add(b["audio"].shape)
  dt = time.perf_counter() - t0
  filtered = pipeline.filtered_counts(it)
  it.close()
  return {
      "batches_per_s": round(batches / dt, 2),
      "examples_per_s": round(examples / dt, 1),
      "audio_seconds_per_s": round(real / sample_rate / dt, 1),
      "padded_fraction": round(1.0 - real / max(emitted, 1), 4),
      "startup_s": round(first, 3),
      "timed_s": round(dt, 3),
      "batches": batches,
      "audio_shapes": sorted(list(s) for s in shapes),
      **filtered,
  }


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=None, help="corpus dir (default: synthetic)")
  parser.add_argument("--split", default="train")
  parser.add_argument("--batches", type=int, default=100)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument("--segment-samples", type=int, default=16000)
  parser.add_argument("--bucket-samples", default="16000,32000,48000",
                      help="comma-separated padded audio lengths (bucket mode)")
  parser.add_argument("--max-phonemes", type=int, default=256)
  parser.add_argument("--worker-count", type=int, default=0)
  parser.add_argument("--read-threads", type=int, default=4)
  parser.add_argument("--speaker-balanced", action="store_true")
  parser.add_argument("--modes", default="crop,bucket")
  parser.add_argument("--speakers", type=int, default=8, help="synthetic corpus speakers")
  parser.add_argument("--utterances-per-speaker", type=int, default=32)
  args = parser.parse_args(argv)

  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir
    build_s = None
    if data_dir is None:
      data_dir = os.path.join(tmp, "corpus")
      t0 = time.perf_counter()
      synthetic.write_synthetic_corpus(
          data_dir, num_speakers=args.speakers,
          utterances_per_speaker=args.utterances_per_speaker, zero_shot_speakers=1, seed=0,
          shard_size=64)
      build_s = round(time.perf_counter() - t0, 2)
    cfg = pipeline.default_data_config()
    cfg.dir = data_dir
    cfg.segment_samples = args.segment_samples
    cfg.bucket_samples = tuple(int(x) for x in args.bucket_samples.split(","))
    cfg.max_phonemes = args.max_phonemes
    cfg.worker_count = args.worker_count
    cfg.read_threads = args.read_threads
    cfg.speaker_balanced = args.speaker_balanced
    with open(os.path.join(data_dir, "manifest.json")) as f:
      manifest = json.load(f)
    cfg.sample_rate = manifest["sample_rate"]
    result = {
        "benchmark": "input_pipeline",
        "corpus": "synthetic" if args.data_dir is None else os.path.abspath(args.data_dir),
        "corpus_examples": manifest["splits"][args.split]["num_examples"],
        "corpus_build_s": build_s,
        "config": {"batch_size": args.batch_size, "segment_samples": args.segment_samples,
                   "bucket_samples": list(cfg.bucket_samples),
                   "max_phonemes": args.max_phonemes, "worker_count": args.worker_count,
                   "read_threads": args.read_threads,
                   "speaker_balanced": args.speaker_balanced},
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                 "machine": platform.machine()},
    }
    for mode in args.modes.split(","):
      cfg.mode = mode
      result[mode] = _measure(cfg, args.split, batch_size=args.batch_size,
                              batches=args.batches, warmup=args.warmup,
                              sample_rate=cfg.sample_rate)
  print(json.dumps(result, sort_keys=False))
  sys.stdout.flush()
  return result


if __name__ == "__main__":
  main()
