"""Input-pipeline throughput, and (``--config``) against what a preset's train step consumes.

Without ``--config``: builds a synthetic corpus in a temporary directory (or reads
``--data-dir``), then for each mode builds the training iterator, takes ``--warmup`` batches
(pipeline start, thread and worker start-up) and times the next ``--batches``. Prints one JSON
line ``{"benchmark": "input_pipeline", "corpus", "config", "crop": {...}, "bucket": {...}}``
with ``batches_per_s``, ``examples_per_s``, ``audio_seconds_per_s`` (real audio) and
``padded_fraction`` (share of emitted samples that are padding)::

  python benchmarks/input_pipeline.py --batches 200 --batch-size 32 --worker-count 0

With ``--config configs/<task>.py:<preset>``: the preset's own data settings (mode, buckets,
features, the extra features its task adds, worker count) on a synthetic corpus with what the
task reads (`input_consumption.preset_corpus`), at the per-host batch ``train.batch_size //
--hosts``, timed for each ``--worker-counts`` (the preset's own first), next to the train
step's consumption in examples/s per host:

* ``derived`` (always): from the task's analytic FLOPs per step at each ``--accelerator
  CHIP:CHIPS_PER_HOST`` (peak from `jaxtts.train.mfu`) and ``--mfu``;
* ``measured`` (``--measure-step``): the preset's compiled train step on the local device
  (CPU: small presets only).

``ratio`` = pipeline examples/s / consumption (goal: >= 2). ``--profile`` adds per-example
stage CPU times of one thread (index stage, record read, + decode, + crop / cast, batch
assembly)::

  python benchmarks/input_pipeline.py --config configs/gmm_vae.py:paper --hosts 8 --profile
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `configs` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import input_consumption as consumption  # pylint: disable=wrong-import-position
from jaxtts.data import pipeline, synthetic  # pylint: disable=wrong-import-position

_LENGTHS = ("audio_len", "latent_len", "code_len")


def _measure(cfg, split: str, *, batch_size: int, batches: int, warmup: int,
             sample_rate: int, unit_samples: int = 1, keep: int = 0) -> dict:
  """Times ``batches`` batches after ``warmup``; ``unit_samples``: audio samples per step of
  the primary field (1 for audio, the hop for latents / codes). ``keep`` batches are returned
  under ``"_kept"`` and the layouts' counts under ``"_layouts"``."""
  start = time.perf_counter()
  it = pipeline.make_iterator(cfg, split, global_batch_size=batch_size, seed=0, train=True,
                              process_index=0, process_count=1)
  for _ in range(warmup):
    next(it)
  first = time.perf_counter() - start
  examples = real = emitted = 0
  layouts: dict[tuple, int] = {}
  kept = []
  t0 = time.perf_counter()
  for _ in range(batches):
    b = next(it)
    key = next(k for k in _LENGTHS if k in b)
    primary = b[{"audio_len": "audio", "latent_len": "latents", "code_len": "codes"}[key]]
    examples += int((b[key] > 0).sum())
    real += int(b[key].sum()) * unit_samples
    emitted += int(primary.shape[0] * primary.shape[1]) * unit_samples
    layout = tuple(sorted((k, v.shape) for k, v in b.items()))
    layouts[layout] = layouts.get(layout, 0) + 1
    if len(kept) < keep:
      kept.append(b)
  dt = time.perf_counter() - t0
  filtered = pipeline.filtered_counts(it)
  it.close()
  shapes = sorted({dict(layout)[k][1] for layout in layouts
                   for k in ("audio", "latents", "codes") if k in dict(layout)})
  return {
      "batches_per_s": round(batches / dt, 2),
      "examples_per_s": round(examples / dt, 1),
      "audio_seconds_per_s": round(real / sample_rate / dt, 1),
      "padded_fraction": round(1.0 - real / max(emitted, 1), 4),
      "startup_s": round(first, 3),
      "timed_s": round(dt, 3),
      "batches": batches,
      "primary_lengths": shapes,
      **filtered,
      "_layouts": layouts, "_kept": kept,
  }


def _public(result: dict) -> dict:
  return {k: v for k, v in result.items() if not k.startswith("_")}


def _cpu_per_item(fn, n: int, passes: int = 3) -> float:
  """CPU seconds of this thread per call of ``fn(i)``, ``i < n``: the best of ``passes``
  passes (thread CPU time leaves out the time other processes hold the cores)."""
  best = float("inf")
  for _ in range(passes):
    t0 = time.thread_time()
    for i in range(n):
      fn(i)
    best = min(best, (time.thread_time() - t0) / n)
  return best


def profile_stages(data_cfg, split: str, *, batch_size: int, examples: int) -> dict:
  """Per-example CPU seconds of one thread (best of 3 passes): the index stage, the record
  read (ArrayRecord), read + decode (msgpack, zero-copy), the decode map (+ crop / cast /
  extras), and batch assembly (stack, or bucket padding)."""
  source = pipeline.open_source(data_cfg, split)
  primary, extras = pipeline._layout(data_cfg, source)  # pylint: disable=protected-access
  load = pipeline._LoadExample(  # pylint: disable=protected-access
      source, data_cfg.mode, data_cfg.segment_samples, 0, data_cfg.features, extras)
  n = min(examples, len(source))
  # Index stage (as make_dataset chains it): speaker balancing, global shuffle, repeat.
  ds = pipeline.index_dataset(data_cfg, source, seed=0, train=True)
  index = _cpu_per_item(lambda i: ds[i], n)
  read = _cpu_per_item(lambda i: source[i], n)
  decode = _cpu_per_item(source.example, n)
  mapped = _cpu_per_item(lambda i: load(i, i), n)
  elements = [load(i, i) for i in range(n)]
  groups = []
  step = min(batch_size, n)  # fewer profiled examples than a batch: one padded batch
  for j in range(0, n - step + 1, step):
    group = elements[j:j + step]
    if data_cfg.mode == "crop":
      groups.append((group, None))
      continue
    key = primary.name if primary is not None else "audio"
    hop = primary.hop if primary is not None else 1
    longest = max(len(e[key]) * hop for e in group)
    bucket = next((int(t) for t in data_cfg.bucket_samples if int(t) >= longest),
                  int(data_cfg.bucket_samples[-1]))
    groups.append(([e for e in group if len(e[key]) * hop <= bucket
                    and len(e["phonemes"]) <= int(data_cfg.max_phonemes)], bucket))

  def assemble_group(g: int) -> None:
    group, bucket = groups[g]
    if bucket is None:
      pipeline._StackCrops(batch_size)(group)  # pylint: disable=protected-access
    else:
      pipeline._pad_bucket(group, batch_size, bucket,  # pylint: disable=protected-access
                           int(data_cfg.max_phonemes), primary=primary, extras=extras)

  assemble = (_cpu_per_item(assemble_group, len(groups)) * len(groups)
              / max(sum(len(g) for g, _ in groups), 1)) if groups else 0.0
  speakers = np.bincount(source.record_speaker_ids())
  return {"examples": n, "clock": "thread CPU time, best of 3 passes",
          "index_us": round(index * 1e6, 1),
          "index_note": "speaker balancing and the global shuffle draw from cached NumPy "
                        "permutations (per speaker and cycle; per epoch): O(1) per element",
          "utterances_per_speaker_median": int(np.median(speakers[speakers > 0])),
          "read_us": round(read * 1e6, 1),
          "read_decode_us": round(decode * 1e6, 1),
          "map_us": round(mapped * 1e6, 1),
          "crop_cast_extras_us": round((mapped - decode) * 1e6, 1),
          "batch_assembly_us": round(assemble * 1e6, 1),
          "one_thread_examples_per_s": round(1.0 / (index + mapped + assemble), 1),
          "one_thread_examples_per_s_without_index": round(1.0 / (mapped + assemble), 1)}


def _accelerators(specs: list[str] | None) -> list[tuple[str, int]]:
  if not specs:
    return list(consumption.DEFAULT_ACCELERATORS)
  out = []
  for spec in specs:
    chip, _, per_host = spec.rpartition(":")
    if not chip or not per_host.isdigit():
      raise SystemExit(f"--accelerator {spec!r}: expected CHIP:CHIPS_PER_HOST, e.g. 'tpu v5p:4'")
    consumption.peak_of(chip)
    out.append((chip, int(per_host)))
  return out


def preset_report(args: argparse.Namespace, tmp: str) -> dict:
  """The ``--config`` report (module docstring)."""
  from jaxtts import tasks  # pylint: disable=g-import-not-at-top
  from jaxtts.data.source import read_manifest  # pylint: disable=g-import-not-at-top
  from jaxtts.train import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.build_config(args.config, args.override or ())
  global_batch = int(cfg.train.batch_size)
  if global_batch % args.hosts:
    raise SystemExit(f"--hosts {args.hosts} does not divide train.batch_size {global_batch}")
  per_host = global_batch // args.hosts
  accelerators = _accelerators(args.accelerator)
  corpus_info: dict[str, Any] = {"data_dir": args.data_dir}
  data_dir = args.data_dir
  if data_dir is None:
    data_dir = os.path.join(tmp, "corpus")
    t0 = time.perf_counter()
    buckets = [int(b) for b in cfg.data.bucket_samples]
    sr = int(cfg.data.sample_rate)
    max_s = (args.max_seconds or (0.98 * buckets[-1] / sr if cfg.data.mode == "bucket"
                                  else 16.0))
    corpus_info = consumption.preset_corpus(
        cfg, data_dir, speakers=args.speakers, utterances_per_speaker=args.utterances_per_speaker,
        min_seconds=args.min_seconds, max_seconds=max_s)
    corpus_info["build_s"] = round(time.perf_counter() - t0, 2)
  cfg.data.dir = data_dir
  task = tasks.get_task(cfg)
  data_cfg = task.cfg.data
  manifest = read_manifest(data_dir)
  unit = 1
  if data_cfg.features == "latents":
    unit = int(manifest["latents"]["hop_length"])
  elif data_cfg.features == "codes":
    unit = int(manifest["features"]["codes"]["hop_length"])
  worker_counts = [int(data_cfg.worker_count)] + [
      w for w in (int(x) for x in args.worker_counts.split(",") if x)
      if w != int(data_cfg.worker_count)]
  report: dict[str, Any] = {
      "benchmark": "input_pipeline", "config": args.config, "task": cfg.task,
      "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
               "cpus_usable": len(os.sched_getaffinity(0)), "machine": platform.machine(),
               "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
      "date": datetime.date.today().isoformat(),
      "global_batch": global_batch, "hosts": args.hosts, "per_host_batch": per_host,
      "data": {"mode": data_cfg.mode, "features": data_cfg.features,
               "extra_features": list(data_cfg.extra_features),
               "segment_samples": int(data_cfg.segment_samples),
               "bucket_samples": [int(b) for b in data_cfg.bucket_samples],
               "max_phonemes": int(data_cfg.max_phonemes),
               "speaker_balanced": bool(data_cfg.speaker_balanced),
               "read_threads": int(data_cfg.read_threads),
               "preset_worker_count": int(data_cfg.worker_count),
               "sample_rate": int(data_cfg.sample_rate)},
      "corpus": {**corpus_info, "train_examples": manifest["splits"]["train"]["num_examples"],
                 "train_hours": manifest["splits"]["train"].get("hours")},
      "pipeline": {},
  }
  layouts, kept = None, []
  for wc in worker_counts:
    data_cfg.worker_count = wc
    res = _measure(data_cfg, data_cfg.train_split, batch_size=per_host, batches=args.batches,
                   warmup=args.warmup, sample_rate=int(data_cfg.sample_rate),
                   unit_samples=unit, keep=args.step_batches if layouts is None else 0)
    if layouts is None:
      layouts, kept = res["_layouts"], res["_kept"]
    report["pipeline"][f"workers_{wc}"] = _public(res)
  data_cfg.worker_count = worker_counts[0]
  if args.profile:
    report["profile"] = profile_stages(data_cfg, data_cfg.train_split, batch_size=per_host,
                                       examples=args.profile_examples)
  derived = consumption.derived_consumption(
      task, layouts, global_batch=global_batch, hosts=args.hosts, accelerators=accelerators,
      mfu_assumed=args.mfu)
  report["consumption"] = {"derived": derived}
  if args.measure_step:
    step_cfg = config_lib.build_config(args.config, args.override or ())
    step_cfg.data.dir = data_dir
    step_cfg.train.batch_size = per_host
    report["consumption"]["measured"] = consumption.measured_consumption(
        step_cfg, kept, steps=args.measure_steps)
  pipe = {k: v["examples_per_s"] for k, v in report["pipeline"].items()}
  preset_eps = pipe[f"workers_{worker_counts[0]}"]
  best_key = max(pipe, key=pipe.get)
  ratios = []
  if derived.get("available"):
    for acc in derived["accelerators"]:
      need = acc["examples_per_s_per_host"]
      ratios.append({"consumer": f"derived {acc['chip']} x{acc['chips_per_host']}/host "
                                 f"@ MFU {args.mfu}", "consumption_examples_per_s": need,
                     "ratio_preset_workers": round(preset_eps / need, 3),
                     f"ratio_{best_key}": round(pipe[best_key] / need, 3),
                     "goal_2x_met": pipe[best_key] >= 2 * need})
  if "measured" in report["consumption"]:
    need = report["consumption"]["measured"]["examples_per_s"]
    ratios.append({"consumer": f"measured {report['consumption']['measured']['platform']}",
                   "consumption_examples_per_s": need,
                   "ratio_preset_workers": round(preset_eps / need, 3),
                   f"ratio_{best_key}": round(pipe[best_key] / need, 3),
                   "goal_2x_met": pipe[best_key] >= 2 * need})
  per_process = preset_eps / max(1, worker_counts[0])
  for r in ratios:  # processes at this host's one-process rate for 2x, if scaling were linear
    r["processes_for_2x_at_measured_rate"] = int(np.ceil(
        2 * r["consumption_examples_per_s"] / max(per_process, 1e-9)))
  report["ratio"] = ratios
  report["host"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
  return report


def _plain(args: argparse.Namespace, tmp: str) -> dict:
  data_dir = args.data_dir
  build_s = None
  if data_dir is None:
    data_dir = os.path.join(tmp, "corpus")
    t0 = time.perf_counter()
    synthetic.write_synthetic_corpus(
        data_dir, num_speakers=args.speakers, utterances_per_speaker=args.utterances_per_speaker,
        zero_shot_speakers=1, seed=0, shard_size=64)
    build_s = round(time.perf_counter() - t0, 2)
  cfg = pipeline.default_data_config()
  cfg.dir = data_dir
  cfg.segment_samples = args.segment_samples
  cfg.bucket_samples = tuple(int(x) for x in args.bucket_samples.split(","))
  cfg.max_phonemes = args.max_phonemes
  cfg.worker_count = args.worker_count
  cfg.read_threads = args.read_threads
  cfg.speaker_balanced = args.speaker_balanced
  with open(os.path.join(data_dir, "manifest.json")) as f:
    manifest = json.load(f)
  cfg.sample_rate = manifest["sample_rate"]
  result = {
      "benchmark": "input_pipeline",
      "corpus": "synthetic" if args.data_dir is None else os.path.abspath(args.data_dir),
      "corpus_examples": manifest["splits"][args.split]["num_examples"],
      "corpus_build_s": build_s,
      "config": {"batch_size": args.batch_size, "segment_samples": args.segment_samples,
                 "bucket_samples": list(cfg.bucket_samples),
                 "max_phonemes": args.max_phonemes, "worker_count": args.worker_count,
                 "read_threads": args.read_threads,
                 "speaker_balanced": args.speaker_balanced},
      "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
               "machine": platform.machine()},
  }
  for mode in args.modes.split(","):
    cfg.mode = mode
    result[mode] = _public(_measure(cfg, args.split, batch_size=args.batch_size,
                                    batches=args.batches, warmup=args.warmup,
                                    sample_rate=cfg.sample_rate))
  return result


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=None, help="corpus dir (default: synthetic)")
  parser.add_argument("--split", default="train")
  parser.add_argument("--batches", type=int, default=100)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument("--segment-samples", type=int, default=16000)
  parser.add_argument("--bucket-samples", default="16000,32000,48000",
                      help="comma-separated padded audio lengths (bucket mode)")
  parser.add_argument("--max-phonemes", type=int, default=256)
  parser.add_argument("--worker-count", type=int, default=0)
  parser.add_argument("--read-threads", type=int, default=4)
  parser.add_argument("--speaker-balanced", action="store_true")
  parser.add_argument("--modes", default="crop,bucket")
  parser.add_argument("--speakers", type=int, default=8, help="synthetic corpus speakers")
  parser.add_argument("--utterances-per-speaker", type=int, default=32)
  preset = parser.add_argument_group("preset mode (--config)")
  preset.add_argument("--config", default=None, help="configs/<task>.py:<preset>")
  preset.add_argument("--override", action="append", help="KEY=VALUE config override")
  preset.add_argument("--hosts", type=int, default=8, help="per-host batch = batch_size / hosts")
  preset.add_argument("--worker-counts", default="2",
                      help="Grain worker counts to time besides the preset's own")
  preset.add_argument("--accelerator", action="append",
                      help="CHIP:CHIPS_PER_HOST for the derived consumption (repeatable; "
                           "default: 'tpu v5p:4', 'tpu v6e:4', 'h100:8')")
  preset.add_argument("--mfu", type=float, default=consumption.DEFAULT_MFU)
  preset.add_argument("--measure-step", action="store_true",
                      help="also time the preset's real train step on the local device")
  preset.add_argument("--step-batches", type=int, default=2,
                      help="pipeline batches kept to feed the measured step")
  preset.add_argument("--measure-steps", type=int, default=4)
  preset.add_argument("--min-seconds", type=float, default=1.0)
  preset.add_argument("--max-seconds", type=float, default=None,
                      help="longest synthetic utterance (default: 98%% of the largest bucket; "
                           "crop mode 16 s)")
  preset.add_argument("--profile", action="store_true")
  preset.add_argument("--profile-examples", type=int, default=64)
  preset.add_argument("--out", default=None, help="also write the JSON here")
  args = parser.parse_args(argv)
  if args.config and args.utterances_per_speaker == 32:
    args.utterances_per_speaker = 16
  with tempfile.TemporaryDirectory() as tmp:
    result = preset_report(args, tmp) if args.config else _plain(args, tmp)
  print(json.dumps(result, sort_keys=False))
  sys.stdout.flush()
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)
      f.write("\n")
  return result


if __name__ == "__main__":
  main()
