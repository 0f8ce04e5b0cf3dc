"""`jaxtts-launch {local,tpu-vm,gke,slurm} [resource flags] [--dry-run] -- <jaxtts-train args>`

One entry point for every place jaxtts-train runs. The arguments after `--` are jaxtts-train's
(`--config configs/<task>.py[:preset] --workdir DIR [--config.a.b=v ...]`), the same for every
launcher; the launcher adds the multi-host flags (`--distributed`, or the local coordinator).

  local    N processes on this machine (--num-processes, --devices-per-process CPU devices
           each), per-process logs in <workdir>/logs/process_<i>.log, --retries
  tpu-vm   gcloud: create (queued resource or tpu-vm create), copy the repo, venv, free the TPU,
           train on --worker=all, optional --delete-after
  gke      `xpk workload create` (--format xpk) or a JobSet manifest (--format jobset)
  slurm    an sbatch script, one task per GPU, --requeue and a pre-time-limit SIGTERM; sbatch

Resume = rerun the same command with the same --workdir: the trainer resumes from its
checkpoints (the workdir is the resume key everywhere). `--dry-run` prints the exact commands or
files and runs nothing.

Examples:
  jaxtts-launch local --num-processes 2 --devices-per-process 2 -- \\
      --config configs/gmm_vae.py:tiny --workdir runs/codec
  jaxtts-launch tpu-vm --tpu-name tts --zone us-east5-a --accelerator-type v5p-64 --spot \\
      --dry-run -- --config configs/gmm_lm.py:paper --workdir gs://bucket/gmm_lm
  jaxtts-launch slurm --nodes 2 --gpus-per-node 8 -- \\
      --config configs/ns3.py:paper --workdir /shared/ns3
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from launch import gke, local, slurm, tpu_vm
from launch.args import LaunchError, Plan, parse_train_args, split_argv

LAUNCHERS = {"local": local, "tpu-vm": tpu_vm, "gke": gke, "slurm": slurm}
USAGE = ("jaxtts-launch {local,tpu-vm,gke,slurm} [resource flags] [--dry-run] -- "
         "--config configs/<task>.py[:preset] --workdir DIR [--config.a.b=v ...]")


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="jaxtts-launch", usage=USAGE, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="launcher", required=True, metavar="{local,tpu-vm,gke,slurm}")
  for name, module in LAUNCHERS.items():
    s = sub.add_parser(name, help=module.__doc__.splitlines()[0], description=module.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage=f"jaxtts-launch {name} [flags] [--dry-run] -- <jaxtts-train args>",
                       epilog="Resume: rerun the same command with the same --workdir.")
    module.add_flags(s)
    s.add_argument("--dry-run", action="store_true",
                   help="print the exact commands / files and run nothing")
  return p


def launcher_parser(name: str) -> argparse.ArgumentParser:
  """The flags of one launcher alone (for jaxtts-sweep)."""
  p = argparse.ArgumentParser(prog=f"jaxtts-sweep --launcher {name}", add_help=False)
  LAUNCHERS[name].add_flags(p)
  return p


def make_plan(name: str, args: argparse.Namespace, train_argv: Sequence[str],
              run_name: str | None = None, **kw) -> Plan:
  """The plan of launcher `name` for these jaxtts-train arguments (LaunchError on bad flags)."""
  train = parse_train_args(train_argv, f"jaxtts-launch {name}")
  return LAUNCHERS[name].plan(args, train, run_name, **kw)


def main(argv: Sequence[str] | None = None) -> int:
  flags, train_argv = split_argv(sys.argv[1:] if argv is None else argv)
  args = parser().parse_args(flags)
  try:
    plan = make_plan(args.launcher, args, train_argv)
    if args.dry_run:
      print(plan.text)
      return 0
    return plan.execute()
  except LaunchError as e:
    print(e, file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
