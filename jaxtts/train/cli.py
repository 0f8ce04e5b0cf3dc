"""`jaxtts-train --config configs/<task>.py[:preset] --workdir DIR [--config.a.b=value ...]`

Trains (resuming when DIR holds checkpoints). `--dry-run` initializes abstractly
(`jax.eval_shape`), writes DIR/params.json and exits. Multi-host: `--distributed` calls
`jax.distributed.initialize()` (auto-detects TPU pods and SLURM), or give
`--coordinator-address/--num-processes/--process-id` explicitly.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

USAGE = ("jaxtts-train --config configs/<task>.py[:preset] --workdir DIR "
         "[--dry-run] [--config.a.b=value ...]")


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="jaxtts-train", usage=USAGE, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="configs/<task>.py[:preset]")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--dry-run", action="store_true",
                      help="write params.json from an abstract init and exit")
  parser.add_argument("--distributed", action="store_true",
                      help="jax.distributed.initialize() with auto-detection")
  parser.add_argument("--coordinator-address", default=None)
  parser.add_argument("--num-processes", type=int, default=None)
  parser.add_argument("--process-id", type=int, default=None)
  parser.add_argument("--log-level", default="INFO")
  return parser.parse_known_args(argv)


def main(argv=None) -> int:
  args, rest = parse_args(sys.argv[1:] if argv is None else argv)
  logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
  import jax  # pylint: disable=import-outside-toplevel

  from jaxtts.train import config as config_lib  # pylint: disable=import-outside-toplevel
  try:
    cfg = config_lib.build_config(args.config, rest)
  except config_lib.ConfigError as e:
    print(f"jaxtts-train: {e}", file=sys.stderr)
    return 2
  if args.coordinator_address is not None:
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=args.num_processes, process_id=args.process_id)
  elif args.distributed:
    jax.distributed.initialize()

  from jaxtts.train import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from jaxtts.train import loop  # pylint: disable=import-outside-toplevel
  trainer = loop.Trainer(cfg, args.workdir)
  if args.dry_run:
    report = trainer.write_params_json()
    print(json.dumps({"params_total": report["total"],
                      "groups": {g: v["total"] for g, v in report["groups"].items()},
                      "mesh": report["mesh"]}))
    return 0
  try:
    result = trainer.run()
  except loop.NonFiniteLossError as e:
    print(f"jaxtts-train: {e}", file=sys.stderr)
    return 3
  except ckpt_lib.CheckpointMismatchError as e:
    print(f"jaxtts-train: {e}", file=sys.stderr)
    return 2
  if jax.process_index() == 0:
    print(json.dumps(result, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
