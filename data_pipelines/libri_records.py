"""One planned utterance (`data_pipelines.libri_plan`) -> a record dict (`make_record`).

Records are `jaxtts.data.records` fields at 16 kHz (soxr HQ from LibriTTS' 24 kHz), trimmed
to a multiple of the hop (200). Text corpora (every corpus but LibriLight's VAD pieces)
phonemize with `jaxtts.text.phonemize_clauses` (en-us); LibriSpeech's upper-case transcripts
are stored lower-cased with the first letter capitalized, then normalized (`item_text`).
Durations come only from aligner TextGrids (`data_pipelines.alignments`). An item that gives
no record raises `BadItem` (counted as a bad file) or `FilteredItem` (outside the duration
limits).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import soundfile as sf

from data_pipelines.libri_layouts import Item
from data_pipelines.libri_plan import HOP_LENGTH, SAMPLE_RATE, CorpusPlan, PlannedItem
from jaxtts.audio.io import resample
from jaxtts.text import EmptyTextError, normalize_text, phonemize_clauses
from jaxtts.text.espeak import EspeakError
from jaxtts.text.symbols import PhonemeTable, UnknownPhonemeError

LANGUAGE = "en-us"


class BadItem(ValueError):
  """An item that yields no record: unreadable audio, empty text, a bad alignment, ..."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


class FilteredItem(BadItem):
  """A readable item outside the duration limits (``reason`` is ``too_long`` / ``too_short``)."""


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
