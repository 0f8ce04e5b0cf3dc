"""End-to-end trainer checks on the tiny GMM-VAE codec (real Grain, Orbax, jit; CPU): workdir
contents, loss goes down, dry run, non-finite losses, config typos.

Each run is a child process (`python -m jaxtts.train`) so it can have its own device count.
Resume, preemption and the sharded run (two processes, a (2, 2, 2) mesh over eight devices,
against one device): `test_train_resume.py`.
"""

import json
import os
import shutil

import numpy as np

from conftest import PYTHON
from train_helpers import TINY, assert_params_close, final_params, losses, run, train_cmd


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
  assert "train/mfu" not in records[0]  # CPU: no peak FLOP/s, no MFU
  # The adversarial gate (discriminator.start_step = 2): logged steps 1-2 ran at state.step 0-1,
  # where the generator's loss is mel + prior alone; from step 3 the adversarial and feature-
  # matching terms are in it, with the config's weights. The discriminator trains throughout.
  cfg = json.load(open(os.path.join(wd, "config.json")))
  lc, dc = cfg["loss"], cfg["discriminator"]
  assert dc["start_step"] == 2
  train = {r["step"]: r for r in records if "loss" in r}
  for step, r in train.items():
    base = lc["mel_weight"] * r["train/mel_loss"] + lc["prior_weight"] * r["train/prior_nll"]
    gan = (dc["adversarial_weight"] * r["train/adversarial_loss"]
           + dc["feature_matching_weight"] * r["train/feature_matching_loss"])
    assert gan > 1e-3 * base and r["train/discriminator_loss"] > 0
    want = base if step <= dc["start_step"] else base + gan
    np.testing.assert_allclose(r["loss"], want, rtol=1e-5, err_msg=f"step {step}")
  evals = [r for r in records if "eval/loss" in r]
  assert len(evals) == 1 and evals[0]["step"] == 6 and np.isfinite(evals[0]["eval/mel_loss"])
  written = [os.path.join(d, n) for d, _, names in
             os.walk(os.path.join(wd, "samples", "step_0000006")) for n in names]
  for kind in ("target.wav", "reconstruction.wav", "mel_target.png", "mel_reconstruction.png"):
    assert any(p.endswith(kind) for p in written), (kind, written)


def test_training_reduces_loss(synthetic_corpus, tmp_path):
  """30 steps; with an EMA of the generator (train.ema_decay), which is checkpointed beside the
  parameters (not for the discriminator) and lags them."""
  run(train_cmd(tmp_path, synthetic_corpus, 30, **{"checkpoint.every_steps": 30,
                                                   "train.ema_decay": 0.9}))
  curve = losses(tmp_path)
  first, last = np.mean([curve[s] for s in (1, 2, 3)]), np.mean([curve[s] for s in (28, 29, 30)])
  assert last < 0.9 * first, (first, last)
  step, params = final_params(tmp_path)
  _, ema = final_params(tmp_path, part="ema_params")
  assert step == 30 and {k.split("/")[0] for k in ema} == {"generator"}
  gen = {k: v for k, v in params.items() if k.startswith("generator/")}
  assert ema.keys() == gen.keys()
  assert max(float(np.max(np.abs(ema[k] - gen[k]))) for k in gen) > 1e-4


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


def test_nonfinite_loss_rejected_and_last_good_checkpoint_kept(reference_run, tmp_path):
  """Resuming the 6-step reference run with a NaN loss weight: three rejected steps end the run
  (exit 3) naming the last good checkpoint, which is left as it was."""
  workdir = tmp_path / "w"
  shutil.copytree(reference_run, workdir)
  good_step, good = final_params(workdir)
  assert good_step == 6
  # The reference run may have been built by the other xdist worker, on its own synthetic
  # corpus; the resume names that corpus, since data.dir must not change.
  data_dir = json.load(open(workdir / "config.json"))["data"]["dir"]
  proc = run(train_cmd(workdir, data_dir, 20, **{"loss.prior_weight": "nan",
                                                  "train.max_nonfinite_steps": 3}),
             check=False)
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "3 consecutive non-finite" in proc.stderr
  assert "last good checkpoint: step 6" in proc.stderr
  step, after = final_params(workdir)
  assert step == 6
  assert_params_close(good, after, atol=0.0)
  logged = losses(workdir)
  assert all(np.isnan(logged[s]) for s in (7, 8, 9)) and not np.isnan(logged[6])


def test_config_typo_on_command_line(synthetic_corpus, tmp_path):
  proc = run([PYTHON, "-m", "jaxtts.train", "--config", TINY, "--workdir", str(tmp_path),
              "--config.train.stpes=3"], check=False)
  assert proc.returncode == 2
  assert "no key 'stpes' under train" in proc.stderr and "batch_size" in proc.stderr
