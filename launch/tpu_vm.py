"""`jaxtts-launch tpu-vm`: a Cloud TPU VM (pod slice) through gcloud, big_vision / MaxText style.

Steps: create the TPU (a queued resource, `--create queued`, or `tpu-vm create`; skipped when it
exists), copy the repo to every worker (`tpu-vm scp --recurse --worker=all`), set up its venv
(`pip install -e . jax[tpu]`), kill stale processes holding the TPU (`/dev/accel*`,
`/dev/vfio/*`) and remove `/tmp/libtpu_lockfile`, run `jaxtts-train ... --distributed` on
`--worker=all` (jax.distributed auto-detects the pod) with one log per worker
(`~/jaxtts/logs/<tpu>-<host>.log` on each worker), then `--delete-after` deletes the TPU after a
run that exited 0. `--retries R` repeats the kill and train steps after a failure (resume).
"""

from __future__ import annotations

import argparse
import shlex

from launch.args import LaunchError, Plan, TrainArgs, join, run_steps, steps_text

PROG = "jaxtts-launch tpu-vm"
REMOTE = "~/jaxtts"
# What goes to the workers (no .venv, .git, runs/).
SOURCES = ("jaxtts", "configs", "data_pipelines", "launch", "setup.py", "pyproject.toml")
KILL = ("sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u | xargs -r sudo kill -9; "
        "sudo rm -f /tmp/libtpu_lockfile")


def add_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--tpu-name", required=True, help="the TPU VM (node id)")
  parser.add_argument("--zone", required=True)
  parser.add_argument("--project", default=None, help="default: gcloud's configured project")
  parser.add_argument("--accelerator-type", default="v5p-8", help="e.g. v4-32, v5p-64, v6e-16")
  parser.add_argument("--runtime-version", default="v2-alpha-tpuv5",
                      help="TPU software version (e.g. tpu-ubuntu2204-base, v2-alpha-tpuv6e)")
  parser.add_argument("--create", choices=("queued", "tpu-vm", "none"), default="queued",
                      help="how to create the TPU when it does not exist (default queued)")
  capacity = parser.add_mutually_exclusive_group()
  capacity.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
  capacity.add_argument("--reserved", action="store_true", help="reserved capacity")
  parser.add_argument("--delete-after", action="store_true",
                      help="delete the TPU after a run that exited 0")
  parser.add_argument("--repo", default=".", help="the jaxtts checkout to copy (default .)")
  parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                      help="environment of the trainer (repeatable), e.g. TFDS_DATA_DIR=gs://...")
  parser.add_argument("--retries", type=int, default=0,
                      help="repeats of the kill + train steps after a failure (resume)")


def _where(args: argparse.Namespace) -> list:
  out = ["--zone", args.zone]
  return out + (["--project", args.project] if args.project else [])


def _capacity(args: argparse.Namespace) -> list:
  return ["--spot"] if args.spot else ["--reserved"] if args.reserved else []


def _ssh(args: argparse.Namespace, command: str) -> str:
  return join(["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu_name, *_where(args),
               "--worker=all", f"--command={command}"])


def create_steps(args: argparse.Namespace) -> list:
  where = _where(args)
  exists = join(["gcloud", "compute", "tpus", "tpu-vm", "describe", args.tpu_name, *where])
  if args.create == "none":
    return []
  if args.create == "tpu-vm":
    create = join(["gcloud", "compute", "tpus", "tpu-vm", "create", args.tpu_name, *where,
                   f"--accelerator-type={args.accelerator_type}",
                   f"--version={args.runtime_version}", *_capacity(args)])
    return [("create the TPU VM unless it exists", f"{exists} >/dev/null 2>&1 || {create}")]
  qr = ["gcloud", "compute", "tpus", "queued-resources"]
  create = join([*qr, "create", args.tpu_name, f"--node-id={args.tpu_name}", *where,
                 f"--accelerator-type={args.accelerator_type}",
                 f"--runtime-version={args.runtime_version}", *_capacity(args)])
  state = join([*qr, "describe", args.tpu_name, *where, "--format=value(state.state)"])
  wait = (f'until [ "$({state})" = ACTIVE ]; do echo waiting for the queued resource; '
          "sleep 30; done")
  return [("create the queued resource unless the TPU exists", f"{exists} >/dev/null 2>&1 || "
           f"{create}"), ("wait until it is ACTIVE", wait)]


def train_command(args: argparse.Namespace, train: TrainArgs) -> str:
  """What every worker runs: free the TPU, then jaxtts-train with --distributed, teed to a log."""
  for kv in args.env:
    if "=" not in kv:
      raise LaunchError(f"{PROG}: --env wants KEY=VALUE, got {kv!r}")
  env = " ".join(f"{k}={shlex.quote(v)}" for k, v in (kv.split("=", 1) for kv in args.env))
  log = f"logs/{args.tpu_name}-$(hostname).log"
  return (f"cd {REMOTE} && mkdir -p logs && set -o pipefail && "
          f"{(env + ' ') if env else ''}.venv/bin/jaxtts-train {join(train.distributed())} "
          f"2>&1 | tee -a {log}")


def plan(args: argparse.Namespace, train: TrainArgs, name: str | None = None) -> Plan:
  del name
  where = _where(args)
  sources = [f"{args.repo.rstrip('/')}/{s}" for s in SOURCES]
  setup = [
      ("make the code folder on every worker", _ssh(args, f"mkdir -p {REMOTE}")),
      ("copy the repo to every worker", join(
          ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", *sources,
           f"{args.tpu_name}:{REMOTE}/", *where, "--worker=all"])),
      ("set up the venv on every worker", _ssh(args, (
          f"cd {REMOTE} && (test -x .venv/bin/python || python3 -m venv .venv) && "
          ".venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e . "
          "'jax[tpu]>=0.7,<0.11'"))),
  ]
  run = [("kill stale processes holding the TPU, remove the libtpu lock file",
          _ssh(args, KILL)),
         (f"train on every worker (resume key: {train.workdir})",
          _ssh(args, train_command(args, train)))]
  delete = []
  if args.delete_after:
    target = (["queued-resources", "delete", args.tpu_name, "--force"] if args.create == "queued"
              else ["tpu-vm", "delete", args.tpu_name])
    delete = [("delete the TPU (the run exited 0)",
               join(["gcloud", "compute", "tpus", *target, *where, "--quiet"]))]
  header = [f"jaxtts-launch tpu-vm: {args.accelerator_type} '{args.tpu_name}' in {args.zone}.",
            f"Resume key: the workdir {train.workdir} (rerun the same command to resume; use a "
            "gs:// workdir, the workers share it)."]
  text = steps_text(header, create_steps(args) + setup + run + delete)

  def execute() -> int:
    rc = run_steps(create_steps(args) + setup, PROG)
    if rc:
      return rc
    for k in range(args.retries + 1):
      rc = run_steps(run, PROG)
      if rc in (0, 2) or k == args.retries:
        break
      print(f"{PROG}: retry {k + 1} of {args.retries}: resuming from {train.workdir}")
    return run_steps(delete, PROG) if rc == 0 else rc

  return Plan(text, execute)
