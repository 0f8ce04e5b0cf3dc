"""Train-step throughput of a task preset; prints one JSON line.

    python benchmarks/train_throughput.py --config configs/gmm_vae.py:tiny --steps 50 \
        [--data-dir DIR] [--config.a.b=value ...]

Without --data-dir the synthetic corpus the preset's task reads (audio, latents, or FACodec
codes + timbre + phone prosody codes: `benchmarks/input_consumption.preset_corpus`) is written
to a temp dir, utterances of --min-seconds to --max-seconds. ``frames_per_sec`` counts the
batch's unpadded frames (tokens of the primary field: codes / latents frames, audio frames at
the corpus hop), ``padded_frames_per_sec`` the frames the step computes. Figures: steps/s, audio
seconds/s (crop mode), per-device TFLOP/s from the compiled step's cost analysis (counts
rematerialisation: ``hfu``) and from the task's analytic model FLOPs (``mfu``, MaxText's
convention: matmuls, backward = 2x forward, no remat), both over the chip's dense bf16 peak
(`jaxtts.train.mfu`; null on CPU unless ``--config.train.peak_flops_per_device`` is set); the
first (compiling) step is excluded.

Example (2 shared CPU cores, `gmm_vae.py:tiny`, batch 8 x 4000 samples, 10 steps,
``--config.train.peak_flops_per_device=1e12``): 2.83 steps/s, 5.7 audio s/s, model FLOPs
8.39 GFLOP/step (0.024 TFLOP/s, "mfu" 0.0237 of the nominal 1 TFLOP/s) against XLA's 8.04
GFLOP/step (0.023 TFLOP/s): the compiled backward skips gradients nothing uses (e.g. the
input gradient of each network's first convolution), which the 3x-forward convention counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import input_consumption  # noqa: E402
from jaxtts.data.source import read_manifest  # noqa: E402
from jaxtts.train import config as config_lib  # noqa: E402
from jaxtts.train import loop, mesh as mesh_lib, mfu  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/gmm_vae.py:tiny")
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--data-dir", default=None)
  parser.add_argument("--min-seconds", type=float, default=1.0)
  parser.add_argument("--max-seconds", type=float, default=4.0)
  args, rest = parser.parse_known_args(argv)
  tmp = tempfile.mkdtemp(prefix="jaxtts-bench-")
  data_dir = args.data_dir
  if data_dir is None:
    data_dir = os.path.join(tmp, "corpus")
    input_consumption.preset_corpus(
        config_lib.build_config(args.config, rest), data_dir, speakers=4,
        utterances_per_speaker=16, min_seconds=args.min_seconds, max_seconds=args.max_seconds)
  cfg = config_lib.build_config(args.config, [f"--config.data.dir={data_dir}", *rest])
  trainer = loop.Trainer(cfg, os.path.join(tmp, "workdir"))
  trainer._compile()  # pylint: disable=protected-access
  trainer._executables = {}  # pylint: disable=protected-access
  state = trainer.init_state()
  it = trainer.task.train_iterator(cfg.train.batch_size, 0)
  batch = mesh_lib.global_batch(next(it), trainer.mesh)
  t0 = time.perf_counter()
  compiled, flops = trainer._compiled_step(state, batch)  # pylint: disable=protected-access
  model_flops = trainer.model_flops_per_device(batch)
  peak = mfu.peak_flops_per_device(cfg.train.get("peak_flops_per_device", 0.0))
  compile_s = time.perf_counter() - t0
  state, m = compiled(state, batch)
  jax.block_until_ready(m)
  primary, length_key = next((p, k) for p, k in (("codes", "code_len"), ("latents", "latent_len"),
                                                 ("audio", "audio_len")) if k in batch)
  hop = int(read_manifest(data_dir)["hop_length"]) if primary == "audio" else 1  # audio frames
  frames = padded = 0
  t0 = time.perf_counter()
  for _ in range(args.steps):
    host = next(it)
    frames += int(np.sum(host[length_key])) // hop
    padded += int(np.prod(np.shape(host[primary])[:2])) // hop
    batch = mesh_lib.global_batch(host, trainer.mesh)
    state, m = compiled(state, batch)
  jax.block_until_ready(m)
  dt = time.perf_counter() - t0
  steps_per_sec = args.steps / dt
  audio_s = cfg.train.batch_size * cfg.data.segment_samples / cfg.data.sample_rate
  hfu, model_fu = (mfu.utilisation(f, steps_per_sec, peak) for f in (flops, model_flops))
  print(json.dumps({
      "config": args.config, "overrides": rest, "devices": jax.device_count(),
      "platform": jax.devices()[0].platform, "batch_size": cfg.train.batch_size,
      "compile_seconds": round(compile_s, 2), "steps_per_sec": round(steps_per_sec, 3),
      "audio_seconds_per_sec": (round(steps_per_sec * audio_s, 2)
                                if cfg.data.mode == "crop" else None),
      "frames_per_sec": round(frames / dt, 1), "padded_frames_per_sec": round(padded / dt, 1),
      # cost_analysis of an SPMD executable counts the per-device program.
      "flops_per_step": flops,
      "tflops_per_device": round(flops * steps_per_sec / 1e12, 4),
      "model_flops_per_device_step": model_flops,
      "model_tflops_per_device": round(model_flops * steps_per_sec / 1e12, 4),
      "peak_flops_per_device": peak, "device_kind": jax.devices()[0].device_kind,
      "hfu": None if hfu is None else round(hfu, 4),
      "mfu": None if model_fu is None else round(model_fu, 4)}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
