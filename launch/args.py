"""What every launcher shares: the jaxtts-train arguments after `--`, the plan a launcher makes
(what `--dry-run` prints and what a real launch executes), and shell quoting."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import subprocess
import sys
from typing import Callable, Sequence


class LaunchError(Exception):
  """A one-line user error (it names the flag)."""


@dataclasses.dataclass
class TrainArgs:
  """The jaxtts-train arguments of one run: `argv` as given, plus the two every launcher reads."""
  argv: list
  config: str
  workdir: str

  def distributed(self) -> list:
    """`argv` with `--distributed` (jax.distributed.initialize auto-detection) appended."""
    return self.argv if "--distributed" in self.argv else [*self.argv, "--distributed"]


@dataclasses.dataclass
class Plan:
  """A launch: `text` is what `--dry-run` prints (the exact commands or files), `execute` runs it
  and returns the exit status."""
  text: str
  execute: Callable[[], int]


def split_argv(argv: Sequence[str]) -> tuple:
  """`[launcher flags] -- [jaxtts-train args]` -> (launcher flags, train args)."""
  argv = list(argv)
  if "--" not in argv:
    return argv, []
  i = argv.index("--")
  return argv[:i], argv[i + 1:]


def parse_train_args(argv: Sequence[str], prog: str) -> TrainArgs:
  """Reads `--config` and `--workdir` from the jaxtts-train arguments (the rest passes as is)."""
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument("--config")
  parser.add_argument("--workdir")
  known, _ = parser.parse_known_args(list(argv))
  if not known.config or not known.workdir:
    raise LaunchError(f"{prog}: give the jaxtts-train arguments after `--`, at least --config "
                      "configs/<task>.py[:preset] and --workdir DIR (the resume key)")
  for flag in ("--coordinator-address", "--num-processes", "--process-id"):
    if flag in argv:
      raise LaunchError(f"{prog}: {flag} after `--` is the launcher's to set; remove it")
  return TrainArgs(list(argv), known.config, known.workdir)


def join(argv: Sequence[str]) -> str:
  """A shell command line (each word quoted where it needs it)."""
  return shlex.join([str(a) for a in argv])


def is_url(path: str) -> bool:
  return "://" in path


def run_steps(steps: Sequence[tuple], prog: str) -> int:
  """Runs `(title, shell command)` steps in order under bash; stops at the first failure."""
  for title, command in steps:
    print(f"{prog}: {title}", file=sys.stderr, flush=True)
    try:
      rc = subprocess.run(["bash", "-c", command], check=False).returncode
    except FileNotFoundError as e:
      raise LaunchError(f"{prog}: cannot run bash: {e}") from e
    if rc != 0:
      print(f"{prog}: step '{title}' exited {rc}", file=sys.stderr)
      return rc
  return 0


def steps_text(header: Sequence[str], steps: Sequence[tuple]) -> str:
  """The dry-run listing of `steps`: comment lines, then each step's title and command."""
  lines = [f"# {h}" for h in header]
  for title, command in steps:
    lines += [f"# {title}", command]
  return "\n".join(lines)
