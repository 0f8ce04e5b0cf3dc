"""`jaxtts-sweep SWEEP.py --root DIR [--parallel K] [--only I,J] [--launcher NAME [its flags]]
[--dry-run] [-- extra jaxtts-train args]`

A sweep file is Python defining `get_sweep()`, which returns
`{"config": "configs/<task>.py[:preset]", "overrides": {key: value}, "grid": [...]}`; the grid is
built with `product(**axes)`, `zipit(**axes)` and `chain(*sweeps)` from this module (dotted keys
through `**{"train.seed": [0, 1]}`; `product` and `zipit` also take sweeps positionally).

Each grid point is one run named `<index:03d>-<key=value slug>` (keys shortened to their last
unique dotted parts: `003-learning_rate=0.003-seed=1`; stable while the grid is), with
the workdir `<root>/<name>`; its jaxtts-train arguments are `--config CONFIG --workdir
<root>/<name> --config.<k>=<v> ...` (base overrides, then the point), then the extra ones.
The run's overrides and status go to `<workdir>/sweep_run.json` (the trainer writes the resolved
config.json): "running", then "done" after exit 0 or "failed". A rerun skips the done runs and
resumes the others from their checkpoints (the workdir is the resume key); a done run whose base
overrides or extra arguments changed runs again (resumes). Runs go through `--launcher`
(default local: one process each, `--parallel K` at a time); `tpu-vm` runs them one after
another on one TPU; `gke` and `slurm` submit (SLURM scripts write the done mark themselves on a
shared filesystem; a submitted run is not resubmitted without `--resubmit`). The report goes to
stdout and `<root>/sweep_report.json`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import re
import runpy
import shlex
import signal
import sys
import threading
import time
from typing import Sequence

from launch import launcher
from launch.args import LaunchError, is_url, split_argv

PROG = "jaxtts-sweep"
MARK = "sweep_run.json"


def _axes(sweeps: Sequence[list], axes: dict) -> list:
  return [*sweeps, *([{k: v} for v in values] for k, values in axes.items())]


def product(*sweeps: list, **axes: Sequence) -> list:
  """Every combination: `product(**{"a": [1, 2]}, b=[3, 4])` -> 4 points (the last axis fastest)."""
  return [dict(kv for point in combo for kv in point.items())
          for combo in itertools.product(*_axes(sweeps, axes))]


def zipit(*sweeps: list, **axes: Sequence) -> list:
  """Points side by side: `zipit(a=[1, 2], b=[3, 4])` -> [{a: 1, b: 3}, {a: 2, b: 4}]."""
  parts = _axes(sweeps, axes)
  if len({len(p) for p in parts}) > 1:
    raise LaunchError(f"{PROG}: zipit needs axes of one length, got {[len(p) for p in parts]}")
  return [dict(kv for point in combo for kv in point.items()) for combo in zip(*parts)]


def chain(*sweeps: list) -> list:
  """One sweep after another."""
  return [point for sweep in sweeps for point in sweep]


def _fmt(value) -> str:
  return repr(value) if isinstance(value, str) and not value else str(value)


def short_keys(keys: Sequence[str]) -> dict:
  """Each dotted key -> its shortest suffix no other key ends with (train.seed -> seed)."""
  keys, out = sorted(set(keys)), {}
  for key in keys:
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
      tail = ".".join(parts[-n:])
      if not any(k != key and (k == tail or k.endswith("." + tail)) for k in keys):
        break
    out[key] = tail
  return out


def slug(point: dict, short: dict | None = None, limit: int = 80) -> str:
  """`seed=0-learning_rate=0.003`: the point's keys (shortened) and values, filename-safe."""
  short = short or {}
  text = "-".join(f"{short.get(k, k)}={_fmt(v)}" for k, v in point.items()) or "run"
  return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text)[:limit]


def load(path: str) -> dict:
  """The sweep file's `get_sweep()`, checked."""
  if not os.path.isfile(path):
    raise LaunchError(f"{PROG}: sweep file {path} not found")
  get = runpy.run_path(path).get("get_sweep")
  if not callable(get):
    raise LaunchError(f"{PROG}: {path} defines no get_sweep()")
  spec = get()
  if not isinstance(spec, dict) or "config" not in spec or not isinstance(
      spec.get("grid"), list):
    raise LaunchError(f"{PROG}: {path}: get_sweep() must return "
                      "{'config': ..., 'overrides': {...}, 'grid': [...]}")
  return {"config": spec["config"], "overrides": dict(spec.get("overrides", {})),
          "grid": spec["grid"]}


def expand(spec: dict, root: str, extra: Sequence[str] = ()) -> list:
  """One dict per run: index, name, point, overrides, workdir, argv (jaxtts-train arguments)."""
  runs, short = [], short_keys([k for point in spec["grid"] for k in point])
  for i, point in enumerate(spec["grid"]):
    name = f"{i:03d}-{slug(point, short)}"
    workdir = os.path.join(root, name)
    overrides = {**spec["overrides"], **point}
    argv = ["--config", spec["config"], "--workdir", workdir,
            *[f"--config.{k}={_fmt(v)}" for k, v in overrides.items()], *extra]
    runs.append({"index": i, "name": name, "point": point, "overrides": overrides,
                 "workdir": workdir, "argv": argv})
  return runs


def read_mark(run: dict):
  path = os.path.join(run["workdir"], MARK)
  if is_url(run["workdir"]) or not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def mark_record(run: dict, status: str, code=None) -> dict:
  return {"name": run["name"], "index": run["index"], "point": run["point"],
          "overrides": run["overrides"], "argv": run["argv"], "status": status,
          "exit_code": code, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_mark(run: dict, status: str, code=None) -> None:
  if is_url(run["workdir"]):
    return
  os.makedirs(run["workdir"], exist_ok=True)
  tmp = os.path.join(run["workdir"], MARK + ".tmp")
  with open(tmp, "w") as f:
    json.dump(mark_record(run, status, code), f, indent=1, default=str)
  os.replace(tmp, os.path.join(run["workdir"], MARK))


def decide(run: dict, resubmit: bool) -> str:
  """skip (done), skip-submitted, resume (checkpoints exist) or run."""
  mark = read_mark(run)
  if mark is not None:
    if json.loads(json.dumps(mark["point"])) != json.loads(json.dumps(run["point"], default=str)):
      raise LaunchError(f"{PROG}: {run['workdir']} holds the run {mark['point']}, not "
                        f"{run['point']}: the grid changed order; use another --root")
    same = mark["argv"] == run["argv"]
    if mark["status"] == "done" and same:
      return "skip"
    if mark["status"] == "submitted" and same and not resubmit:
      return "skip-submitted"
  ckpts = os.path.join(run["workdir"], "checkpoints")
  return "resume" if os.path.isdir(ckpts) and os.listdir(ckpts) else "run"


def _done_shell(run: dict) -> str:
  """Shell lines writing the done mark (for scripts running on a shared filesystem)."""
  record = json.dumps(mark_record(run, "done", 0), default=str)
  path = shlex.quote(os.path.join(os.path.abspath(run["workdir"]), MARK))
  return f"cat > {path} <<'JAXTTS_SWEEP_EOF'\n{record}\nJAXTTS_SWEEP_EOF"


def make_plan(run: dict, name: str, largs: argparse.Namespace, stop: threading.Event):
  if name == "local":
    return launcher.make_plan(name, largs, run["argv"], run["name"], stop=stop)
  if name == "slurm" and not is_url(run["workdir"]):
    return launcher.make_plan(name, largs, run["argv"], run["name"],
                              on_success=_done_shell(run))
  return launcher.make_plan(name, largs, run["argv"], run["name"])


def execute(run: dict, name: str, largs: argparse.Namespace, stop: threading.Event) -> str:
  if stop.is_set():
    return "stopped"
  plan = make_plan(run, name, largs, stop)
  print(f"{PROG}: {run['name']}: starting ({run['workdir']})", file=sys.stderr, flush=True)
  if name in ("gke", "slurm"):
    rc = plan.execute()
    write_mark(run, "submitted" if rc == 0 else "failed", rc)
    return "submitted" if rc == 0 else f"failed ({rc})"
  write_mark(run, "running")
  rc = plan.execute()
  write_mark(run, "done" if rc == 0 else "failed", rc)
  print(f"{PROG}: {run['name']}: exit {rc}", file=sys.stderr, flush=True)
  return "done" if rc == 0 else f"failed ({rc})"


def parse(argv: Sequence[str]) -> tuple:
  own, extra = split_argv(argv)
  p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("sweep", help="a Python file defining get_sweep()")
  p.add_argument("--root", required=True, help="one workdir per run under it")
  p.add_argument("--launcher", choices=tuple(launcher.LAUNCHERS), default="local")
  p.add_argument("--parallel", type=int, default=1, help="local runs at a time (default 1)")
  p.add_argument("--only", default=None, help="run indices, e.g. 0,3 (default all)")
  p.add_argument("--resubmit", action="store_true", help="submit runs marked submitted again")
  p.add_argument("--dry-run", action="store_true", help="list the runs and their commands")
  args, rest = p.parse_known_args(own)
  largs = launcher.launcher_parser(args.launcher).parse_args(rest)
  if args.parallel < 1:
    raise LaunchError(f"{PROG}: --parallel must be >= 1, got {args.parallel}")
  if args.parallel > 1 and args.launcher != "local":
    raise LaunchError(f"{PROG}: --parallel runs local runs only, not --launcher {args.launcher}")
  return args, largs, extra


def main(argv: Sequence[str] | None = None) -> int:
  try:
    args, largs, extra = parse(sys.argv[1:] if argv is None else argv)
    runs = expand(load(args.sweep), args.root, extra)
    if args.only is not None:
      try:
        keep = {int(i) for i in args.only.split(",")}
      except ValueError:
        print(f"{PROG}: --only wants indices like 0,3, got {args.only!r}", file=sys.stderr)
        return 2
      runs = [r for r in runs if r["index"] in keep]
    todo = [(r, decide(r, args.resubmit)) for r in runs]
    if args.dry_run:
      for run, what in todo:
        print(f"# {run['name']}: {what}")
        if not what.startswith("skip"):
          print(make_plan(run, args.launcher, largs, threading.Event()).text)
      return 0
    return _run_all(todo, args, largs)
  except LaunchError as e:
    print(e, file=sys.stderr)
    return 2


def _run_all(todo: list, args: argparse.Namespace, largs: argparse.Namespace) -> int:
  stop = threading.Event()
  previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
  report = {r["name"]: ("skipped" if what.startswith("skip") else None) for r, what in todo}
  pending = [r for r, what in todo if not what.startswith("skip")]
  try:
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
      futures = {pool.submit(execute, r, args.launcher, largs, stop): r for r in pending}
      for future in concurrent.futures.as_completed(futures):
        report[futures[future]["name"]] = future.result()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  for name, status in report.items():
    print(f"{name}: {status}")
  if not is_url(args.root):
    os.makedirs(args.root, exist_ok=True)
    with open(os.path.join(args.root, "sweep_report.json"), "w") as f:
      json.dump({"sweep": args.sweep, "launcher": args.launcher, "runs": report}, f, indent=1)
  ok = all(s in ("done", "skipped", "submitted") for s in report.values())
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
