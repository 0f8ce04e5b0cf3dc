"""Real-corpus builder: LibriSpeech, LibriTTS(-R), LibriLight (LibriHeavy cuts or VAD pieces).

    jaxtts-corpus librispeech --root LibriSpeech --out DIR \
        --split train=train-clean-100,train-clean-360 --split test_zero_shot=test-clean
    jaxtts-corpus libritts --root LibriTTS_R --out DIR --split train=train-clean-100 ...
    jaxtts-corpus librilight --root librilight --out DIR \
        --cuts train=libriheavy_cuts_small.jsonl.gz --cuts test_zero_shot=...test_clean.jsonl.gz
    jaxtts-corpus librilight --root librilight --out DIR --split train=small   (VAD, no text)
      [--seed 0] [--shard-size 256] [--valid-fraction 0.01] [--workers N]
      [--shard i --num-shards n] [--plan-only] [--f0] [--alignments DIR] [--min-seconds 0.5]
      [--max-seconds 20] [--overwrite] [--no-progress]

Layouts: `data_pipelines.libri_layouts`; splits and shards: `data_pipelines.libri_plan`;
records: `data_pipelines.libri_records`. The plan (which utterance goes to which split and
shard, in which order) depends only on the files and the build arguments, so the shard bytes
are the same whatever ``--workers`` and ``--num-shards``. The first call lists the corpus,
plans, and writes the plan to ``DIR/plan.jsonl.gz`` (atomically); later calls (other hosts,
resumes) whose build arguments match read it instead of listing the corpus again, a plan of
other arguments is refused (``--overwrite`` plans again), and a truncated or corrupt plan is
planned again with a warning. ``--plan-only`` writes the plan and stops. Call i of n
(``--shard i --num-shards n``, e.g. one per host) writes the shards j (of each split) with
j % n == i, ``--workers`` at a time. Each shard goes to ``<shard>.tmp-<tag>`` and is renamed
into place, then its summary ``<shard>.summary.json`` (counts, hours, filtered, bad files) is
written; a shard with both is complete and a rerun skips it (``--overwrite`` rewrites). The
call that finds every shard complete writes ``bad_files.jsonl``,
``<split>.speaker_index.npy`` and last ``manifest.json`` (the espeak schema plus
``filtered``, ``bad_files``, ``bad_alignments`` and ``source_sample_rates``). Prints a JSON
summary with the throughput (utterances/s per worker process).

Many hosts: plan once, then start the n shard builders with the same arguments (a host that
starts before the plan exists plans too, writing the same bytes):

    jaxtts-corpus librilight --root R --out DIR --cuts ... --plan-only          # once
    jaxtts-corpus librilight --root R --out DIR --cuts ... --shard $I --num-shards $N
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import glob
import json
import logging
import multiprocessing
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from data_pipelines import libri_layouts, libri_plan, libri_records
from jaxtts.data import records
from jaxtts.data.source import speaker_index_path
from jaxtts.files import write_json
from jaxtts.text.symbols import PhonemeTable

SUMMARY_SUFFIX = ".summary.json"
PLAN = "plan.jsonl.gz"
LEGACY_BUILD_ARGS = "build_args.json"  # builds before the plan file recorded their args here
BAD_FILES = "bad_files.jsonl"
FLAG_OF_ARG = {"corpus": "corpus", "variant": "--root", "text": "--split/--cuts"}

log = logging.getLogger("jaxtts.real_corpus")


def write_shard(out_dir: str, split: str, index: int,
                items: Sequence[libri_plan.PlannedItem], plan: libri_plan.CorpusPlan,
                tag: str) -> dict[str, Any]:
  """Writes one shard (temp name, then rename) and its summary; returns the summary."""
  from array_record.python.array_record_module import ArrayRecordWriter
  t0, c0 = time.time(), time.process_time()
  name = libri_plan.shard_name(split, index, plan.num_shards[split])
  path = os.path.join(out_dir, name)
  tmp = f"{path}.tmp-{tag}"
  table = PhonemeTable.from_json(plan.manifest_base["phoneme_table"])
  filtered: dict[str, int] = {}
  bad: list[dict] = []
  rates: dict[str, int] = {}
  speaker_ids, samples = [], 0
  writer = ArrayRecordWriter(tmp, records.WRITER_OPTIONS)
  try:
    for p in items:
      try:
        ex = libri_records.make_record(p, plan, table=table)
      except libri_records.FilteredItem as e:
        filtered[e.reason] = filtered.get(e.reason, 0) + 1
        continue
      except libri_records.BadItem as e:
        bad.append({"id": p.item.id, "path": p.item.audio_path, "reason": e.reason})
        continue
      writer.write(records.encode_example(ex))
      speaker_ids.append(int(ex["speaker_id"]))
      samples += len(ex["audio"])
      key = str(ex["source_sample_rate"])
      rates[key] = rates.get(key, 0) + 1
    writer.close()
  except BaseException:
    writer.close()
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  os.replace(tmp, path)
  summary = {"shard": name, "split": split, "num_examples": len(speaker_ids),
             "samples": samples, "hours": round(samples / libri_plan.SAMPLE_RATE / 3600, 6),
             "filtered": dict(sorted(filtered.items())), "bad_files": bad,
             "bad_alignments": sum(b["reason"].startswith("alignment:") for b in bad),
             "source_sample_rates": dict(sorted(rates.items())), "speaker_ids": speaker_ids,
             "attempted": len(items), "seconds": round(time.time() - t0, 3),
             "cpu_seconds": round(time.process_time() - c0, 3)}
  write_json(path + SUMMARY_SUFFIX, summary)
  return summary


def _task(args: tuple) -> dict[str, Any]:
  return write_shard(*args)


def _complete(out_dir: str, name: str) -> bool:
  path = os.path.join(out_dir, name)
  return os.path.isfile(path) and os.path.isfile(path + SUMMARY_SUFFIX)


def _differing_flags(old: Mapping, new: Mapping) -> list[str]:
  """The flags (`FLAG_OF_ARG`, else ``--<key>``) whose ``build_args`` values differ."""
  return sorted({FLAG_OF_ARG.get(k, "--" + k.replace("_", "-"))
                 for k in set(old) | set(new) if old.get(k) != new.get(k)})


def _refuse_other_args(path: str, old: Mapping, build_args: Mapping) -> None:
  diff = _differing_flags(old, build_args)
  if diff:
    raise ValueError(f"{path}: --out was built with other arguments ({', '.join(diff)}); "
                     "pass --overwrite or another --out")


def load_or_make_plan(out_dir: str, build_args: Mapping, make: Callable[[], libri_plan.CorpusPlan],
                      overwrite: bool = False) -> tuple[libri_plan.CorpusPlan, bool]:
  """(the plan, whether this call made it): the intact `PLAN` in ``out_dir`` made from
  ``build_args``, else ``make()`` (which lists the corpus), then written there atomically.

  Raises ValueError naming the flags when the plan there (or an older build's
  `LEGACY_BUILD_ARGS`) was made from other arguments, unless ``overwrite``; a plan that is
  not intact is made again, with a one-line warning.
  """
  path = os.path.join(out_dir, PLAN)
  legacy = os.path.join(out_dir, LEGACY_BUILD_ARGS)
  if not overwrite and os.path.isfile(path):
    try:
      plan = libri_plan.read_plan(path)
    except libri_plan.PlanError as e:
      log.warning("%s; planning again", e)
    else:
      _refuse_other_args(path, plan.manifest_base["build_args"], build_args)
      return plan, False
  elif not overwrite and os.path.isfile(legacy):
    with open(legacy, encoding="utf-8") as f:
      _refuse_other_args(legacy, json.load(f), build_args)
  plan = make()
  os.makedirs(out_dir, exist_ok=True)
  libri_plan.write_plan(path, plan)
  return plan, True


def write_manifest(out_dir: str, plan: libri_plan.CorpusPlan) -> dict[str, Any]:
  """Aggregates the shard summaries into bad_files.jsonl, the speaker indexes and the
  manifest (written last); returns the manifest."""
  manifest = json.loads(json.dumps(plan.manifest_base))
  filtered: dict[str, int] = {}
  rates: dict[str, int] = {}
  bad = list(plan.listing_bad)
  bad_alignments = 0
  for split in libri_plan.SPLITS:
    info = manifest["splits"][split]
    ids, n, samples = [], 0, 0
    for name in info["shards"]:
      with open(os.path.join(out_dir, name + SUMMARY_SUFFIX), encoding="utf-8") as f:
        s = json.load(f)
      n += s["num_examples"]
      samples += s["samples"]
      ids.extend(s["speaker_ids"])
      bad.extend(s["bad_files"])
      bad_alignments += s["bad_alignments"]
      for src, dst in ((s["filtered"], filtered), (s["source_sample_rates"], rates)):
        for k, v in src.items():
          dst[k] = dst.get(k, 0) + v
    info["num_examples"] = n
    info["hours"] = round(samples / libri_plan.SAMPLE_RATE / 3600, 6)
    index = speaker_index_path(out_dir, split)
    if n:  # as write_speaker_index would, without reading the records again
      tmp = index + f".tmp-{os.getpid()}.npy"
      np.save(tmp, np.asarray(ids, np.int32))
      os.replace(tmp, index)
  manifest.update({"filtered": dict(sorted(filtered.items())), "bad_files": len(bad),
                   "bad_alignments": bad_alignments,
                   "source_sample_rates": dict(sorted(rates.items()))})
  tmp = os.path.join(out_dir, f"{BAD_FILES}.tmp-{os.getpid()}")
  with open(tmp, "w", encoding="utf-8") as f:
    for b in bad:
      f.write(json.dumps(b, sort_keys=True) + "\n")
  os.replace(tmp, os.path.join(out_dir, BAD_FILES))
  write_json(os.path.join(out_dir, "manifest.json"), manifest)
  return manifest


def build(corpus: str, root: str, out_dir: str, *, split_subsets: Mapping[str, Sequence[str]],
          split_cuts: Mapping[str, Sequence[str]] | None = None, seed: int = 0,
          shard_size: int = 256, valid_fraction: float = 0.01, workers: int = 1,
          shard: int = 0, num_shards: int = 1, f0: bool = False,
          alignments: str | None = None, min_seconds: float = libri_plan.DEFAULT_MIN_SECONDS,
          max_seconds: float = libri_layouts.DEFAULT_MAX_SECONDS, overwrite: bool = False,
          plan_only: bool = False, progress: bool = True) -> dict[str, Any]:
  """Writes this call's shards of the corpus (module docstring), or with ``plan_only`` only
  the plan; returns the summary (``planned``: whether this call listed the corpus)."""
  from tqdm import tqdm
  t0 = time.time()
  if workers < 1:
    raise ValueError(f"--workers must be >= 1, got {workers}")
  if not 0 <= shard < num_shards:
    raise ValueError(f"--shard must be in [0, --num-shards={num_shards}), got {shard}")
  if alignments and not os.path.isdir(alignments):
    raise FileNotFoundError(f"--alignments {alignments}: no such directory")
  kwargs = dict(split_subsets=split_subsets, split_cuts=split_cuts, seed=seed,
                shard_size=shard_size, valid_fraction=valid_fraction, min_seconds=min_seconds,
                max_seconds=max_seconds, alignments=alignments, f0=f0)
  out_dir = os.path.abspath(out_dir)
  plan, planned = load_or_make_plan(
      out_dir, libri_plan.build_args(corpus, root, **kwargs),
      functools.partial(libri_plan.plan_corpus, corpus, root, **kwargs), overwrite)
  if plan_only:
    return {"out": out_dir, "plan": os.path.join(out_dir, PLAN), "planned": planned,
            "items": len(plan.items), "num_shards": dict(plan.num_shards),
            "seconds": round(time.time() - t0, 2)}
  lite = dataclasses.replace(plan, items=[])
  by_shard: dict[tuple[str, int], list[libri_plan.PlannedItem]] = {}
  for p in plan.items:
    by_shard.setdefault((p.split, p.shard), []).append(p)
  tag = f"{shard}-{os.getpid()}"
  tasks, skipped = [], 0
  for split in libri_plan.SPLITS:
    for j in range(plan.num_shards[split]):
      if j % num_shards != shard:
        continue
      name = libri_plan.shard_name(split, j, plan.num_shards[split])
      if not overwrite and _complete(out_dir, name):
        skipped += 1
        continue
      for stale in glob.glob(glob.escape(os.path.join(out_dir, name)) + ".tmp-*"):
        os.remove(stale)  # left by a killed call that owned this shard
      tasks.append((out_dir, split, j, by_shard.get((split, j), []), lite, f"{tag}-{len(tasks)}"))
  bar = tqdm(total=sum(len(t[3]) for t in tasks), desc=f"{corpus} corpus", unit="utt",
             disable=not progress, file=sys.stderr)
  summaries = []
  if workers == 1 or len(tasks) <= 1:
    for t in tasks:
      summaries.append(_task(t))
      bar.update(len(t[3]))
  else:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
      for fut in concurrent.futures.as_completed([pool.submit(_task, t) for t in tasks]):
        summaries.append(fut.result())
        bar.update(summaries[-1]["attempted"])
  bar.close()
  names = [n for s in libri_plan.SPLITS for n in plan.manifest_base["splits"][s]["shards"]]
  manifest = None
  if all(_complete(out_dir, n) for n in names):
    manifest = write_manifest(out_dir, plan)
  attempted = sum(s["attempted"] for s in summaries)
  worker_s = sum(s["seconds"] for s in summaries)
  audio_s = sum(s["samples"] for s in summaries) / libri_plan.SAMPLE_RATE
  return {"out": out_dir, "planned": planned, "shards_written": len(tasks),
          "shards_skipped": skipped,
          "examples_written": sum(s["num_examples"] for s in summaries),
          "filtered": sum(sum(s["filtered"].values()) for s in summaries),
          "bad_files": sum(len(s["bad_files"]) for s in summaries),
          "manifest_written": manifest is not None,
          "examples": ({s: manifest["splits"][s]["num_examples"] for s in libri_plan.SPLITS}
                       if manifest else None),
          "utterances_per_s_per_worker": round(attempted / worker_s, 2) if worker_s else None,
          "audio_s_per_s_per_worker": round(audio_s / worker_s, 2) if worker_s else None,
          "workers": workers, "seconds": round(time.time() - t0, 2)}


def _split_flag(values: Sequence[str], flag: str) -> dict[str, list[str]]:
  out: dict[str, list[str]] = {}
  for v in values:
    split, eq, rest = v.partition("=")
    if not eq or not rest:
      raise SystemExit(f"jaxtts-corpus: {flag} {v!r}: expected SPLIT=NAME[,NAME...]")
    out.setdefault(split, []).extend(x for x in rest.split(",") if x)
  return out


def main(argv: Sequence[str]) -> int:
  p = argparse.ArgumentParser(prog=f"jaxtts-corpus {argv[0] if argv else ''}".strip(),
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("corpus", choices=libri_layouts.CORPORA)
  p.add_argument("--root", required=True, help="directory holding the subsets")
  p.add_argument("--out", required=True, help="output corpus directory")
  p.add_argument("--split", action="append", default=[], metavar="SPLIT=SUBSET[,SUBSET]",
                 help="train / test_zero_shot subsets (repeatable)")
  p.add_argument("--cuts", action="append", default=[], metavar="SPLIT=FILE[,FILE]",
                 help="librilight: LibriHeavy cut manifests (.jsonl[.gz]) per split")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--shard-size", type=int, default=256, help="records per shard")
  p.add_argument("--valid-fraction", type=float, default=0.01,
                 help="fraction of each training speaker's utterances that go to valid")
  p.add_argument("--workers", type=int, default=1, help="processes (output does not depend "
                 "on it)")
  p.add_argument("--shard", type=int, default=0, help="this call's index i: writes shards "
                 "j %% n == i")
  p.add_argument("--num-shards", type=int, default=1, help="number of calls n (e.g. hosts)")
  p.add_argument("--plan-only", action="store_true", help=f"only write the plan (--out/{PLAN}"
                 ") that the shard builders then read instead of listing the corpus")
  p.add_argument("--f0", action="store_true", help="also store per-frame f0 / voiced")
  p.add_argument("--alignments", default=None, help="MFA TextGrids <DIR>/<speaker>/<id>."
                 "TextGrid: store durations")
  p.add_argument("--min-seconds", type=float, default=libri_plan.DEFAULT_MIN_SECONDS)
  p.add_argument("--max-seconds", type=float, default=libri_layouts.DEFAULT_MAX_SECONDS,
                 help="longer utterances are filtered; also the VAD piece length")
  p.add_argument("--overwrite", action="store_true", help="rewrite complete shards and accept "
                 "other build arguments")
  p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
  args = p.parse_args(argv)
  try:
    summary = _build_from_args(args)
  except (ValueError, FileNotFoundError) as e:  # user errors: one line naming the flag / file
    print(f"jaxtts-corpus {args.corpus}: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary, sort_keys=True))
  return 0


def _build_from_args(args: argparse.Namespace) -> dict[str, Any]:
  return build(args.corpus, args.root, args.out,
               split_subsets=_split_flag(args.split, "--split"),
               split_cuts=_split_flag(args.cuts, "--cuts"), seed=args.seed,
               shard_size=args.shard_size, valid_fraction=args.valid_fraction,
               workers=args.workers, shard=args.shard, num_shards=args.num_shards,
               f0=args.f0, alignments=args.alignments, min_seconds=args.min_seconds,
               max_seconds=args.max_seconds, overwrite=args.overwrite,
               plan_only=args.plan_only, progress=not args.no_progress)
