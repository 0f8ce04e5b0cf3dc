"""Trainer checks against an uninterrupted run (the session `reference_run`): two
`jax.distributed` processes, SIGKILL and SIGTERM resumes, refusing a resume that changes the
data or the model, and falling back from a corrupt checkpoint. Each run is a child process
(`python -m jaxtts.train`).
"""

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import PYTHON, ROOT, subprocess_env
from train_helpers import assert_params_close, final_params, losses, run, train_cmd


@pytest.mark.multiprocess
def test_two_processes_on_a_sharded_mesh_match_single_device(reference_run, synthetic_corpus,
                                                            tmp_path):
  """`jaxtts-launch local`: two `jax.distributed` processes on localhost with four CPU devices
  each, the trainer's (data, fsdp, tensor) = (2, 2, 2) mesh over all eight, vs the 1-device
  reference run.

  One run checks the local launcher (a coordinator on a free port, one log per process), both
  multi-process training and every mesh axis (the data axis spans the processes). Tolerance:
  reductions split over devices change float32 summation order, so losses agree to 1e-4
  relative and parameters to 1e-4 absolute after 6 Adam-type steps."""
  mesh = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}
  proc = subprocess.run(
      [PYTHON, "-m", "launch", "local", "--num-processes", "2", "--devices-per-process", "4",
       "--", *train_cmd(tmp_path, synthetic_corpus, 6, **mesh)[3:]],
      env=subprocess_env(1), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  for i in range(2):
    log = (tmp_path / "logs" / f"process_{i}.log").read_text()
    assert f"--process-id {i}" in log and "--coordinator-address localhost:" in log, log[-2000:]
  assert json.loads((tmp_path / "config.json").read_text())["mesh"]["tensor"] == 2
  ref, got = losses(reference_run), losses(tmp_path)
  assert sorted(got) == sorted(ref)
  np.testing.assert_allclose([got[s] for s in sorted(ref)], [ref[s] for s in sorted(ref)],
                             rtol=1e-4)
  assert_params_close(final_params(reference_run)[1], final_params(tmp_path)[1], atol=1e-4)


def test_sigkill_then_resume_matches_uninterrupted(reference_run, synthetic_corpus, tmp_path):
  cmd = train_cmd(tmp_path, synthetic_corpus, 6, **{"checkpoint.async_save": False})
  proc = subprocess.Popen(cmd, env=subprocess_env(1), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  ckpt_dir = tmp_path / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if ckpt_dir.exists() and any(d.isdigit() for d in os.listdir(ckpt_dir)):
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert killed_at < 6
  run(cmd)  # the same command resumes
  ref, got = losses(reference_run), losses(tmp_path)
  assert sorted(got) == sorted(ref)
  np.testing.assert_allclose([got[s] for s in sorted(ref)], [ref[s] for s in sorted(ref)],
                             rtol=1e-6)
  assert_params_close(final_params(reference_run)[1], final_params(tmp_path)[1], atol=1e-6)


def test_sigterm_saves_and_resume_matches(reference_run, synthetic_corpus, tmp_path):
  """SIGTERM (preemption): the run saves the step it reached, exits 143, and resumes exactly."""
  cmd = train_cmd(tmp_path, synthetic_corpus, 6, **{"checkpoint.every_steps": 100})
  proc = subprocess.Popen(cmd, env=subprocess_env(1), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  started = tmp_path / "config.json"  # written once the SIGTERM handler is installed
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and not started.exists():
    time.sleep(0.02)
  assert proc.poll() is None, "the run ended before SIGTERM could be sent"
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]
  saved = [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  assert len(saved) == 1 and 0 <= saved[0] < 6, saved  # only the SIGTERM save (every 100)
  run(cmd)
  ref, got = losses(reference_run), losses(tmp_path)
  np.testing.assert_allclose([got[s] for s in sorted(ref)], [ref[s] for s in sorted(ref)],
                             rtol=1e-6)
  assert_params_close(final_params(reference_run)[1], final_params(tmp_path)[1], atol=1e-6)


def _jaxtts_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith("jaxtts-train:")]


def test_resume_refuses_data_and_model_changes(reference_run, synthetic_corpus, tmp_path):
  """A resume that changes the data or the model exits 2 with one line naming each key with the
  workdir's and the new value (no traceback), and leaves config.json and the checkpoints as
  they were. Without config.json, the checkpoint's own shape check still refuses the model
  change, naming the parameter keys."""
  workdir = tmp_path / "w"
  shutil.copytree(reference_run, workdir)
  before = open(workdir / "config.json").read()
  proc = run(train_cmd(workdir, synthetic_corpus, 8, **{"model.decoder_dim": 24,
                                                        "data.segment_samples": 3200}),
             check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  [line] = _jaxtts_lines(proc.stderr)
  assert "data.segment_samples (1600 -> 3200)" in line and "model.decoder_dim (16 -> 24)" in line
  assert "train.steps" not in line  # an allowed change is not among the refused keys
  assert open(workdir / "config.json").read() == before
  assert max(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()) == 6
  os.remove(workdir / "config.json")
  proc = run(train_cmd(workdir, synthetic_corpus, 8, **{"model.decoder_dim": 24}), check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  [line] = _jaxtts_lines(proc.stderr)
  assert "another configuration" in line and "params/generator/" in line
  assert "shape differs" in line
  assert not os.path.exists(workdir / "config.json")
  assert max(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()) == 6


def _corrupt_largest_array_file(step_dir, seed=0):
  """Random bytes over the middle half of the largest array data file (an OCDBT ``d/`` file)
  of ``step_dir``: the metadata still reads, so the restore fails while TensorStore reads the
  arrays, the path whose late errors must not reach the user. (The largest file overall is
  sometimes ``_METADATA``, which fails earlier and hid this path.)"""
  path = max((os.path.join(d, n) for d, _, names in os.walk(step_dir)
              if os.path.basename(d) == "d" for n in names), key=os.path.getsize)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 4)
    f.write(np.random.default_rng(seed).integers(0, 256, size // 2, np.uint8).tobytes())
  return path


def test_corrupt_checkpoint_falls_back_to_the_previous_one(reference_run, synthetic_corpus,
                                                           tmp_path):
  """Random bytes in the largest array file of the newest checkpoint (6): the run logs the
  corrupt step, moves it aside, resumes from step 4 and, with train.steps raised to 8 (an
  allowed change, logged), retraces the uninterrupted run: steps 5-6 and the step-6 state
  match the reference exactly."""
  workdir = tmp_path / "w"
  shutil.copytree(reference_run, workdir)
  _corrupt_largest_array_file(workdir / "checkpoints" / "6" / "state")
  # The reference run may have been built by another xdist worker on its own (identical)
  # synthetic corpus; the resume names that corpus, since data.dir must not change.
  data_dir = json.load(open(workdir / "config.json"))["data"]["dir"]
  proc = run(train_cmd(workdir, data_dir, 8))
  assert "checkpoint step 6" in proc.stderr and "is corrupt" in proc.stderr
  assert "resumed from" in proc.stderr and "at step 4" in proc.stderr
  assert "train.steps (6 -> 8)" in proc.stderr  # the allowed change, logged
  assert "Traceback" not in proc.stderr
  assert "_NonBlockingMetadataStore" not in proc.stderr  # Orbax's INFO lines stay quiet
  assert os.listdir(workdir / "corrupt_checkpoints") == ["6"]
  ref, got = losses(reference_run), losses(workdir)
  assert sorted(got) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in sorted(ref)], [ref[s] for s in sorted(ref)],
                             rtol=1e-6)
  assert_params_close(final_params(reference_run, 6)[1], final_params(workdir, 6)[1], atol=1e-6)
