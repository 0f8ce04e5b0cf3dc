"""LibriSpeech, LibriTTS(-R) and LibriLight/LibriHeavy on disk -> `Item` s (`list_items`).

Listings are deterministic (sorted directories and files). Layouts (``root`` is the directory
holding the subsets, the builders' ``--root``):

* ``librispeech``: ``<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac`` and
  ``<spk>-<chapter>.trans.txt`` (``ID TRANSCRIPT``, upper case), 16 kHz.
* ``libritts`` (a ``LibriTTS/`` or ``LibriTTS_R/`` root):
  ``<subset>/<spk>/<chapter>/<spk>_<chapter>_<para>_<sent>.wav`` with ``.normalized.txt``,
  24 kHz.
* ``librilight`` with LibriHeavy cuts (lhotse MonoCut JSONL, optionally gzipped): one item per
  cut, ``start`` / ``duration`` inside the recording, ``supervisions[0].speaker``,
  ``custom.texts[0]`` (the cased, punctuated book text); ``recording.sources[0].source``
  (``download/librilight/<subset>/<spk>/<book>/<file>.flac``) is found under ``root`` from
  its subset directory on. Without cuts: ``<subset>/<spk>/<book>/<file>.flac`` + ``.json``
  whose ``voice_activity`` [[onset_s, offset_s], ...] is grouped greedily into pieces of at
  most ``max_seconds`` (`vad_pieces`), each from its first segment's onset to its last one's
  offset, the silences between kept (LibriLight's cut_by_vad.py removes them). Pieces have no
  text.

Speaker genders (`speaker_genders`) come from LibriSpeech's ``SPEAKERS.TXT`` or LibriTTS's
``speakers.tsv`` at the root.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
from typing import Iterator, Sequence

CORPORA = ("librispeech", "libritts", "librilight")
DEFAULT_MAX_SECONDS = 20.0


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


def speaker_key(name: str) -> tuple:
  """Sort key of speaker names: numeric names in numeric order, then the others."""
  return (not name.isdigit(), int(name) if name.isdigit() else 0, name)


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
  items.sort(key=lambda it: (it.subset, speaker_key(it.speaker), it.chapter, it.id,
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
