"""Train-step throughput of a task preset; prints one JSON line.

    python benchmarks/train_throughput.py --config configs/gmm_vae.py:tiny --steps 50 \
        [--data-dir DIR] [--config.a.b=value ...]

Without --data-dir a synthetic corpus is written to a temp dir. Figures: steps/s, audio
seconds/s (crop mode), per-device TFLOP/s from the compiled step's cost analysis; the first
(compiling) step is excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxtts.data import pipeline  # noqa: E402
from jaxtts.data.synthetic import write_synthetic_corpus  # noqa: E402
from jaxtts.train import config as config_lib  # noqa: E402
from jaxtts.train import loop, mesh as mesh_lib  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/gmm_vae.py:tiny")
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--data-dir", default=None)
  args, rest = parser.parse_known_args(argv)
  tmp = tempfile.mkdtemp(prefix="jaxtts-bench-")
  data_dir = args.data_dir
  if data_dir is None:
    data_dir = os.path.join(tmp, "corpus")
    write_synthetic_corpus(data_dir, num_speakers=4, utterances_per_speaker=16,
                           min_seconds=1.0, max_seconds=4.0)
  cfg = config_lib.build_config(args.config, [f"--config.data.dir={data_dir}", *rest])
  trainer = loop.Trainer(cfg, os.path.join(tmp, "workdir"))
  trainer._compile()  # pylint: disable=protected-access
  trainer._executables = {}  # pylint: disable=protected-access
  state = trainer.init_state()
  it = pipeline.make_iterator(cfg.data, cfg.data.train_split,
                              global_batch_size=cfg.train.batch_size, seed=0, train=True)
  batch = mesh_lib.global_batch(next(it), trainer.mesh)
  t0 = time.perf_counter()
  compiled, flops = trainer._compiled_step(state, batch)  # pylint: disable=protected-access
  compile_s = time.perf_counter() - t0
  state, m = compiled(state, batch)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(args.steps):
    batch = mesh_lib.global_batch(next(it), trainer.mesh)
    state, m = compiled(state, batch)
  jax.block_until_ready(m)
  dt = time.perf_counter() - t0
  steps_per_sec = args.steps / dt
  audio_s = cfg.train.batch_size * cfg.data.segment_samples / cfg.data.sample_rate
  print(json.dumps({
      "config": args.config, "overrides": rest, "devices": jax.device_count(),
      "platform": jax.devices()[0].platform, "batch_size": cfg.train.batch_size,
      "compile_seconds": round(compile_s, 2), "steps_per_sec": round(steps_per_sec, 3),
      "audio_seconds_per_sec": round(steps_per_sec * audio_s, 2),
      "flops_per_step": flops,
      # cost_analysis of an SPMD executable counts the per-device program.
      "tflops_per_device": round(flops * steps_per_sec / 1e12, 4)}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
