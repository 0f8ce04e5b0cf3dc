"""Phoneme durations from aligner output: MFA-style TextGrids read with praatio.

    <dir>/<speaker>/<id>.TextGrid      ("/" in an id, e.g. a LibriHeavy cut id, becomes "_")

The phone tier (named ``phones``, else the last interval tier) holds intervals in seconds
from the start of the utterance (of the cut, for LibriHeavy). Its labelled intervals, in order,
must be our phoneme symbols (`jaxtts.text.symbols`) of the record, punctuation tokens (``<,>``
``<.>`` ...) included; unlabelled / silence intervals (``""``, ``sil``, ``sp``, ``spn``) go to
the token before them (leading silence to the first), as the espeak corpus does with pauses.
Token start times become frame boundaries at hop 200 (rounded, every token >= 1 frame, the last
boundary the record's frame count), so ``durations.sum() == len(audio) // 200``.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from data_pipelines.libri_layouts import Item
from data_pipelines.libri_plan import HOP_LENGTH, SAMPLE_RATE
from data_pipelines.libri_records import BadItem

SILENCES = frozenset({"", "sil", "sp", "spn", "<eps>"})
MAX_END_MISMATCH_FRAMES = 2  # TextGrid end vs audio length


def textgrid_path(directory: str, item: Item) -> str:
  return os.path.join(directory, item.speaker, item.id.replace("/", "_") + ".TextGrid")


def read_phones(path: str) -> tuple[list[tuple[float, float, str]], float]:
  """``([(start_s, end_s, label), ...], tier end_s)`` of the phone tier (all intervals)."""
  from praatio import textgrid  # pylint: disable=import-outside-toplevel
  tg = textgrid.openTextgrid(path, includeEmptyIntervals=True, reportingMode="silence")
  names = tg.tierNames
  tiers = [n for n in names if tg.getTier(n).tierType == "IntervalTier"]
  if not tiers:
    raise ValueError("no interval tier")
  tier = tg.getTier("phones" if "phones" in tiers else tiers[-1])
  return [(float(e.start), float(e.end), e.label.strip()) for e in tier.entries], float(
      tier.maxTimestamp)


def durations(path: str, symbols: Sequence[str], num_frames: int) -> np.ndarray:
  """int32 [P] frames per symbol from the TextGrid at ``path`` (module docstring).

  Raises:
    BadItem: ``alignment: ...`` for a missing / unreadable file, labels that differ from
      ``symbols``, an end time off the audio length by more than 2 frames, or more tokens
      than frames.
  """
  if not os.path.isfile(path):
    raise BadItem(f"alignment: no TextGrid {path}")
  try:
    phones, end = read_phones(path)
  except Exception as e:  # praatio raises several types on malformed files
    raise BadItem(f"alignment: unreadable TextGrid {path} ({type(e).__name__}: {e})") from e
  labelled = [(a, lab) for a, _, lab in phones if lab not in SILENCES]
  got = [lab for _, lab in labelled]
  if got != list(symbols):
    raise BadItem(f"alignment: {path} phones {' '.join(got)} != {' '.join(symbols)}")
  frame_s = HOP_LENGTH / SAMPLE_RATE
  if abs(end - num_frames * frame_s) > MAX_END_MISMATCH_FRAMES * frame_s:
    raise BadItem(f"alignment: {path} ends at {end:.3f} s, the audio has {num_frames} frames "
                  f"({num_frames * frame_s:.3f} s)")
  if len(got) > num_frames:
    raise BadItem(f"alignment: {len(got)} tokens do not fit in {num_frames} frames")
  b = np.empty(len(got) + 1, np.int64)
  b[:-1] = np.round(np.array([a for a, _ in labelled]) / frame_s)
  b[0], b[-1] = 0, num_frames
  b = np.clip(b, 0, num_frames)
  for i in range(1, len(got)):
    b[i] = max(b[i], b[i - 1] + 1)
  for i in range(len(got) - 1, 0, -1):
    b[i] = min(b[i], b[i + 1] - 1)
  return np.diff(b).astype(np.int32)


def write_textgrid(path: str, intervals: Sequence[tuple[float, float, str]], end_s: float
                   ) -> None:
  """Writes a one-tier (``phones``) TextGrid: the fixtures' stand-in for MFA output."""
  from praatio import textgrid  # pylint: disable=import-outside-toplevel
  from praatio.data_classes.interval_tier import IntervalTier
  tg = textgrid.Textgrid()
  tg.addTier(IntervalTier("phones", [(a, b, lab) for a, b, lab in intervals if lab], 0.0,
                          end_s))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tg.save(path, format="long_textgrid", includeBlankSpaces=True)
