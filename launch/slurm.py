"""`jaxtts-launch slurm`: an sbatch script running one jaxtts-train task per GPU.

jax.distributed's SLURM detection (SLURM_JOB_ID set) takes the coordinator from the step's first
node, the process count from SLURM_NTASKS and sets `local_device_ids=[SLURM_LOCALID]`: each task
sees one GPU, so `--ntasks-per-node` must equal the GPUs per node (jax#16788, #28194).
`--signal` sends SIGTERM to the tasks `--signal-seconds` before the time limit: the trainer saves
and exits 143, and the script requeues the job (`--requeue`), which resumes from the workdir.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys

from launch.args import LaunchError, Plan, TrainArgs, is_url, join

PROG = "jaxtts-launch slurm"


def add_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--nodes", type=int, default=1)
  parser.add_argument("--gpus-per-node", type=int, default=8)
  parser.add_argument("--ntasks-per-node", type=int, default=None,
                      help="must equal --gpus-per-node (one process per GPU); default: that")
  parser.add_argument("--cpus-per-task", type=int, default=8)
  parser.add_argument("--time", default="24:00:00", help="time limit, HH:MM:SS")
  parser.add_argument("--partition", default=None)
  parser.add_argument("--account", default=None)
  parser.add_argument("--job-name", default=None, help="default: jaxtts-<workdir basename>")
  parser.add_argument("--signal-seconds", type=int, default=300,
                      help="SIGTERM to the tasks this long before the time limit (default 300)")
  parser.add_argument("--setup", default=None,
                      help="shell line run before srun (default: activate ./.venv of --repo)")
  parser.add_argument("--repo", default=".", help="the jaxtts checkout on the shared filesystem")
  parser.add_argument("--log-dir", default=None, help="default <workdir>/logs")
  parser.add_argument("--out", default=None,
                      help="the script's path (default <log-dir>/<job>.sbatch; under "
                           "jaxtts-sweep a folder for each run's <job>.sbatch)")
  parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                      help="environment of the trainer (repeatable)")


def job_name(args: argparse.Namespace, train: TrainArgs, name: str | None) -> str:
  raw = args.job_name or f"jaxtts-{os.path.basename(train.workdir.rstrip('/'))}"
  if args.job_name and name:
    raw = f"{args.job_name}-{name}"
  return re.sub(r"[^A-Za-z0-9._=-]+", "_", raw)


def log_dir(args: argparse.Namespace, train: TrainArgs) -> str:
  if args.log_dir:
    return args.log_dir
  if is_url(train.workdir):
    raise LaunchError(f"{PROG}: workdir {train.workdir} is not a local path; give --log-dir")
  return os.path.join(os.path.abspath(train.workdir), "logs")


def script(args: argparse.Namespace, train: TrainArgs, name: str | None = None,
           on_success: str = "") -> str:
  """The sbatch script. `on_success`: shell lines run after every task exited 0."""
  gpus = args.gpus_per_node
  tasks = gpus if args.ntasks_per_node is None else args.ntasks_per_node
  if tasks != gpus:
    raise LaunchError(f"{PROG}: --ntasks-per-node {tasks} must equal --gpus-per-node {gpus}: "
                      "jax.distributed on SLURM runs one process per GPU (local_device_ids="
                      "[SLURM_LOCALID], jax#16788)")
  if args.nodes < 1 or gpus < 1:
    raise LaunchError(f"{PROG}: --nodes and --gpus-per-node must be >= 1")
  logs, job = log_dir(args, train), job_name(args, train, name)
  sbatch = [f"--job-name={job}", f"--nodes={args.nodes}", f"--ntasks-per-node={tasks}",
            f"--gres=gpu:{gpus}", f"--cpus-per-task={args.cpus_per_task}",
            f"--time={args.time}", "--requeue", f"--signal=TERM@{args.signal_seconds}",
            "--open-mode=append", f"--output={logs}/%j.out"]
  sbatch += [f"--partition={args.partition}"] if args.partition else []
  sbatch += [f"--account={args.account}"] if args.account else []
  repo = os.path.abspath(args.repo)
  setup = args.setup or f"source {shlex.quote(os.path.join(repo, '.venv/bin/activate'))}"
  exports = []
  for kv in args.env:
    if "=" not in kv:
      raise LaunchError(f"{PROG}: --env wants KEY=VALUE, got {kv!r}")
    k, v = kv.split("=", 1)
    exports.append(f"export {k}={shlex.quote(v)}")
  srun = join(["srun", "--kill-on-bad-exit=1", f"--output={logs}/%j-%t.log", "jaxtts-train",
               *train.distributed()])
  lines = ["#!/bin/bash",
           f"# jaxtts-launch slurm: {args.nodes} node(s) x {gpus} GPU(s), one task per GPU.",
           "# One process per GPU: jax.distributed's SLURM detection sets local_device_ids="
           "[SLURM_LOCALID]",
           "# (jax#16788, #28194), so --ntasks-per-node equals the GPUs per node.",
           f"# Resume key: the workdir {train.workdir}. A requeue or a resubmission of this",
           "# script resumes from its checkpoints. Logs: one per task, <log-dir>/<job>-<task>.log.",
           *[f"#SBATCH {s}" for s in sbatch],
           "", "set -u", setup, *exports,
           f"cd {shlex.quote(os.getcwd())}  # relative paths resolve as at submission", "",
           "# SIGTERM at --signal time: the trainer saves and exits 143; then requeue to resume.",
           srun, "rc=$?",
           'if [ "$rc" -eq 143 ]; then scontrol requeue "$SLURM_JOB_ID"; fi']
  if on_success:
    lines += ['if [ "$rc" -eq 0 ]; then', on_success, "fi"]
  return "\n".join(lines + ['exit "$rc"', ""])


def plan(args: argparse.Namespace, train: TrainArgs, name: str | None = None,
         on_success: str = "") -> Plan:
  text = script(args, train, name, on_success)
  logs = log_dir(args, train)
  out = os.path.join(args.out or logs, f"{job_name(args, train, name)}.sbatch")
  if args.out and name is None:  # one launch: --out is the script's path
    out = args.out

  def execute() -> int:
    os.makedirs(logs, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      f.write(text)
    print(f"{PROG}: wrote {out}", file=sys.stderr)
    try:
      return subprocess.run(["sbatch", out], check=False).returncode
    except FileNotFoundError as e:
      raise LaunchError(f"{PROG}: sbatch is not installed here ({e})") from e

  return Plan(f"# {out}\n{text}", execute)
