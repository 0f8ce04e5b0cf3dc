"""`jaxtts-launch gke`: TPU slices on GKE, through xpk (`--format xpk`) or a JobSet manifest
(`--format jobset`, applied with kubectl).

The JobSet runs one indexed Job per slice, completions = parallelism = hosts per slice, one pod
per TPU host, with the `alpha.jobset.sigs.k8s.io/exclusive-topology` annotation (one slice per
node pool), TPU resource requests and a nodeSelector for the accelerator and topology. Each pod
runs `jaxtts-train ... --distributed`: jax.distributed finds the hosts from GKE's TPU variables
(TPU_WORKER_HOSTNAMES, TPU_WORKER_ID); several slices add MEGASCALE_* variables. The image must
hold the repo installed with jax[tpu] (its working directory the repo).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys

from launch.args import LaunchError, Plan, TrainArgs, join

PROG = "jaxtts-launch gke"
# GKE accelerator labels by TPU type prefix.
ACCELERATORS = {"v4": "tpu-v4-podslice", "v5litepod": "tpu-v5-lite-podslice",
                "v5p": "tpu-v5p-slice", "v6e": "tpu-v6e-slice"}


def add_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--format", choices=("xpk", "jobset"), default="xpk")
  parser.add_argument("--cluster", default=None, help="the GKE cluster (xpk)")
  parser.add_argument("--workload", default=None,
                      help="workload / JobSet name (default: jaxtts-<workdir basename>)")
  parser.add_argument("--docker-image", required=True, help="an image with jaxtts installed")
  parser.add_argument("--tpu-type", default="v5p-8", help="xpk TPU type, e.g. v5p-128")
  parser.add_argument("--num-slices", type=int, default=1)
  parser.add_argument("--project", default=None)
  parser.add_argument("--zone", default=None)
  parser.add_argument("--tpu-topology", default="2x2x1",
                      help="JobSet: the slice topology, e.g. 2x2x2 (v5p-16), 4x4 (v6e-16)")
  parser.add_argument("--chips-per-host", type=int, default=4, help="JobSet: TPU chips per VM")
  parser.add_argument("--max-restarts", type=int, default=3,
                      help="JobSet: restarts of the whole JobSet after a failure (resume)")
  parser.add_argument("--out", default=None,
                      help="JobSet: where to write the manifest (default <workload>.yaml; "
                           "under jaxtts-sweep a folder for each run's <workload>.yaml)")


def workload_name(args: argparse.Namespace, train: TrainArgs, name: str | None) -> str:
  """A Kubernetes-safe name (lower case, digits, '-'; at most 40 characters)."""
  raw = args.workload or f"jaxtts-{name or os.path.basename(train.workdir.rstrip('/'))}"
  if args.workload and name:
    raw = f"{args.workload}-{name}"
  safe = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
  return safe[:40].rstrip("-") or "jaxtts"


def xpk_command(args: argparse.Namespace, train: TrainArgs, name: str | None) -> list:
  if not args.cluster:
    raise LaunchError(f"{PROG}: --format xpk needs --cluster")
  cmd = ["xpk", "workload", "create", "--cluster", args.cluster,
         "--workload", workload_name(args, train, name), "--docker-image", args.docker_image,
         "--tpu-type", args.tpu_type, "--num-slices", str(args.num_slices)]
  cmd += (["--project", args.project] if args.project else [])
  cmd += (["--zone", args.zone] if args.zone else [])
  return cmd + ["--command", join(["jaxtts-train", *train.distributed()])]


def hosts_per_slice(args: argparse.Namespace) -> int:
  try:
    chips = math.prod(int(d) for d in args.tpu_topology.split("x"))
  except ValueError as e:
    raise LaunchError(f"{PROG}: --tpu-topology wants AxB[xC], got {args.tpu_topology!r}") from e
  return max(1, chips // args.chips_per_host)


def accelerator(args: argparse.Namespace) -> str:
  prefix = args.tpu_type.split("-")[0]
  if prefix not in ACCELERATORS:
    raise LaunchError(f"{PROG}: --tpu-type {args.tpu_type!r}: unknown family {prefix!r} "
                      f"(known: {', '.join(ACCELERATORS)})")
  return ACCELERATORS[prefix]


def jobset_yaml(args: argparse.Namespace, train: TrainArgs, name: str | None) -> str:
  wl, hosts = workload_name(args, train, name), hosts_per_slice(args)
  command = json.dumps(join(["jaxtts-train", *train.distributed()]))  # a YAML quoted string
  megascale = ""
  if args.num_slices > 1:
    megascale = f"""
              env:
              - name: MEGASCALE_COORDINATOR_ADDRESS
                value: "{wl}-slice-0-0.{wl}"
              - name: MEGASCALE_NUM_SLICES
                value: "{args.num_slices}"
              - name: MEGASCALE_SLICE_ID
                valueFrom:
                  fieldRef:
                    fieldPath: metadata.annotations['jobset.sigs.k8s.io/job-index']"""
  return f"""# jaxtts-launch gke --format jobset: {args.num_slices} slice(s) of {args.tpu_type} \
({args.tpu_topology}), {hosts} host(s) per slice, one pod per host.
# Resume key: the workdir {train.workdir} (a restart or a re-apply resumes from its checkpoints;
# use a gs:// workdir, every host shares it).
apiVersion: jobset.x-k8s.io/v1alpha2
kind: JobSet
metadata:
  name: {wl}
  annotations:
    alpha.jobset.sigs.k8s.io/exclusive-topology: cloud.google.com/gke-nodepool
spec:
  failurePolicy:
    maxRestarts: {args.max_restarts}
  replicatedJobs:
  - name: slice
    replicas: {args.num_slices}
    template:
      spec:
        completionMode: Indexed
        completions: {hosts}
        parallelism: {hosts}
        backoffLimit: 0
        template:
          spec:
            restartPolicy: Never
            hostNetwork: true
            dnsPolicy: ClusterFirstWithHostNet
            nodeSelector:
              cloud.google.com/gke-tpu-accelerator: {accelerator(args)}
              cloud.google.com/gke-tpu-topology: {args.tpu_topology}
            containers:
            - name: jaxtts
              image: {args.docker_image}
              command: ["bash", "-c"]
              args: [{command}]
              ports:
              - containerPort: 8471
              - containerPort: 8080
              securityContext:
                privileged: true{megascale}
              resources:
                requests:
                  google.com/tpu: {args.chips_per_host}
                limits:
                  google.com/tpu: {args.chips_per_host}
"""


def plan(args: argparse.Namespace, train: TrainArgs, name: str | None = None) -> Plan:
  if args.num_slices < 1:
    raise LaunchError(f"{PROG}: --num-slices must be >= 1, got {args.num_slices}")
  if args.format == "xpk":
    cmd = xpk_command(args, train, name)
    text = (f"# Resume key: the workdir {train.workdir} (rerun the same command to resume).\n"
            + join(cmd))
    return Plan(text, lambda: _run(cmd))
  text = jobset_yaml(args, train, name)
  out = f"{workload_name(args, train, name)}.yaml"
  out = os.path.join(args.out, out) if args.out and name else args.out or out

  def execute() -> int:
    with open(out, "w") as f:
      f.write(text)
    print(f"{PROG}: wrote {out}", file=sys.stderr)
    return _run(["kubectl", "apply", "-f", out])

  return Plan(text, execute)


def _run(cmd: list) -> int:
  try:
    return subprocess.run(cmd, check=False).returncode
  except FileNotFoundError as e:
    raise LaunchError(f"{PROG}: {cmd[0]} is not installed ({e})") from e
