"""`jaxtts-train --config configs/<task>.py[:preset] --workdir DIR [--config.a.b=value ...]`

Trains (resuming when DIR holds checkpoints). `--dry-run` initializes abstractly
(`jax.eval_shape`), writes DIR/params.json and exits. Multi-host: `--distributed` calls
`jax.distributed.initialize()` (auto-detects TPU pods and SLURM), or give
`--coordinator-address/--num-processes/--process-id` explicitly.

Exit status: 0 done; 2 bad config or flags, a resume whose config changes keys an exact resume
needs (data, model, seed, batch size, optimizer structure: the keys and both values are
named), or a checkpoint of another configuration; 3 too many consecutive non-finite updates;
143 SIGTERM (saved). Library logs (Orbax, JAX, Grain) appear with `--verbose` or in
`--log-file`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import jax

from jaxtts import logs
from jaxtts.train import checkpoint as ckpt_lib
from jaxtts.train import config as config_lib
from jaxtts.train import loop

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
  parser.add_argument("--log-level", default="INFO", help="level of the jaxtts loggers")
  parser.add_argument("--verbose", action="store_true",
                      help="show library logs (Orbax, JAX, Grain) below WARNING")
  parser.add_argument("--log-file", default=None,
                      help="also append every log record (libraries' INFO too) to this file")
  return parser.parse_known_args(argv)


def main(argv=None) -> int:
  args, rest = parse_args(sys.argv[1:] if argv is None else argv)
  logs.setup_logging(args.verbose, args.log_file)
  logging.getLogger("jaxtts").setLevel(args.log_level.upper())

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

  try:
    trainer = loop.Trainer(cfg, args.workdir)
  except ValueError as e:  # a config the task or the mesh cannot use
    print(f"jaxtts-train: {e}", file=sys.stderr)
    return 2
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
  except (ckpt_lib.CheckpointMismatchError, config_lib.ResumeConfigError) as e:
    print(f"jaxtts-train: {e}", file=sys.stderr)
    return 2
  if jax.process_index() == 0:
    print(json.dumps(result, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
