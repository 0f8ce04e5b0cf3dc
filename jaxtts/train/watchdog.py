"""A peer watchdog for multi-process runs: a lost process ends the others with one line.

What happens without it (measured, jax 0.10.2, two CPU processes on localhost, one SIGKILLed
mid-run): the survivor's next Gloo collective fails at once ("Connection reset by peer", a
Python traceback), the interpreter's exit then waits in the coordination service's shutdown
barrier until the service's heartbeat timeout, and the process is LOG(FATAL)ed (SIGABRT,
exit -6) with ~60 lines of C++ logs, 61 s after the kill. On GPUs a dead NCCL peer may not fail
the collective at all; only the heartbeat timeout (100 s by default) ends the run.

`Watchdog` runs two daemon threads on every process:

- a poller that, every ``interval_s``, writes this process's heartbeat counter to the
  coordination service's key-value store (``jaxtts/alive/<id>``) and reads every peer's
  (``key_value_dir_get``), noting when each one last changed, and which peers said they are
  done (``jaxtts/done/<id>``, written by `Watchdog.stop`);
- a monitor that only reads those notes (it never blocks on an RPC): a peer whose counter has
  not changed for ``peer_timeout_s``, or no reply from the coordination service (on process 0)
  for that long, prints ``jaxtts-train: lost process K (no heartbeat for N s); exiting`` and
  ends the process with `os._exit` (`LOST_PROCESS_EXIT`), skipping the interpreter shutdown
  that would wait in the service's barrier.

The heartbeats come from a background thread, so a process busy compiling, saving or stuck in
a collective still counts as alive: the watchdog detects dead processes, the barrier timeouts
(`jaxtts.train.mesh.barrier`) detect hung ones. ``peer_timeout_s`` must be shorter than the
coordination service's ``heartbeat_timeout_s`` so that this line comes first.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

LOST_PROCESS_EXIT = 4
_ALIVE, _DONE = "jaxtts/alive/", "jaxtts/done/"


def _index(key: str) -> int:
  return int(key.rstrip("/").rsplit("/", 1)[-1])


class Watchdog:
  """Ends this process when a peer stops sending heartbeats (see the module docstring)."""

  def __init__(self, client: Any, process_id: int, num_processes: int, peer_timeout_s: float,
               interval_s: float | None = None):
    self.client, self.process_id, self.num_processes = client, process_id, num_processes
    self.peer_timeout_s = float(peer_timeout_s)
    self.interval_s = interval_s or min(2.0, max(0.2, self.peer_timeout_s / 10))
    now = time.monotonic()
    self._last_change = {k: now for k in range(num_processes) if k != process_id}
    self._last_value: dict[int, str] = {}
    self._done: set[int] = set()
    self._last_reply = now
    self._stop = threading.Event()
    self._lost = threading.Event()
    self._threads = [threading.Thread(target=self._poll, name="jaxtts-watchdog-poll",
                                      daemon=True),
                     threading.Thread(target=self._monitor, name="jaxtts-watchdog",
                                      daemon=True)]

  def start(self) -> "Watchdog":
    for thread in self._threads:
      thread.start()
    return self

  def _poll(self) -> None:
    beat = 0
    while not self._stop.is_set():
      beat += 1
      try:
        self.client.key_value_set(f"{_ALIVE}{self.process_id}", str(beat), allow_overwrite=True)
        alive = self.client.key_value_dir_get(_ALIVE)
        done = self.client.key_value_dir_get(_DONE)
      except Exception:  # pylint: disable=broad-except  (the service is gone: the monitor decides)
        self._stop.wait(self.interval_s)
        continue
      now = time.monotonic()
      self._last_reply = now
      self._done.update(_index(k) for k, _ in done)
      for key, value in alive:
        k = _index(key)
        if k in self._last_change and self._last_value.get(k) != value:
          self._last_value[k] = value
          self._last_change[k] = now
      self._stop.wait(self.interval_s)

  def _monitor(self) -> None:
    while not self._stop.wait(self.interval_s):
      now = time.monotonic()
      silent = now - self._last_reply
      if silent > self.peer_timeout_s and self.process_id != 0 and 0 not in self._done:
        self._exit(f"lost process 0 (the coordination service: no reply for {silent:.0f} s)")
      for k, last in sorted(self._last_change.items()):
        if k not in self._done and now - last > self.peer_timeout_s:
          self._exit(f"lost process {k} (no heartbeat for {now - last:.0f} s)")

  def _exit(self, what: str) -> None:
    if self._stop.is_set():
      return
    self._lost.set()
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except Exception:  # pylint: disable=broad-except
        pass
    os.write(2, f"jaxtts-train: {what}; exiting\n".encode())
    os._exit(LOST_PROCESS_EXIT)  # pylint: disable=protected-access

  def wait_for_verdict(self) -> None:
    """Called when the main thread met an error in a multi-process run (a collective failing
    because a peer died, Gloo's "Connection reset by peer"): waits up to ``peer_timeout_s``
    plus two polls for the watchdog to name a lost process (it then exits the process from
    its thread); returns when none is lost, so the caller reports the error itself."""
    self._lost.wait(self.peer_timeout_s + 2 * self.interval_s + 1.0)
    if self._lost.is_set():  # the monitor is writing its line and exiting
      time.sleep(10.0)

  def stop(self, status: int) -> None:
    """Stops watching and tells the peers this process is done (exit ``status``), so that a
    process finishing first is not reported lost by the others."""
    if self._stop.is_set():
      return
    try:
      self.client.key_value_set(f"{_DONE}{self.process_id}", str(status), allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except
      pass
    self._stop.set()
