"""`jaxtts-train --config configs/<task>.py[:preset] --workdir DIR [--config.a.b=value ...]`

Trains (resuming when DIR holds checkpoints). `--dry-run` initializes abstractly
(`jax.eval_shape`), writes DIR/params.json and exits. Multi-host: `--distributed` calls
`jax.distributed.initialize()` (auto-detects TPU pods and SLURM), or give
`--coordinator-address/--num-processes/--process-id` explicitly.

Exit status: 0 done; 2 bad config or flags, a resume whose config changes keys an exact resume
needs (data, model, seed, batch size, optimizer structure: the keys and both values are
named), a checkpoint of another configuration, or one written by another number of processes;
3 too many consecutive non-finite updates; 4 another process was lost (multi-process: one line
names it); 5 a barrier timed out (another process hangs); 143 SIGTERM (saved). Library logs
(Orbax, JAX, Grain) appear with `--verbose` or in `--log-file`.

When a host fails (several processes; every timeout is a `config.distributed` key):
- `jax.distributed.initialize` gets ``init_timeout_s`` (300) for every process to connect, and
  the coordination service ``heartbeat_timeout_s`` (100) and ``shutdown_timeout_s`` (300).
- Each process runs a watchdog (`jaxtts.train.watchdog`): heartbeats through the coordination
  service's key-value store; a peer silent for ``peer_timeout_s`` (30, below the service's
  heartbeat timeout) ends this process with ``jaxtts-train: lost process K (no heartbeat for N
  s); exiting`` and status 4, instead of a Gloo traceback followed by the service's
  LOG(FATAL) page (measured before: SIGABRT 61 s after the kill; now about
  ``peer_timeout_s``). A collective that fails because a peer died waits for that verdict.
  Process 0 holds the coordination service: when it dies, JAX's client aborts the others
  within about a second (SIGABRT, its own C++ message; measured 0.6 s). That abort is the
  client's ``missed_heartbeat_callback``, which `jax.distributed.initialize` does not expose
  and which cannot be a Python function in jax 0.10.2 (std::bad_cast, tried).
- Every barrier (after each ahead-of-time compilation, the corrupt-checkpoint quarantine) has
  ``barrier_timeout_s`` (1800); async checkpoint commits ``checkpoint.async_timeout_s`` (1200).
  Orbax's own save barriers are device collectives without a timeout here (its client
  barriers need an absl flag); a dead peer there is the watchdog's.
- SIGTERM to any process (a preemption): JAX's preemption service picks one step every process
  reaches (`multihost_utils.reached_preemption_sync_point`); all save that step and exit 143.
- A resume needs the process count that wrote the checkpoint (each process saved its own
  data-iterator position): another count is refused with one line naming both (status 2).
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
from jaxtts.train import mesh as mesh_lib
from jaxtts.train import watchdog as watchdog_lib

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


def _initialize_distributed(args, cfg) -> watchdog_lib.Watchdog | None:
  """`jax.distributed.initialize` with the ``config.distributed`` timeouts, and the peer
  watchdog when there are several processes (None otherwise)."""
  if args.coordinator_address is None and not args.distributed:
    return None
  dist = cfg.distributed
  if dist.peer_timeout_s >= dist.heartbeat_timeout_s:
    raise config_lib.ConfigError(
        f"config.distributed.peer_timeout_s={dist.peer_timeout_s} must be below "
        f"heartbeat_timeout_s={dist.heartbeat_timeout_s} (the watchdog names a lost process "
        "before the coordination service aborts every process)")
  kwargs = dict(initialization_timeout=int(dist.init_timeout_s),
                heartbeat_timeout_seconds=int(dist.heartbeat_timeout_s),
                shutdown_timeout_seconds=int(dist.shutdown_timeout_s))
  if args.coordinator_address is not None:
    kwargs.update(coordinator_address=args.coordinator_address,
                  num_processes=args.num_processes, process_id=args.process_id)
  jax.distributed.initialize(**kwargs)
  if jax.process_count() == 1:
    return None
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  return watchdog_lib.Watchdog(distributed.global_state.client, jax.process_index(),
                               jax.process_count(), dist.peer_timeout_s).start()


def main(argv=None) -> int:
  args, rest = parse_args(sys.argv[1:] if argv is None else argv)
  logs.setup_logging(args.verbose, args.log_file)
  logging.getLogger("jaxtts").setLevel(args.log_level.upper())

  try:
    cfg = config_lib.build_config(args.config, rest)
    watchdog = _initialize_distributed(args, cfg)
  except config_lib.ConfigError as e:
    print(f"jaxtts-train: {e}", file=sys.stderr)
    return 2
  status = 1
  try:
    status = _train(args, cfg)
  except SystemExit as e:  # loop.Preempted (143)
    status = e.code if isinstance(e.code, int) else 1
    raise
  except jax.errors.JaxRuntimeError:
    if watchdog is not None:  # a collective failing because a peer died: name the peer
      watchdog.wait_for_verdict()
    raise
  finally:
    if watchdog is not None:
      watchdog.stop(status)
  return status


def _train(args, cfg) -> int:
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
  except mesh_lib.BarrierTimeoutError as e:
    print(f"jaxtts-train: {e}", file=sys.stderr)
    return 5
  if jax.process_index() == 0:
    print(json.dumps(result, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
