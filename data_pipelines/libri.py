"""LibriSpeech, LibriTTS(-R) and LibriLight/LibriHeavy layouts -> planned utterances -> records.

Three steps, each deterministic (sorted listings, seeded choices):

* `list_items`: the utterances of some subsets of one corpus on disk, as `Item` s;
* `plan_corpus`: items -> splits (``train``, ``valid`` carved from the training speakers,
  ``test_zero_shot``), speaker ids (training speakers first), shards (seeded), manifest fields;
* `make_record`: one planned item -> a record dict (`jaxtts.data.records`), or `BadItem`.

Layouts (``--root`` is the directory holding the subsets):

* ``librispeech``: ``<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac`` and
  ``<spk>-<chapter>.trans.txt`` (``ID TRANSCRIPT``, upper case; stored lower-cased with the first
  letter capitalized, then normalized), 16 kHz.
* ``libritts`` (a ``LibriTTS/`` or ``LibriTTS_R/`` root):
  ``<subset>/<spk>/<chapter>/<spk>_<chapter>_<para>_<sent>.wav`` with ``.normalized.txt``;
  24 kHz, resampled to 16 kHz.
* ``librilight`` with LibriHeavy cuts (lhotse MonoCut JSONL, optionally gzipped): one item per
  cut, ``start`` / ``duration`` inside the recording, ``supervisions[0].speaker``,
  ``custom.texts[0]`` (the cased, punctuated book text); ``recording.sources[0].source``
  (``download/librilight/<subset>/<spk>/<book>/<file>.flac``) is found under ``--root`` from
  its subset directory on. Without cuts: ``<subset>/<spk>/<book>/<file>.flac`` + ``.json``
  whose ``voice_activity`` [[onset_s, offset_s], ...] is grouped greedily into pieces of at
  most ``max_seconds``, each from its first segment's onset to its last one's offset, the
  silences between kept (LibriLight's cut_by_vad.py removes them). Pieces have no text.

Text corpora (every corpus but VAD pieces) phonemize with `jaxtts.text.phonemize_clauses`
(en-us). Durations come only from aligner TextGrids (`data_pipelines.alignments`).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import math
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import soundfile as sf

from jaxtts.audio.io import resample
from jaxtts.data import features
from jaxtts.text import EmptyTextError, normalize_text, phonemize_clauses
from jaxtts.text import default_phoneme_table
from jaxtts.text.espeak import EspeakError
from jaxtts.text.symbols import PhonemeTable, UnknownPhonemeError

CORPORA = ("librispeech", "libritts", "librilight")
SPLITS = ("train", "valid", "test_zero_shot")
SAMPLE_RATE = 16000
HOP_LENGTH = 200
FORMAT_VERSION = 1
DEFAULT_MAX_SECONDS = 20.0
DEFAULT_MIN_SECONDS = 0.5
LANGUAGE = "en-us"


@dataclasses.dataclass(frozen=True)
class Item:
  """One utterance on disk. ``start_s`` / ``duration_s`` (seconds) select a segment of
  ``audio_path`` (None: the whole file). ``text`` None: a missing transcript in a text corpus,
  or no text by design (LibriLight VAD pieces)."""
  corpus: str
  subset: str
  id: str
  speaker: str
  chapter: str
  audio_path: str
  start_s: float | None
  duration_s: float | None
  text: str | None


class BadItem(ValueError):
  """An item that yields no record: unreadable audio, empty text, a bad alignment, ..."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


class FilteredItem(BadItem):
  """A readable item outside the duration limits (``reason`` is ``too_long`` / ``too_short``)."""


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
  alignments: str | None
  f0: bool
  min_seconds: float
  max_seconds: float
  listing_bad: list[dict]            # {"path", "reason"} found while listing


def shard_name(split: str, i: int, n: int) -> str:
  return f"{split}-{i:05d}-of-{n:05d}.array_record"


def _rng(*key: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _speaker_key(name: str) -> tuple:
  return (not name.isdigit(), int(name) if name.isdigit() else 0, name)


# ---------------------------------------------------------------------------------------------
# Listing


def _dirs(path: str) -> list[str]:
  return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))


def _subset_dir(root: str, subset: str) -> str:
  path = os.path.join(root, subset)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"--root {root}: no subset directory {subset!r} (have "
                            f"{_dirs(root) if os.path.isdir(root) else 'no such directory'})")
  return path


def _librispeech(root: str, subset: str) -> Iterator[Item]:
  base = _subset_dir(root, subset)
  for spk in _dirs(base):
    for chapter in _dirs(os.path.join(base, spk)):
      d = os.path.join(base, spk, chapter)
      texts: dict[str, str] = {}
      trans = os.path.join(d, f"{spk}-{chapter}.trans.txt")
      if os.path.isfile(trans):
        with open(trans, encoding="utf-8") as f:
          for line in f:
            if line.strip():
              uid, _, text = line.strip().partition(" ")
              texts[uid] = text.strip()
      ids = {os.path.basename(p)[:-5] for p in glob.glob(os.path.join(d, "*.flac"))}
      for uid in sorted(ids | set(texts)):  # a line without audio fails at reading
        yield Item("librispeech", subset, uid, spk, chapter, os.path.join(d, uid + ".flac"),
                   None, None, texts.get(uid))


def _libritts(root: str, subset: str) -> Iterator[Item]:
  base = _subset_dir(root, subset)
  for spk in _dirs(base):
    for chapter in _dirs(os.path.join(base, spk)):
      d = os.path.join(base, spk, chapter)
      for wav in sorted(glob.glob(os.path.join(d, "*.wav"))):
        uid = os.path.basename(wav)[:-4]
        txt = os.path.join(d, uid + ".normalized.txt")
        text = None
        if os.path.isfile(txt):
          with open(txt, encoding="utf-8") as f:
            text = f.read().strip()
        yield Item("libritts", subset, uid, spk, chapter, wav, None, None, text)


def vad_pieces(segments: Sequence[Sequence[float]], max_seconds: float
               ) -> list[tuple[float, float]]:
  """Greedy grouping of VAD segments [[onset, offset], ...] into (start_s, end_s) pieces of
  at most ``max_seconds`` (a longer segment is a piece of its own), silences kept."""
  pieces: list[tuple[float, float]] = []
  for onset, offset in sorted((float(a), float(b)) for a, b in segments):
    if pieces and offset - pieces[-1][0] <= max_seconds:
      pieces[-1] = (pieces[-1][0], offset)
    else:
      pieces.append((onset, offset))
  return pieces


def _librilight_vad(root: str, subset: str, max_seconds: float,
                    bad: list[dict] | None) -> Iterator[Item]:
  base = _subset_dir(root, subset)
  for spk in _dirs(base):
    for book in _dirs(os.path.join(base, spk)):
      for flac in sorted(glob.glob(os.path.join(base, spk, book, "*.flac"))):
        meta = flac[:-5] + ".json"
        try:
          with open(meta, encoding="utf-8") as f:
            vad = json.load(f)["voice_activity"]
        except (OSError, ValueError, KeyError, TypeError) as e:
          if bad is not None:
            bad.append({"path": meta, "reason": f"unreadable VAD json ({type(e).__name__}: {e})"})
          continue
        stem = os.path.basename(flac)[:-5]
        for k, (a, b) in enumerate(vad_pieces(vad, max_seconds)):
          yield Item("librilight", subset, f"{subset}/{spk}/{book}/{stem}_{k:04d}", spk, book,
                     flac, round(a, 6), round(b - a, 6), None)


def _open_text(path: str):
  return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(
      path, encoding="utf-8")


def _map_source(source: str, root: str, cache: dict[str, tuple[str, str]]) -> tuple[str, str]:
  """A LibriHeavy source path -> (path under root, subset): the part from a directory that
  exists under ``root`` on."""
  if source not in cache:
    parts = source.replace("\\", "/").split("/")
    for k in range(len(parts) - 1):
      path = os.path.join(root, *parts[k:])
      if os.path.isfile(path):
        cache[source] = (path, parts[k])
        break
    else:
      raise FileNotFoundError(f"--root {root}: recording {source!r} not found under it (looked "
                              "for every tail of the path, e.g. <root>/small/<spk>/<book>/"
                              "<file>.flac)")
  return cache[source]


def _librilight_cuts(root: str, cuts: Sequence[str], subsets: Sequence[str]) -> Iterator[Item]:
  cache: dict[str, tuple[str, str]] = {}
  for cut_file in cuts:
    with _open_text(cut_file) as f:
      for n, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          cut = json.loads(line)
          source = cut["recording"]["sources"][0]["source"]
          speaker = str(cut["supervisions"][0]["speaker"])
          text = str(cut["custom"]["texts"][0])
          start, duration, cid = float(cut["start"]), float(cut["duration"]), str(cut["id"])
        except (ValueError, KeyError, IndexError, TypeError) as e:
          raise ValueError(f"{cut_file} line {n}: not a LibriHeavy MonoCut "
                           f"({type(e).__name__}: {e})") from e
        path, subset = _map_source(source, root, cache)
        if subsets and subset not in subsets:
          continue
        yield Item("librilight", subset, cid, speaker, os.path.basename(os.path.dirname(path)),
                   path, start, duration, text)


def list_items(corpus: str, root: str, subsets: Sequence[str], *, cuts: Sequence[str] = (),
               max_seconds: float = DEFAULT_MAX_SECONDS,
               bad: list[dict] | None = None) -> list[Item]:
  """The items of ``subsets`` of ``corpus`` under ``root``, sorted by (subset, speaker,
  chapter, id, start).

  ``cuts`` (librilight only): LibriHeavy cut manifests; their items replace the VAD listing
  (``subsets``, if given, keeps the cuts whose recordings lie in them). ``max_seconds``: the
  VAD piece length. ``bad``: receives ``{"path", "reason"}`` of files unusable at listing time
  (an unreadable VAD json). Raises FileNotFoundError for a missing subset or recording.
  """
  root = os.path.abspath(root)
  if corpus not in CORPORA:
    raise ValueError(f"corpus must be one of {CORPORA}, got {corpus!r}")
  if cuts and corpus != "librilight":
    raise ValueError(f"--cuts applies to librilight only, not {corpus}")
  items: list[Item] = []
  if cuts:
    items.extend(_librilight_cuts(root, cuts, subsets))
  else:
    for subset in subsets:
      if corpus == "librispeech":
        items.extend(_librispeech(root, subset))
      elif corpus == "libritts":
        items.extend(_libritts(root, subset))
      else:
        items.extend(_librilight_vad(root, subset, max_seconds, bad))
  items.sort(key=lambda it: (it.subset, _speaker_key(it.speaker), it.chapter, it.id,
                             it.start_s or 0.0))
  return items


def speaker_genders(corpus: str, root: str) -> dict[str, str]:
  """Speaker -> ``"female"`` / ``"male"`` from LibriSpeech's ``SPEAKERS.TXT`` (``ID | SEX |
  ...``, ``;`` comments) or LibriTTS's ``speakers.tsv`` (``READER GENDER ...``) when the root
  has one; empty otherwise."""
  names = {"librispeech": ("SPEAKERS.TXT", "|"), "libritts": ("speakers.tsv", "\t")}
  if corpus not in names or not os.path.isfile(os.path.join(root, names[corpus][0])):
    return {}
  out = {}
  with open(os.path.join(root, names[corpus][0]), encoding="utf-8", errors="replace") as f:
    for line in f:
      cols = [c.strip() for c in line.split(names[corpus][1])]
      if len(cols) >= 2 and not line.startswith(";") and cols[1].upper() in ("F", "M"):
        out[cols[0]] = "female" if cols[1].upper() == "F" else "male"
  return out


# ---------------------------------------------------------------------------------------------
# Plan


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
  table = table or default_phoneme_table()
  listing_bad: list[dict] = []
  by_split = {s: list_items(corpus, root, split_subsets.get(s, ()), cuts=split_cuts.get(s, ()),
                            max_seconds=max_seconds, bad=listing_bad)
              for s in ("train", "test_zero_shot")
              if split_subsets.get(s) or split_cuts.get(s)}
  train_spk = sorted({it.speaker for it in by_split["train"]}, key=_speaker_key)
  test_items = by_split.get("test_zero_shot", [])
  shared = sorted({it.speaker for it in test_items} & set(train_spk), key=_speaker_key)
  if shared:
    raise ValueError(f"--split/--cuts test_zero_shot: speakers {shared[:10]} are also in train "
                     "(zero-shot speakers must be held out)")
  test_spk = sorted({it.speaker for it in test_items}, key=_speaker_key)
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

  num_shards, planned = {}, []
  shard_of: dict[int, int] = {}
  for s_ix, split in enumerate(SPLITS):
    idx = [k for k, (_, s) in enumerate(assigned) if s == split]
    num_shards[split] = max(1, math.ceil(len(idx) / shard_size))
    for pos, k in zip(_rng(seed, 300, s_ix).permutation(len(idx)).tolist(), idx):
      shard_of[k] = pos % num_shards[split]
  planned = [PlannedItem(it, s, shard_of[k]) for k, (it, s) in enumerate(assigned)]

  with_text = not (corpus == "librilight" and not split_cuts)
  specs = features.base_specs(SAMPLE_RATE, HOP_LENGTH)
  if not alignments or not with_text:
    del specs["durations"]
  if not with_text:
    del specs["phonemes"]
  if f0:
    from jaxtts.audio import f0 as f0_lib  # pylint: disable=import-outside-toplevel
    specs.update(features.f0_specs(HOP_LENGTH, SAMPLE_RATE, f0_lib.settings()))
  variant = os.path.basename(os.path.abspath(root)) if corpus == "libritts" else None
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
      "build_args": {"corpus": corpus, "root": os.path.abspath(root), "variant": variant,
                     "split": {s: list(v) for s, v in sorted(split_subsets.items())},
                     "cuts": {s: [os.path.abspath(c) for c in v]
                              for s, v in sorted(split_cuts.items())},
                     "seed": seed, "shard_size": shard_size, "valid_fraction": valid_fraction,
                     "min_seconds": min_seconds, "max_seconds": max_seconds,
                     "alignments": os.path.abspath(alignments) if alignments else None,
                     "f0": bool(f0), "text": with_text},
  }
  return CorpusPlan(planned, num_shards, speakers, manifest_base, speaker_ids, with_text,
                    alignments if with_text else None, bool(f0), float(min_seconds),
                    float(max_seconds), listing_bad)


# ---------------------------------------------------------------------------------------------
# Records


def read_audio(item: Item) -> tuple[np.ndarray, int]:
  """int16 [T] at 16 kHz (the item's segment, resampled from its rate with soxr HQ, trimmed to
  a multiple of the hop) and the source sample rate. Raises BadItem when unreadable."""
  try:
    info = sf.info(item.audio_path)
    sr = int(info.samplerate)
    start = 0 if item.start_s is None else int(round(item.start_s * sr))
    frames = -1 if item.duration_s is None else int(round(item.duration_s * sr))
    if start > info.frames or (frames > 0 and start + frames > info.frames + 1):
      raise BadItem(f"segment [{item.start_s}, +{item.duration_s}] s past the end of "
                    f"{item.audio_path} ({info.frames / sr:.3f} s)")
    pcm, _ = sf.read(item.audio_path, start=start, frames=frames, dtype="int16",
                     always_2d=True)
  except BadItem:
    raise
  except Exception as e:  # libsndfile raises several types for corrupt or missing files
    raise BadItem(f"unreadable audio ({type(e).__name__}: {e})") from e
  pcm = pcm[:, 0] if pcm.shape[1] == 1 else np.round(pcm.mean(axis=1)).astype(np.int16)
  if sr != SAMPLE_RATE:
    x = resample(pcm.astype(np.float32) / 32768.0, sr, SAMPLE_RATE)
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
  return pcm[:len(pcm) - len(pcm) % HOP_LENGTH], sr


def item_text(item: Item) -> str:
  """The record text: LibriSpeech's upper-case transcripts lower-cased (first letter upper),
  then `normalize_text`."""
  text = item.text or ""
  if item.corpus == "librispeech":
    text = text.lower()
    text = text[:1].upper() + text[1:]
  return normalize_text(text)


def make_record(planned: PlannedItem, plan: CorpusPlan, *,
                table: PhonemeTable | None = None) -> dict[str, Any]:
  """The record of one planned item (`jaxtts.data.records` fields; ``phonemes`` only for text
  corpora, ``durations`` only with ``plan.alignments``, ``f0`` / ``voiced`` with ``plan.f0``)
  plus ``source_sample_rate`` (int, Hz).

  Raises:
    FilteredItem: outside [min_seconds, max_seconds] (reason ``too_long`` / ``too_short``).
    BadItem: missing or empty transcript, unpronounceable text, unreadable audio, bad
      alignment (reason starts with ``alignment:``).
  """
  item = planned.item
  table = table or PhonemeTable.from_json(plan.manifest_base["phoneme_table"])
  if item.duration_s is not None:
    _check_length(item.duration_s, plan)
  phonemes = symbols = None
  text = ""
  if plan.with_text:
    if item.text is None:
      raise BadItem("no transcript")
    try:
      text = item_text(item)
      clauses = phonemize_clauses(text, language=LANGUAGE, table=table, normalize=False)
    except (EmptyTextError, UnknownPhonemeError, EspeakError) as e:
      raise BadItem(f"text: {e}") from e
    symbols = [s for c in clauses for s in c.symbols]
    phonemes = table.encode(symbols, text=text)
  audio, source_sr = read_audio(item)
  _check_length(len(audio) / SAMPLE_RATE, plan)
  example: dict[str, Any] = {"id": item.id, "text": text}
  if phonemes is not None:
    example["phonemes"] = phonemes
  if plan.alignments and symbols is not None:
    from data_pipelines import alignments  # pylint: disable=import-outside-toplevel
    example["durations"] = alignments.durations(
        alignments.textgrid_path(plan.alignments, item), symbols, len(audio) // HOP_LENGTH)
  example.update({"audio": audio, "sample_rate": SAMPLE_RATE,
                  "speaker_id": plan.speaker_ids[item.speaker], "speaker": item.speaker})
  if plan.f0:
    from jaxtts.data.derive import f0_fields  # pylint: disable=import-outside-toplevel
    example.update(f0_fields(example, sample_rate=SAMPLE_RATE, hop_length=HOP_LENGTH))
  example["source_sample_rate"] = source_sr
  return example


def _check_length(seconds: float, plan: CorpusPlan) -> None:
  if seconds > plan.max_seconds:
    raise FilteredItem("too_long")
  if seconds < plan.min_seconds:
    raise FilteredItem("too_short")
