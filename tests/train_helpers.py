"""Helpers of the trainer tests: tiny-codec runs in child processes and their outputs."""

import json
import os
import subprocess

import numpy as np
import orbax.checkpoint as ocp

from conftest import PYTHON, ROOT, subprocess_env

TINY = os.path.join(ROOT, "configs", "gmm_vae.py") + ":tiny"


def facodec_batch(segment_samples, hop_length):
  """A FACodec training batch of 4 crops (harmonic tones with noise, two of them short) with
  random phone, F0 and voicing labels, as NumPy arrays."""
  rng = np.random.default_rng(0)
  b, s = 4, int(segment_samples)
  f = s // hop_length
  t = np.arange(s) / 16000
  return {"audio": (0.3 * np.sin(2 * np.pi * rng.uniform(100, 200, (b, 1)) * t)
                    + 0.01 * rng.standard_normal((b, s))).astype(np.float32),
          "audio_len": np.array([s, s, 1200, 800], np.int32),
          "speaker_id": np.array([0, 1, 2, 1], np.int32),
          "phone_labels": rng.integers(1, 20, (b, f)).astype(np.int32),
          "f0": rng.uniform(90, 250, (b, f)).astype(np.float32),
          "voiced": rng.random((b, f)) < 0.7}


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


def final_params(workdir, step=None, part="params"):
  """Parameters (or another part of the state: ``part="ema_params"``) of a checkpoint as NumPy
  arrays, whatever mesh or process count wrote them."""
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
                for path, v in jax.tree_util.tree_flatten_with_path(state[part])[0]}


def assert_params_close(a, b, atol):
  assert a.keys() == b.keys()
  worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
  assert worst <= atol, f"max parameter difference {worst} > {atol}"
