"""GMM-LM train-step throughput and MFU for a `configs/gmm_lm.py` preset; prints one JSON line.

    python benchmarks/gmm_lm_throughput.py [--config configs/gmm_lm.py:tiny] [--steps 20] \
        [--warmup 2] [--data-dir DIR] [--peak-tflops 989] [--config.a.b=value ...]
    python benchmarks/gmm_lm_throughput.py --config configs/gmm_lm.py:mini --steps 50   # GPU

The generic `jaxtts.train.loop.Trainer` runs the task's compiled train step, as
`benchmarks/train_throughput.py` does for the codec. Without ``--data-dir`` a synthetic latent
corpus (`write_synthetic_corpus(..., latent_dim=model.latent_dim,
hop_length=model.latent_hop)`) is written to a temp dir, with utterances of ``--min-seconds``
to ``--max-seconds`` (default: up to the preset's largest bucket) so every length bucket is
used. Its phoneme ids are < 16, inside every preset's ``model.vocab_size`` (the default
symbol table), so the vocabulary is left as configured.

Bucket batching gives one compiled step per bucket shape. Each shape is compiled the first
time it appears (compile seconds summed and reported, excluded from the timing, as the Trainer
does) and its first run is an untimed warm-up; ``--warmup`` further steps are untimed too.
Figures over the ``--steps`` timed steps (input pipeline included, as in training, unless
``--cycle-batches K`` pre-reads K batches and cycles them):

* ``steps_per_sec``; ``latent_frames_per_sec`` (real frames, from ``latent_len``) and
  ``padded_frames_per_sec`` (frames the step computes on, padding included).
* ``tflops_per_device``: FLOPs from each step executable's cost analysis (per-device program
  of the SPMD step) summed over the timed steps / wall seconds. XLA counts a ``while``
  (``lax.scan``) body once, so the alignment recurrence's per-frame work is undercounted; it
  is small next to the conformer stacks.
* ``mfu`` = tflops_per_device / peak, the peak from ``--peak-tflops`` or, by
  ``device_kind``, a small table of dense bf16 peaks (null where unknown, e.g. CPU). With
  ``train.compute_dtype=float32`` the bf16 peak overstates what the step can reach.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxtts.data import pipeline  # noqa: E402
from jaxtts.data.synthetic import write_synthetic_corpus  # noqa: E402
from jaxtts.train import config as config_lib  # noqa: E402
from jaxtts.train import loop, mesh as mesh_lib  # noqa: E402
from jaxtts.train.state import count_params  # noqa: E402

# Dense bf16 peak TFLOP/s per device, matched as substrings of jax's device_kind (lower case).
PEAK_TFLOPS = (
    ("h100 pcie", 756.0),
    ("h100", 989.0),   # SXM
    ("h200", 989.0),
    ("gh200", 989.0),
    ("a100", 312.0),
    ("tpu v4", 275.0),
    ("tpu v5 lite", 197.0),
    ("tpu v5e", 197.0),
    ("tpu v5p", 459.0),
    ("tpu v5", 459.0),
    ("tpu v6", 918.0),
)


def peak_tflops(device_kind: str) -> float | None:
  kind = device_kind.lower()
  for key, peak in PEAK_TFLOPS:
    if key in kind:
      return peak
  return None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/gmm_lm.py:tiny")
  parser.add_argument("--steps", type=int, default=20, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
  parser.add_argument("--data-dir", default=None, help="latent corpus (else synthetic)")
  parser.add_argument("--utterances-per-speaker", type=int, default=16)
  parser.add_argument("--min-seconds", type=float, default=1.0)
  parser.add_argument("--max-seconds", type=float, default=None,
                      help="synthetic corpus: longest utterance (default: largest bucket)")
  parser.add_argument("--cycle-batches", type=int, default=0,
                      help=">0: read this many host batches first and cycle them, so the "
                           "input pipeline is not timed (0: live pipeline, as in training)")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="per-device peak for MFU (default: table by device_kind)")
  args, rest = parser.parse_known_args(argv)
  cfg = config_lib.build_config(args.config, rest)
  tmp = tempfile.mkdtemp(prefix="jaxtts-bench-")
  data_dir = args.data_dir
  if data_dir is None:
    data_dir = os.path.join(tmp, "corpus")
    sr = int(cfg.data.sample_rate)
    max_seconds = args.max_seconds or max(cfg.data.bucket_samples) / sr
    write_synthetic_corpus(data_dir, num_speakers=4,
                           utterances_per_speaker=args.utterances_per_speaker,
                           sample_rate=sr, min_seconds=min(args.min_seconds, max_seconds),
                           max_seconds=max_seconds, latent_dim=int(cfg.model.latent_dim),
                           hop_length=int(cfg.model.latent_hop))
  cfg = config_lib.build_config(args.config, [f"--config.data.dir={data_dir}", *rest])
  trainer = loop.Trainer(cfg, os.path.join(tmp, "workdir"))
  trainer._compile()  # pylint: disable=protected-access
  trainer._executables = {}  # pylint: disable=protected-access
  state = trainer.init_state()
  params = count_params(state.params)
  logging.getLogger("jaxtts.data.pipeline").setLevel(logging.ERROR)  # filtered: counted below
  it = pipeline.make_iterator(cfg.data, cfg.data.train_split,
                              global_batch_size=cfg.train.batch_size, seed=0, train=True)
  source = it
  if args.cycle_batches > 0:
    source = itertools.cycle([next(it) for _ in range(args.cycle_batches)])

  compile_s, shapes = 0.0, {}
  real = padded = 0
  flops_total = 0.0
  timed = 0
  t_run = 0.0
  m, t0, step = None, 0.0, 0  # step: runs of already-compiled shapes (warm-up, then timed)
  while timed < args.steps:
    host = next(source)
    batch = mesh_lib.global_batch(host, trainer.mesh)
    key = tuple(sorted((k, v.shape) for k, v in batch.items()))
    new_shape = key not in shapes
    if new_shape:
      # Stop the clock: finish queued work, compile this bucket's step, run it once untimed.
      if m is not None:
        jax.block_until_ready(m)
        t_run += time.perf_counter() - t0
      tc = time.perf_counter()
      compiled, flops = trainer._compiled_step(state, batch)  # pylint: disable=protected-access
      compile_s += time.perf_counter() - tc
      shapes[key] = int(host["latents"].shape[1])
      state, m = compiled(state, batch)
      jax.block_until_ready(m)
      t0 = time.perf_counter()
      continue
    compiled, flops = trainer._compiled_step(state, batch)  # pylint: disable=protected-access
    if step == args.warmup:  # warm-up done: restart the clock
      jax.block_until_ready(m)
      t_run, t0 = 0.0, time.perf_counter()
    state, m = compiled(state, batch)
    if step >= args.warmup:
      timed += 1
      real += int(np.sum(host["latent_len"]))
      padded += int(np.prod(host["latents"].shape[:2]))
      flops_total += flops
    step += 1
  jax.block_until_ready(m)
  dt = t_run + time.perf_counter() - t0

  dev = jax.devices()[0]
  tflops = flops_total / dt / 1e12
  peak = args.peak_tflops if args.peak_tflops is not None else peak_tflops(dev.device_kind)
  frame_rate = cfg.data.sample_rate / cfg.model.latent_hop
  print(json.dumps({
      "benchmark": "gmm_lm_throughput", "config": args.config, "overrides": rest,
      "data_dir": args.data_dir or "synthetic", "platform": dev.platform,
      "device_kind": dev.device_kind, "devices": jax.device_count(),
      "compute_dtype": cfg.train.compute_dtype, "batch_size": cfg.train.batch_size,
      "params": params, "latent_dim": int(cfg.model.latent_dim),
      "latent_frame_rate": frame_rate, "bucket_frames_compiled": sorted(shapes.values()),
      "compile_seconds": round(compile_s, 2), "timed_steps": timed,
      "steps_per_sec": round(timed / dt, 4),
      "latent_frames_per_sec": round(real / dt, 1),
      "padded_frames_per_sec": round(padded / dt, 1),
      "padding_efficiency": round(real / max(padded, 1), 4),
      "audio_seconds_per_sec": round(real / frame_rate / dt, 2),
      "input_pipeline": "cycled" if args.cycle_batches > 0 else "live",
      "filtered_utterances": pipeline.filtered_counts(it),
      "flops_per_step": round(flops_total / max(timed, 1)),
      "tflops_per_device": round(tflops, 4),
      "peak_tflops": peak, "peak_basis": "dense bf16" if args.peak_tflops is None else "flag",
      "mfu": None if not peak else round(tflops / peak, 5),
      "final_loss": float(jax.device_get(m["loss"]))}))
  shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
