"""End-to-end trainer checks on the tiny GMM-VAE codec (real Grain, Orbax, jit; CPU).

Each run is a child process (`python -m jaxtts.train`) so it can have its own device count,
be killed with SIGKILL, or join a two-process `jax.distributed` job.
"""

import json
import os
import signal
import socket
import subprocess
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import PYTHON, ROOT, subprocess_env

TINY = os.path.join(ROOT, "configs", "gmm_vae.py") + ":tiny"


def overrides(data_dir, steps, **extra):
  """A very small, fast tiny-codec run: per-step logging, checkpoints every 2 steps."""
  values = {
      "data.dir": data_dir, "train.steps": steps, "train.batch_size": 8,
      "data.segment_samples": 1600, "checkpoint.every_steps": 2,
      "train.log_every_steps": 1, "train.eval_every_steps": 0, "train.sample_every_steps": 0,
      "logging.progress_bar": False, "model.decoder_dim": 16, "model.encoder_strides": "(8,25)",
      # Both parameter groups (generator, small discriminators); adversarial terms from step 2.
      "discriminator.start_step": 2,
  }
  values.update(extra)
  return [f"--config.{k}={v}" for k, v in values.items()]


def train_cmd(workdir, data_dir, steps, **extra):
  return [PYTHON, "-m", "jaxtts.train", "--config", TINY, "--workdir", str(workdir),
          *overrides(data_dir, steps, **extra)]


def run(cmd, num_devices=1, check=True, timeout=600):
  proc = subprocess.run(cmd, env=subprocess_env(num_devices), cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stderr[-4000:]}")
  return proc


def losses(workdir):
  """step -> loss from metrics.jsonl (a resumed run re-logs steps; the file has no duplicates)."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if "loss" not in rec:  # eval lines
        continue
      assert rec["step"] not in out, f"duplicate step {rec['step']} in metrics.jsonl"
      out[rec["step"]] = rec["loss"]
  return out


def final_params(workdir, step=None):
  """Parameters of a checkpoint as NumPy arrays, whatever mesh or process count wrote them."""
  import jax
  ckpt_dir = os.path.join(workdir, "checkpoints")
  step = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) if step is None else step
  path = os.path.join(ckpt_dir, str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  as_numpy = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), tree,
                          is_leaf=lambda x: hasattr(x, "shape"))
  state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  return step, {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
                for path, v in jax.tree_util.tree_flatten_with_path(state["params"])[0]}


def assert_params_close(a, b, atol):
  assert a.keys() == b.keys()
  worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
  assert worst <= atol, f"max parameter difference {worst} > {atol}"


@pytest.fixture(scope="module")
def reference_run(synthetic_corpus, tmp_path_factory):
  """An uninterrupted 6-step run on one device: the reference for every comparison."""
  workdir = tmp_path_factory.mktemp("reference")
  # Eval and samples at the last step (they read their own iterator; training is unaffected).
  # The synthetic valid split is smaller than a batch; the held-out speaker's split is not.
  run(train_cmd(workdir, synthetic_corpus, 6, **{"train.eval_every_steps": 6,
                                                 "train.sample_every_steps": 6,
                                                 "data.eval_split": "test_zero_shot"}))
  return str(workdir)


def test_workdir_contents(reference_run):
  wd = reference_run
  for name in ("config.json", "params.json", "metrics.jsonl"):
    assert os.path.exists(os.path.join(wd, name)), name
  assert sorted(losses(wd)) == [1, 2, 3, 4, 5, 6]
  assert all(np.isfinite(v) for v in losses(wd).values())
  assert os.listdir(os.path.join(wd, "tensorboard"))
  steps = sorted(int(d) for d in os.listdir(os.path.join(wd, "checkpoints")) if d.isdigit())
  assert steps[-1] == 6 and len(steps) <= 3  # keep-N = 3
  report = json.load(open(os.path.join(wd, "params.json")))
  groups = report["groups"]
  assert set(groups) == {"generator", "discriminator"}
  assert report["total"] == sum(g["total"] for g in groups.values())
  assert groups["generator"]["total"] > 0 and groups["discriminator"]["total"] > 0
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert records[0]["train/steps_per_sec"] > 0 and records[0]["train/tflops_per_device"] > 0
  # Adversarial terms are off before discriminator.start_step (2), on after it.
  assert records[0]["train/adversarial_loss"] > 0 and records[0]["train/discriminator_loss"] > 0
  evals = [r for r in records if "eval/loss" in r]
  assert len(evals) == 1 and evals[0]["step"] == 6 and np.isfinite(evals[0]["eval/mel_loss"])
  written = [os.path.join(d, n) for d, _, names in
             os.walk(os.path.join(wd, "samples", "step_0000006")) for n in names]
  for kind in ("target.wav", "reconstruction.wav", "mel_target.png", "mel_reconstruction.png"):
    assert any(p.endswith(kind) for p in written), (kind, written)


def test_training_reduces_loss(synthetic_corpus, tmp_path):
  run(train_cmd(tmp_path, synthetic_corpus, 30, **{"checkpoint.every_steps": 30}))
  curve = losses(tmp_path)
  first, last = np.mean([curve[s] for s in (1, 2, 3)]), np.mean([curve[s] for s in (28, 29, 30)])
  assert last < 0.9 * first, (first, last)


def test_dry_run_writes_params_json(synthetic_corpus, tmp_path):
  proc = run([PYTHON, "-m", "jaxtts.train", "--config", TINY.replace(":tiny", ":paper"),
              "--workdir", str(tmp_path), "--dry-run", f"--config.data.dir={synthetic_corpus}",
              "--config.mesh.fsdp=2", "--config.mesh.tensor=2"], num_devices=8)
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  report = json.load(open(tmp_path / "params.json"))
  assert summary["params_total"] == report["total"]
  assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  entries = report["groups"]["generator"]["params"]
  sharded = [e for e in entries.values() if "fsdp" in e["sharding"] or "tensor" in e["sharding"]]
  assert sharded, "no parameter is sharded over fsdp/tensor"
  assert not os.path.exists(tmp_path / "checkpoints")


def test_sharded_matches_single_device(reference_run, synthetic_corpus, tmp_path):
  """(data, fsdp, tensor) = (2, 2, 2) over 8 CPU devices vs the 1-device reference.

  Tolerance: reductions split over devices change float32 summation order, so losses agree to
  1e-4 relative and parameters to 1e-4 absolute after 6 Adam-type steps.
  """
  run(train_cmd(tmp_path, synthetic_corpus, 6, **{"mesh.data": 2, "mesh.fsdp": 2,
                                                  "mesh.tensor": 2}), num_devices=8)
  ref, got = losses(reference_run), losses(tmp_path)
  np.testing.assert_allclose([got[s] for s in sorted(ref)], [ref[s] for s in sorted(ref)],
                             rtol=1e-4)
  assert_params_close(final_params(reference_run)[1], final_params(tmp_path)[1], atol=1e-4)


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_processes_match_single_process(reference_run, synthetic_corpus, tmp_path):
  """Two `jax.distributed` processes on localhost, two CPU devices each, vs one process."""
  port = _free_port()
  procs = []
  for pid in range(2):
    cmd = train_cmd(tmp_path, synthetic_corpus, 6) + [
        "--coordinator-address", f"localhost:{port}", "--num-processes", "2",
        "--process-id", str(pid)]
    procs.append(subprocess.Popen(cmd, env=subprocess_env(2), cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-4000:]
  ref, got = losses(reference_run), losses(tmp_path)
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


def test_nonfinite_loss_rejected_and_last_good_checkpoint_kept(synthetic_corpus, tmp_path):
  run(train_cmd(tmp_path, synthetic_corpus, 4))
  good_step, good = final_params(tmp_path)
  assert good_step == 4
  proc = run(train_cmd(tmp_path, synthetic_corpus, 20, **{"loss.prior_weight": "nan",
                                                           "train.max_nonfinite_steps": 3}),
             check=False)
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "3 consecutive non-finite" in proc.stderr
  assert "last good checkpoint: step 4" in proc.stderr
  step, after = final_params(tmp_path)
  assert step == 4
  assert_params_close(good, after, atol=0.0)
  logged = losses(tmp_path)
  assert all(np.isnan(logged[s]) for s in (5, 6, 7))


def test_config_typo_on_command_line(synthetic_corpus, tmp_path):
  proc = run([PYTHON, "-m", "jaxtts.train", "--config", TINY, "--workdir", str(tmp_path),
              "--config.train.stpes=3"], check=False)
  assert proc.returncode == 2
  assert "no key 'stpes' under train" in proc.stderr and "batch_size" in proc.stderr


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


def test_checkpoint_of_another_config_is_refused(reference_run, synthetic_corpus, tmp_path):
  """Resuming a workdir with a config whose parameter shapes differ exits 2 naming the keys,
  and leaves the workdir's config.json and checkpoints as they were."""
  import shutil
  workdir = tmp_path / "w"
  shutil.copytree(reference_run, workdir)
  before = open(workdir / "config.json").read()
  proc = run(train_cmd(workdir, synthetic_corpus, 8, **{"model.decoder_dim": 24}), check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "another configuration" in proc.stderr and "params/generator/" in proc.stderr
  assert "shape differs" in proc.stderr
  assert open(workdir / "config.json").read() == before
  assert max(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()) == 6
