"""When a host fails: two `jax.distributed` processes of a tiny-codec run on localhost.

- SIGKILL one mid-run: the other exits 4 within the watchdog's ``peer_timeout_s`` with one
  line naming the lost process (before: a Gloo traceback, then the coordination service's
  LOG(FATAL) page and SIGABRT 61 s later).
- A barrier one process never reaches raises `BarrierTimeoutError` (one line) after its timeout.
- SIGTERM to one process only: both save the same step and exit 143; a resume on one process
  is refused with one line naming both counts; a resume on two continues to the end with the
  losses of the uninterrupted 1-device `reference_run`.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, subprocess_env
from train_helpers import losses, run, train_cmd


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start_two(workdir, data_dir, steps, **extra) -> list[subprocess.Popen]:
  port = _free_port()
  return [subprocess.Popen(
      train_cmd(workdir, data_dir, steps, **extra) + [
          "--coordinator-address", f"localhost:{port}", "--num-processes", "2",
          "--process-id", str(pid)],
      env=subprocess_env(1), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for pid in range(2)]


def _wait_for(path, procs, timeout=300.0) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if os.path.exists(path) and os.path.getsize(path) > 0:
      return
    time.sleep(0.05)
  for p in procs:
    if p.poll() is not None:
      raise AssertionError(f"a process ended early ({p.returncode}): {p.communicate()[1][-3000:]}")
  raise AssertionError(f"{path} did not appear in {timeout} s")


def _jaxtts_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith("jaxtts-train:")]


_BARRIER = """
import sys, time
import jax
pid, port = int(sys.argv[1]), sys.argv[2]
jax.distributed.initialize(f"localhost:{port}", 2, pid)
from jaxtts.train import mesh
if pid == 0:
  start = time.time()
  try:
    mesh.barrier("only-process-0", 2)
  except mesh.BarrierTimeoutError as e:
    print(f"{time.time() - start:.1f}", e)
mesh.barrier("both", 60)
"""


@pytest.mark.multiprocess
def test_a_barrier_times_out_with_one_line():
  """Process 0 waits at a barrier process 1 skips: `BarrierTimeoutError` after the 2 s timeout
  (well under 30 s), naming the barrier; both then meet at the next barrier and exit 0."""
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-c", _BARRIER, str(pid), str(port)],
                            env=subprocess_env(1), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for pid in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
  seconds, message = outs[0][0].strip().split(" ", 1)
  assert 2 <= float(seconds) < 30, seconds
  assert message.startswith("process 0: barrier 'only-process-0' timed out after 2 s"), message


@pytest.mark.multiprocess
def test_a_killed_process_ends_the_other_with_one_line(synthetic_corpus, tmp_path):
  """SIGKILL process 1 once training runs: process 0 exits 4 within 120 s (about
  ``peer_timeout_s`` = 8 s), its stderr one line naming process 1 (no traceback, no C++
  LOG(FATAL))."""
  # Without discriminators: one parameter group compiles faster (multi-process CPU programs
  # miss the persistent compilation cache).
  procs = _start_two(tmp_path, synthetic_corpus, 1000, **{"checkpoint.every_steps": 10000,
                                                          "distributed.peer_timeout_s": 8,
                                                          "discriminator.enabled": False})
  try:
    _wait_for(tmp_path / "metrics.jsonl", procs)  # process 0 logged step 1: mid-run
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    _, err = procs[0].communicate(timeout=120)
    elapsed = time.time() - killed
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  assert procs[0].returncode == 4, err[-3000:]
  assert elapsed < 120
  [line] = _jaxtts_lines(err)
  assert line.startswith("jaxtts-train: lost process 1 (no heartbeat for "), line
  assert "Traceback" not in err and "Check failure" not in err, err[-3000:]
  print(f"survivor exited {elapsed:.1f} s after the kill")


@pytest.mark.multiprocess
def test_sigterm_to_one_process_saves_one_step_on_both(synthetic_corpus, tmp_path):
  """SIGTERM to process 1 only: both exit 143 having saved the same step (the only
  checkpoint: every_steps is 100); a 1-process resume is refused (status 2, one line with
  both counts, the checkpoint kept); a 2-process resume ends at step 6 with the losses of an
  uninterrupted 1-device run (1e-4: the batch is split over two devices, as in
  test_train_resume). Without discriminators: one compiled step (process 1 of a multi-process
  run compiles every program: only process 0 writes JAX's persistent cache)."""
  extra = {"checkpoint.every_steps": 100, "discriminator.enabled": False}
  reference = tmp_path / "reference"
  run(train_cmd(reference, synthetic_corpus, 6, **extra))
  tmp_path = tmp_path / "run"
  procs = _start_two(tmp_path, synthetic_corpus, 6, **extra)
  _wait_for(tmp_path / "config.json", procs)
  procs[1].send_signal(signal.SIGTERM)
  errs = [p.communicate(timeout=300)[1] for p in procs]
  assert [p.returncode for p in procs] == [143, 143], [e[-2000:] for e in errs]
  saved = [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  assert len(saved) == 1 and 0 <= saved[0] < 6, saved
  step_dir = tmp_path / "checkpoints" / str(saved[0])
  assert sorted(n for n in os.listdir(step_dir / "data") if n.endswith(".json")) == [
      "process_0-of-2.json", "process_1-of-2.json"]  # one iterator state per process

  proc = run(train_cmd(tmp_path, synthetic_corpus, 6, **extra), num_devices=2, check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  [line] = _jaxtts_lines(proc.stderr)
  assert f"step {saved[0]}" in line and "written by 2 processes, this run has 1" in line, line
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "corrupt_checkpoints")  # refused, not quarantined

  procs = _start_two(tmp_path, synthetic_corpus, 6, **extra)
  errs = [p.communicate(timeout=300)[1] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errs]
  ref, got = losses(reference), losses(tmp_path)
  assert sorted(got) == sorted(ref)
  np.testing.assert_allclose([got[s] for s in sorted(ref)], [ref[s] for s in sorted(ref)],
                             rtol=1e-4)


def test_peer_timeout_must_be_below_the_heartbeat_timeout(synthetic_corpus, tmp_path):
  """The watchdog must name a lost process before the coordination service aborts every
  process: a ``peer_timeout_s`` at or above ``heartbeat_timeout_s`` is refused (status 2, one
  line) before `jax.distributed.initialize`."""
  proc = run(train_cmd(tmp_path, synthetic_corpus, 2, **{"distributed.peer_timeout_s": 100}) + [
      "--coordinator-address", f"localhost:{_free_port()}", "--num-processes", "2",
      "--process-id", "0"], check=False, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  [line] = _jaxtts_lines(proc.stderr)
  assert "peer_timeout_s=100 must be below heartbeat_timeout_s=100" in line, line
