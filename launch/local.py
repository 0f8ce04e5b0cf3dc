"""`jaxtts-launch local`: N jaxtts-train processes on this machine, joined by jax.distributed on a
free localhost port.

Each process writes `<workdir>/logs/process_<i>.log` (or under `--log-dir`; appended across
retries). The launcher waits for all; when one exits non-zero it sends SIGTERM to the rest,
SIGKILLs those still alive after `--kill-timeout` seconds, and exits with the failed process's
status, naming it and its log.
`--retries R` reruns the whole group (the trainer resumes from the workdir's checkpoints), except
after exit 2 (a bad config, which a rerun repeats).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

from launch.args import LaunchError, Plan, TrainArgs, is_url, join

PROG = "jaxtts-launch local"


def add_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--num-processes", type=int, default=1,
                      help="jaxtts-train processes on this machine (default 1)")
  parser.add_argument("--devices-per-process", type=int, default=None,
                      help="CPU devices per process (XLA host device count; sets "
                           "JAX_PLATFORMS=cpu); default: leave the platform alone")
  parser.add_argument("--retries", type=int, default=0,
                      help="reruns (resumes) after a failed attempt (default 0)")
  parser.add_argument("--kill-timeout", type=float, default=30.0,
                      help="seconds the other processes get after SIGTERM once one failed")
  parser.add_argument("--log-dir", default=None,
                      help="where process_<i>.log go (default <workdir>/logs)")
  parser.add_argument("--trainer", default=None,
                      help="the trainer command (default: this Python -m jaxtts.train)")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def process_env(base: dict, devices: int | None) -> dict:
  """`base` with `devices` CPU devices per process (other XLA flags kept)."""
  env = dict(base)
  if devices is not None:
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {flags.strip()}".strip()
    env["JAX_PLATFORMS"] = "cpu"
  return env


def commands(args: argparse.Namespace, train: TrainArgs, port: int) -> list:
  """One argv per process."""
  trainer = shlex.split(args.trainer) if args.trainer else [sys.executable, "-m", "jaxtts.train"]
  if args.num_processes == 1:
    return [[*trainer, *train.argv]]
  return [[*trainer, *train.argv, "--coordinator-address", f"localhost:{port}",
           "--num-processes", str(args.num_processes), "--process-id", str(i)]
          for i in range(args.num_processes)]


def log_dir(args: argparse.Namespace, train: TrainArgs) -> str:
  if getattr(args, "log_dir", None):
    return args.log_dir
  if is_url(train.workdir):
    raise LaunchError(f"{PROG}: workdir {train.workdir} is not a local path; give --log-dir")
  return os.path.join(train.workdir, "logs")


def log_path(logs: str, i: int) -> str:
  return os.path.join(logs, f"process_{i}.log")


def _stop(procs: list, timeout: float) -> None:
  """SIGTERM to every live process group, SIGKILL to those alive after `timeout` seconds."""
  for p in procs:
    if p.poll() is None:
      _signal(p, signal.SIGTERM)
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and any(p.poll() is None for p in procs):
    time.sleep(0.1)
  for p in procs:
    if p.poll() is None:
      _signal(p, signal.SIGKILL)
    p.wait()


def _signal(p: subprocess.Popen, sig: int) -> None:
  try:
    os.killpg(p.pid, sig)
  except ProcessLookupError:
    pass


def _tail(path: str, n: int = 10) -> str:
  with open(path, errors="replace") as f:
    return "".join(f.readlines()[-n:])


def attempt(args: argparse.Namespace, train: TrainArgs, attempt_no: int, env: dict,
            quiet: bool = False, stop: threading.Event | None = None) -> tuple:
  """One run of all processes; returns (exit status, index of the failed process or None).
  Setting `stop` (else SIGTERM / SIGINT here) stops them (they save) and returns 143."""
  logs_dir = log_dir(args, train)
  os.makedirs(logs_dir, exist_ok=True)
  cmds = commands(args, train, free_port())
  procs, logs = [], []
  previous = {}
  if stop is None:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():  # forward SIGTERM / SIGINT
      for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())
  try:
    for i, cmd in enumerate(cmds):
      log = open(log_path(logs_dir, i), "a")  # pylint: disable=consider-using-with
      log.write(f"=== jaxtts-launch local: attempt {attempt_no}: {join(cmd)}\n")
      log.flush()
      logs.append(log)
      procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    env=process_env(env, args.devices_per_process),
                                    start_new_session=True))
    while True:
      if stop.is_set():
        _stop(procs, args.kill_timeout)
        return 143, None
      codes = [p.poll() for p in procs]
      failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        _stop(procs, args.kill_timeout)
        i = failed[0]
        if not quiet:
          print(f"{PROG}: process {i} of {len(procs)} exited {codes[i]} (log: "
                f"{log_path(logs_dir, i)}); stopped the others\n"
                f"{_tail(log_path(logs_dir, i))}", file=sys.stderr, end="")
        return codes[i], i
      if all(c == 0 for c in codes):
        return 0, None
      time.sleep(0.2)
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
    for log in logs:
      log.close()


def run(args: argparse.Namespace, train: TrainArgs, env: dict | None = None,
        quiet: bool = False, stop: threading.Event | None = None) -> int:
  """All attempts: the first, then up to `args.retries` resumes."""
  env = dict(os.environ) if env is None else env
  for k in range(args.retries + 1):
    rc, _ = attempt(args, train, k, env, quiet=quiet, stop=stop)
    if rc == 0:
      if not quiet:
        print(f"{PROG}: {args.num_processes} process(es) finished (logs: "
              f"{log_dir(args, train)})", file=sys.stderr)
      return 0
    if rc in (2, 143) or k == args.retries:
      return rc
    print(f"{PROG}: retry {k + 1} of {args.retries}: resuming from {train.workdir}",
          file=sys.stderr)
  return rc


def plan(args: argparse.Namespace, train: TrainArgs, name: str | None = None,
         env: dict | None = None, quiet: bool = False,
         stop: threading.Event | None = None) -> Plan:
  """The local launch of `train` (`name` is unused: the workdir names the run)."""
  del name
  if args.num_processes < 1:
    raise LaunchError(f"{PROG}: --num-processes must be >= 1, got {args.num_processes}")
  if args.devices_per_process is not None and args.devices_per_process < 1:
    raise LaunchError(f"{PROG}: --devices-per-process must be >= 1, "
                      f"got {args.devices_per_process}")
  port, logs = ("PORT" if args.num_processes > 1 else 0), log_dir(args, train)
  lines = [f"# {args.num_processes} process(es) on this machine; PORT is a free localhost port "
           "picked at launch.",
           f"# Resume key: the workdir {train.workdir} (rerun the same command to resume).",
           f"mkdir -p {shlex.quote(logs)}"]
  prefix = ""
  if args.devices_per_process is not None:
    prefix = (f"XLA_FLAGS=--xla_force_host_platform_device_count={args.devices_per_process} "
              "JAX_PLATFORMS=cpu ")
  for i, cmd in enumerate(commands(args, train, port)):
    lines.append(f"{prefix}{join(cmd)} >> {shlex.quote(log_path(logs, i))} 2>&1 &")
  lines.append("wait")
  return Plan("\n".join(lines), lambda: run(args, train, env, quiet, stop))
