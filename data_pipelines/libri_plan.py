"""Listed items (`data_pipelines.libri_layouts`) -> a `CorpusPlan`, and its file.

`plan_corpus` is deterministic (sorted listings, seeded choices): splits (``train``, ``valid``
carved from the training speakers, ``test_zero_shot``), speaker ids (training speakers first),
shards (seeded) and the manifest fields but the counts. It depends only on the files and
`build_args`, so every host makes the same plan; `write_plan` stores it once in the output
directory and `read_plan` gives it back, so the other hosts and later runs need not list the
corpus again (LibriLight's VAD json files, LibriHeavy's cut manifests).

Plan file (``plan.jsonl.gz``): gzip (mtime 0, no file name: the same plan has the same bytes)
of JSON lines, in order

* a header: ``plan_version`` (int), ``num_items`` (int, the lines after it), and every
  `CorpusPlan` field but ``items`` (``manifest_base["build_args"]``: the arguments it was made
  from);
* ``num_items`` planned items in plan order: ``split`` (str), ``shard`` (int) and the `Item`
  fields (``corpus``, ``subset``, ``id``, ``speaker``, ``chapter``, ``audio_path``, ``start_s``,
  ``duration_s``, ``text``).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
import os
import uuid
import zlib
from typing import Mapping, Sequence

import numpy as np

from data_pipelines.libri_layouts import DEFAULT_MAX_SECONDS, Item, list_items, speaker_genders
from data_pipelines.libri_layouts import speaker_key
from jaxtts.data import features
from jaxtts.text import default_phoneme_table
from jaxtts.text.symbols import PhonemeTable

SPLITS = ("train", "valid", "test_zero_shot")
SAMPLE_RATE = 16000
HOP_LENGTH = 200
FORMAT_VERSION = 1
PLAN_VERSION = 1
DEFAULT_MIN_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class PlannedItem:
  item: Item
  split: str
  shard: int


@dataclasses.dataclass(frozen=True)
class CorpusPlan:
  """Everything a shard writer needs; the same for every host and worker count.

  ``items`` in plan order (records of a shard are written in this order);
  ``num_shards[split]``; ``speakers``: the manifest's list (``id`` indexes it);
  ``manifest_base``: every manifest field but the counts (``splits``' num_examples / hours,
  ``filtered``, ``bad_files``)."""
  items: list[PlannedItem]
  num_shards: dict[str, int]
  speakers: list[dict]
  manifest_base: dict
  speaker_ids: dict[str, int]        # speaker name -> id
  with_text: bool
  alignments: str | None             # absolute TextGrid directory (text corpora only)
  f0: bool
  min_seconds: float
  max_seconds: float
  listing_bad: list[dict]            # {"path", "reason"} found while listing


class PlanError(ValueError):
  """A plan file that is not an intact plan of this version (truncated, corrupt, ...)."""


def shard_name(split: str, i: int, n: int) -> str:
  return f"{split}-{i:05d}-of-{n:05d}.array_record"


def _rng(*key: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def build_args(corpus: str, root: str, *, split_subsets: Mapping[str, Sequence[str]],
               seed: int, shard_size: int, valid_fraction: float,
               split_cuts: Mapping[str, Sequence[str]] | None = None,
               min_seconds: float = DEFAULT_MIN_SECONDS,
               max_seconds: float = DEFAULT_MAX_SECONDS, alignments: str | None = None,
               f0: bool = False) -> dict:
  """The manifest's ``build_args`` (what a plan is made from) of `plan_corpus`' arguments,
  which it checks first (ValueError naming the flag); lists nothing."""
  split_cuts = dict(split_cuts or {})
  for flag, mapping in (("--split", split_subsets), ("--cuts", split_cuts)):
    extra = sorted(set(mapping) - {"train", "test_zero_shot"})
    if extra:
      raise ValueError(f"{flag}: splits must be train or test_zero_shot (valid is carved from "
                       f"train with --valid-fraction), got {extra}")
  if "train" not in split_subsets and "train" not in split_cuts:
    raise ValueError("--split train=SUBSET[,SUBSET] (or --cuts train=FILE) is required")
  if shard_size < 1:
    raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
  if not 0 <= valid_fraction < 1:
    raise ValueError(f"--valid-fraction must be in [0, 1), got {valid_fraction}")
  if not 0 <= min_seconds < max_seconds:
    raise ValueError(f"need 0 <= --min-seconds < --max-seconds, got {min_seconds}, "
                     f"{max_seconds}")
  variant = os.path.basename(os.path.abspath(root)) if corpus == "libritts" else None
  return {"corpus": corpus, "root": os.path.abspath(root), "variant": variant,
          "split": {s: list(v) for s, v in sorted(split_subsets.items())},
          "cuts": {s: [os.path.abspath(c) for c in v] for s, v in sorted(split_cuts.items())},
          "seed": seed, "shard_size": shard_size, "valid_fraction": valid_fraction,
          "min_seconds": min_seconds, "max_seconds": max_seconds,
          "alignments": os.path.abspath(alignments) if alignments else None,
          "f0": bool(f0), "text": has_text(corpus, split_cuts)}


def has_text(corpus: str, split_cuts: Mapping[str, Sequence[str]] | None) -> bool:
  """Whether records carry text: every corpus but LibriLight without LibriHeavy cuts."""
  return not (corpus == "librilight" and not split_cuts)


def feature_specs(with_text: bool, alignments: bool, f0: bool) -> dict[str, dict]:
  """The manifest's ``features`` (`jaxtts.data.features`): ``durations`` only with text and
  alignments, ``phonemes`` only with text, ``f0`` / ``voiced`` with ``f0``."""
  specs = features.base_specs(SAMPLE_RATE, HOP_LENGTH)
  if not alignments or not with_text:
    del specs["durations"]
  if not with_text:
    del specs["phonemes"]
  if f0:
    from jaxtts.audio import f0 as f0_lib  # pylint: disable=import-outside-toplevel
    specs.update(features.f0_specs(HOP_LENGTH, SAMPLE_RATE, f0_lib.settings()))
  return specs


def plan_corpus(corpus: str, root: str, *, split_subsets: Mapping[str, Sequence[str]],
                seed: int, shard_size: int, valid_fraction: float,
                split_cuts: Mapping[str, Sequence[str]] | None = None,
                min_seconds: float = DEFAULT_MIN_SECONDS,
                max_seconds: float = DEFAULT_MAX_SECONDS, alignments: str | None = None,
                f0: bool = False, table: PhonemeTable | None = None) -> CorpusPlan:
  """Splits, speaker ids, shards and manifest fields of a corpus (module docstring).

  ``split_subsets`` / ``split_cuts``: ``train`` and ``test_zero_shot`` -> subsets / cut files.
  ``valid`` takes ``round(valid_fraction * n)`` (at most n - 1) seeded utterances of each
  training speaker; a test speaker that is also a training speaker is an error.
  Records of a shard keep plan order; shard of item k = its seeded position mod num_shards.
  """
  split_cuts = dict(split_cuts or {})
  args = build_args(corpus, root, split_subsets=split_subsets, seed=seed,
                    shard_size=shard_size, valid_fraction=valid_fraction,
                    split_cuts=split_cuts, min_seconds=min_seconds, max_seconds=max_seconds,
                    alignments=alignments, f0=f0)
  table = table or default_phoneme_table()
  listing_bad: list[dict] = []
  by_split = {s: list_items(corpus, root, split_subsets.get(s, ()), cuts=split_cuts.get(s, ()),
                            max_seconds=max_seconds, bad=listing_bad)
              for s in ("train", "test_zero_shot")
              if split_subsets.get(s) or split_cuts.get(s)}
  train_spk = sorted({it.speaker for it in by_split["train"]}, key=speaker_key)
  test_items = by_split.get("test_zero_shot", [])
  shared = sorted({it.speaker for it in test_items} & set(train_spk), key=speaker_key)
  if shared:
    raise ValueError(f"--split/--cuts test_zero_shot: speakers {shared[:10]} are also in train "
                     "(zero-shot speakers must be held out)")
  test_spk = sorted({it.speaker for it in test_items}, key=speaker_key)
  names = train_spk + test_spk
  speaker_ids = {name: k for k, name in enumerate(names)}
  subsets_of: dict[str, set] = {}
  for it in by_split["train"] + test_items:
    subsets_of.setdefault(it.speaker, set()).add(it.subset)
  genders = speaker_genders(corpus, os.path.abspath(root))
  speakers = [{"id": k, "name": name, "split": "train" if k < len(train_spk) else
               "test_zero_shot", "corpus": corpus, "subsets": sorted(subsets_of[name]),
               **({"gender": genders[name]} if name in genders else {})}
              for k, name in enumerate(names)]

  assigned: list[tuple[Item, str]] = []
  per_speaker: dict[str, list[int]] = {}
  for k, it in enumerate(by_split["train"]):
    per_speaker.setdefault(it.speaker, []).append(k)
  valid = set()
  for name, idx in per_speaker.items():
    n_valid = min(int(round(valid_fraction * len(idx))), len(idx) - 1)
    perm = _rng(seed, 200, speaker_ids[name]).permutation(len(idx))
    valid.update(idx[p] for p in perm[:n_valid].tolist())
  for k, it in enumerate(by_split["train"]):
    assigned.append((it, "valid" if k in valid else "train"))
  assigned.extend((it, "test_zero_shot") for it in test_items)

  num_shards: dict[str, int] = {}
  shard_of: dict[int, int] = {}
  for s_ix, split in enumerate(SPLITS):
    idx = [k for k, (_, s) in enumerate(assigned) if s == split]
    num_shards[split] = max(1, math.ceil(len(idx) / shard_size))
    for pos, k in zip(_rng(seed, 300, s_ix).permutation(len(idx)).tolist(), idx):
      shard_of[k] = pos % num_shards[split]
  planned = [PlannedItem(it, s, shard_of[k]) for k, (it, s) in enumerate(assigned)]

  with_text = args["text"]
  specs = feature_specs(with_text, bool(alignments), f0)
  speaker_split_ids = {"train": list(range(len(train_spk))),
                       "valid": list(range(len(train_spk))),
                       "test_zero_shot": list(range(len(train_spk), len(names)))}
  manifest_base = {
      "format_version": FORMAT_VERSION,
      "builder": corpus,
      "seed": seed,
      "sample_rate": SAMPLE_RATE,
      "hop_length": HOP_LENGTH,
      "phoneme_table": table.to_json(),
      "speakers": speakers,
      "splits": {s: {"shards": [shard_name(s, i, num_shards[s]) for i in range(num_shards[s])],
                     "speaker_ids": speaker_split_ids[s]} for s in SPLITS},
      "features": {k: specs[k] for k in sorted(specs)},
      "build_args": args,
  }
  return CorpusPlan(planned, num_shards, speakers, manifest_base, speaker_ids, with_text,
                    args["alignments"] if with_text else None, bool(f0), float(min_seconds),
                    float(max_seconds), listing_bad)


# ---------------------------------------------------------------------------------------------
# Plan file


def write_plan(path: str, plan: CorpusPlan) -> None:
  """``plan`` as a plan file (module docstring) at ``path``, atomically: written under a
  unique temporary name beside it (hosts sharing the directory never share one), then
  renamed; an identical file already there is replaced by the same bytes."""
  header = {"plan_version": PLAN_VERSION, "num_items": len(plan.items),
            **{f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)
               if f.name != "items"}}
  tmp = f"{path}.tmp-{uuid.uuid4().hex}"
  try:
    with open(tmp, "xb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as gz, \
        io.TextIOWrapper(gz, encoding="utf-8") as f:
      f.write(json.dumps(header) + "\n")
      for p in plan.items:
        f.write(json.dumps({"split": p.split, "shard": p.shard,
                            **dataclasses.asdict(p.item)}) + "\n")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_plan(path: str) -> CorpusPlan:
  """The plan `write_plan` wrote at ``path``. Raises FileNotFoundError when there is none,
  PlanError (one line) when it is not intact: truncated, corrupt, or another version."""
  try:
    return _read_plan(path)
  except FileNotFoundError:
    raise
  except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError, AttributeError) as e:
    raise PlanError(f"{path}: not an intact plan ({type(e).__name__}: {e})") from e


def _read_plan(path: str) -> CorpusPlan:
  with gzip.open(path, "rt", encoding="utf-8") as f:
    header = json.loads(f.readline())
    if header.pop("plan_version") != PLAN_VERSION:
      raise ValueError(f"plan_version is not {PLAN_VERSION}")
    num_items = header.pop("num_items")
    items = []
    for line in f:
      row = json.loads(line)
      split, shard = row.pop("split"), row.pop("shard")
      items.append(PlannedItem(Item(**row), split, shard))
  if len(items) != num_items:
    raise ValueError(f"{len(items)} of its {num_items} items")
  return CorpusPlan(items=items, **header)
