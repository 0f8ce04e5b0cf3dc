"""What the train step of a config preset consumes, beside what the input pipeline delivers.

Used by ``benchmarks/input_pipeline.py --config``:

* `preset_corpus`: a synthetic corpus (`jaxtts.data.synthetic`) with what the preset's task
  reads: latents at ``model.latent_hop`` (GMM-LM), codes + timbre + phone-level prosody codes
  with a manifest ``codes`` entry (NS3), F0 when the task's own data config asks for it, the
  preset's sample rate and hop;
* `derived_consumption`: examples/s per host that accelerators would consume, from the task's
  analytic ``flops_per_step`` (`jaxtts.tasks.flops`, the MFU numerator of `jaxtts.train.mfu`)
  at a stated per-chip peak, chips per host and MFU;
* `measured_consumption`: the preset's real compiled train step (`jaxtts.train.loop.Trainer`)
  timed on the local device(s) on pipeline batches.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from jaxtts import tasks
from jaxtts.data import derive, features, synthetic
from jaxtts.train import mfu

# Accelerator scenarios for the derived figures: (device_kind key of mfu.PEAK_BF16_FLOPS,
# chips per host). TPU v5p / v6e multi-host slices have 4 chips per host, H100 / H200 nodes 8.
DEFAULT_ACCELERATORS = (("tpu v5p", 4), ("tpu v6e", 4), ("h100", 8))
DEFAULT_MFU = 0.35  # the proposed goal (research notes §4: >= 35 % MFU)
NS3_TIMBRE_DIM = 256


def peak_of(chip: str) -> float:
  """Dense bf16 FLOP/s per chip of ``chip`` (a key of `jaxtts.train.mfu.PEAK_BF16_FLOPS`)."""
  for key, peak in mfu.PEAK_BF16_FLOPS:
    if key == chip.lower():
      return peak
  raise ValueError(f"--accelerator: unknown chip {chip!r}; known: "
                   f"{', '.join(k for k, _ in mfu.PEAK_BF16_FLOPS)}")


def _phone_prosody(levels: int, codebook: int, record: dict) -> dict[str, np.ndarray]:
  """Stand-in phone-level prosody codes int32 [P, levels]: a function of the phoneme ids."""
  p = np.asarray(record["phonemes"], np.int64)
  return {"phone_prosody_codes": ((p[:, None] * 7 + np.arange(levels)[None]) % codebook
                                  ).astype(np.int32)}


def preset_corpus(cfg: ml_collections.ConfigDict, out_dir: str, *, speakers: int,
                  utterances_per_speaker: int, min_seconds: float, max_seconds: float
                  ) -> dict[str, Any]:
  """Writes the synthetic corpus the preset's task trains on; returns what was built."""
  probe = ml_collections.ConfigDict(cfg.to_dict())
  probe.data.dir = None  # the task's own data view (extra features) without a corpus check
  task_cfg = tasks.get_task(probe).cfg
  extras = tuple(task_cfg.data.extra_features)
  m, sr = cfg.model, int(cfg.data.sample_rate)
  args: dict[str, Any] = dict(sample_rate=sr, hop_length=200,
                              f0=bool({"f0", "voiced"} & set(extras)))
  if cfg.task == "gmm_lm":
    args.update(hop_length=int(m.latent_hop), latent_dim=int(m.latent_dim))
  elif cfg.task == "ns3":
    args.update(code_quantizers=int(m.num_code_levels), codebook_size=int(m.codebook_size),
                timbre_dim=NS3_TIMBRE_DIM)
  elif cfg.task == "clone":
    args.update(hop_length=int(m.hop_length))
  elif cfg.task == "facodec":
    args.update(hop_length=int(math.prod(m.encoder_strides)))
  synthetic.write_synthetic_corpus(
      out_dir, num_speakers=speakers, utterances_per_speaker=utterances_per_speaker,
      zero_shot_speakers=1, seed=0, shard_size=64, min_seconds=min_seconds,
      max_seconds=max_seconds, **args)
  if cfg.task == "ns3":
    import functools  # pylint: disable=g-import-not-at-top
    levels = max(int(m.phone_prosody_levels), 1)
    derive.derive_corpus(
        out_dir, None, functools.partial(_phone_prosody, levels, int(m.codebook_size)),
        {"phone_prosody_codes": features.phoneme_spec("int32", (levels,))},
        manifest_updates={"codes": {
            "num_quantizers": int(m.num_code_levels),
            "codebook_sizes": [int(m.codebook_size)] * int(m.num_code_levels),
            "hop_length": 200, "timbre_dim": NS3_TIMBRE_DIM, "codec_workdir": None}})
  return {"synthetic_args": {**args, "speakers": speakers,
                             "utterances_per_speaker": utterances_per_speaker,
                             "min_seconds": min_seconds, "max_seconds": max_seconds},
          "task_extra_features": list(extras)}


def global_shapes(shape_counts: Mapping[tuple, int], global_batch: int
                  ) -> list[tuple[dict[str, tuple[int, ...]], int]]:
  """Per-host batch layouts (``(field, shape)`` tuples -> count) at the global batch size."""
  out = []
  for layout, count in shape_counts.items():
    out.append(({k: (int(global_batch),) + tuple(s[1:]) for k, s in layout}, int(count)))
  return out


def derived_consumption(task: Any, shape_counts: Mapping[tuple, int], *, global_batch: int,
                        hosts: int, accelerators: Sequence[tuple[str, int]], mfu_assumed: float
                        ) -> dict[str, Any]:
  """Examples/s per host of the train step on accelerators, from the analytic FLOP count.

  For each batch layout the pipeline emitted (weighted by how often), one global step takes
  ``flops_per_step(global shapes) / (hosts * chips_per_host * peak * MFU)`` seconds; a host
  consumes ``global_batch / hosts`` examples per step.
  """
  count = getattr(task, "flops_per_step", None)
  if count is None:
    return {"kind": "derived", "available": False,
            "reason": f"task {task.cfg.task!r} has no analytic flops_per_step"}
  layouts = global_shapes(shape_counts, global_batch)
  steps = sum(n for _, n in layouts)
  flops = sum(float(count(shapes)) * n for shapes, n in layouts) / steps
  per_host_batch = global_batch / hosts
  out = {"kind": "derived", "available": True, "flops_per_step": flops,
         "flops_per_example": flops / global_batch, "mfu_assumed": mfu_assumed,
         "hosts": hosts, "global_batch": global_batch, "per_host_batch": per_host_batch,
         "flop_formula": f"{type(task).__module__}.{type(task).__name__}.flops_per_step "
                         "(jaxtts.tasks.flops; matmuls, 3x forward)",
         "accelerators": []}
  for chip, chips_per_host in accelerators:
    peak = peak_of(chip)
    step_s = flops / (hosts * chips_per_host * peak * mfu_assumed)
    out["accelerators"].append({
        "chip": chip, "peak_flops_per_chip": peak, "chips_per_host": chips_per_host,
        "step_s": step_s, "examples_per_s_per_host": per_host_batch / step_s})
  return out


def measured_consumption(cfg: ml_collections.ConfigDict, batches: Sequence[dict], *,
                         steps: int) -> dict[str, Any]:
  """Examples/s of the preset's real train step on the local devices (one process).

  ``cfg.train.batch_size`` must equal the batches' rows. Each batch layout is compiled (and
  run once) before timing; then ``steps`` steps over ``batches`` in turn are timed.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jaxtts.train.loop import Trainer  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    trainer = Trainer(cfg, workdir)
    trainer._compile()  # pylint: disable=protected-access
    trainer._executables = {}  # pylint: disable=protected-access (as Trainer._run sets it)
    state = trainer.init_state()
    compiled = {}
    for b in batches:
      key = tuple(sorted((k, v.shape) for k, v in b.items()))
      if key not in compiled:
        compiled[key] = trainer._compiled_step(state, b)[0]  # pylint: disable=protected-access
        state, metrics = compiled[key](state, b)
        jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    examples = 0
    t1 = time.perf_counter()
    for i in range(steps):
      b = batches[i % len(batches)]
      state, metrics = compiled[tuple(sorted((k, v.shape) for k, v in b.items()))](state, b)
      examples += int((b[[k for k in b if k.endswith("_len")][0]] > 0).sum())
    jax.block_until_ready(metrics)
    dt = time.perf_counter() - t1
  return {"kind": "measured", "device": str(jax.devices()[0].device_kind),
          "platform": jax.devices()[0].platform, "devices": jax.device_count(),
          "batch_size": int(cfg.train.batch_size), "steps": steps,
          "compile_s": round(compile_s, 2), "step_s": round(dt / steps, 4),
          "examples_per_s": round(examples / dt, 2)}
