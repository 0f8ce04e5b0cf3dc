"""Derive steps that add fields to an existing corpus (`jaxtts.data.derive`).

    jaxtts-corpus derive f0 --data-dir DIR [--out DIR2] [--splits train valid ...]
                            [--workers N] [--process-index I --process-count N]
    python -m data_pipelines.derive f0 ...

``f0``: per-frame ``f0`` (float32 Hz, 0 when unvoiced) and ``voiced`` (bool) at the corpus
hop, from WORLD DIO + StoneMask (`jaxtts.audio.f0`), listed in the manifest's ``features``.
Without ``--out`` the shards are rewritten in place. Each shard is written to a temporary file
and renamed; shards that already hold the fields are skipped, so an interrupted run resumes.
Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from jaxtts.audio import f0 as f0_lib
from jaxtts.data import derive


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="jaxtts-corpus derive", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="step", required=True)
  f0 = sub.add_parser("f0", help="add per-frame f0 / voiced (WORLD DIO + StoneMask)")
  f0.add_argument("--data-dir", required=True, help="input corpus directory")
  f0.add_argument("--out", default=None, help="output corpus directory (default: in place)")
  f0.add_argument("--splits", nargs="+", default=None, help="default: every non-empty split")
  f0.add_argument("--workers", type=int, default=1, help="shards processed in parallel")
  f0.add_argument("--process-index", type=int, default=0)
  f0.add_argument("--process-count", type=int, default=1)
  f0.add_argument("--f0-floor", type=float, default=f0_lib.F0_FLOOR, help="Hz")
  f0.add_argument("--f0-ceil", type=float, default=f0_lib.F0_CEIL, help="Hz")
  args = p.parse_args(argv)
  if args.workers < 1:
    p.error(f"--workers must be >= 1, got {args.workers}")
  summary = derive.add_f0(args.data_dir, args.out, splits=args.splits, workers=args.workers,
                          process_index=args.process_index, process_count=args.process_count,
                          f0_floor=args.f0_floor, f0_ceil=args.f0_ceil)
  print(json.dumps(summary, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
