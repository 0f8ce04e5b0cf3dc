"""Scoring of synthesized speech on the zero-shot protocol of the papers (WER, SIM, MOS proxy).

A *row* is one utterance to score::

  {"id": str, "wav": path, "text": str,                  # required
   "prompt_wav": path, "reference_wav": path,            # optional
   "group": str}                                         # optional table label

and gets, from real audio only:

- ``hypothesis``, ``wer``, ``cer``: Whisper's transcript (`jaxtts.eval.asr.WhisperASR`) against
  ``text``, both normalized (`asr.normalize_text`); a group's WER is corpus-level (total
  errors over total reference words, `asr.word_error_rate`), not a mean of row WERs.
- ``sim_prompt``: cosine similarity of speaker embeddings of ``wav`` and ``prompt_wav`` (the
  SIM column of Lin & He 2025, Table 2); ``sim_reference``: the same against
  ``reference_wav`` (the ground-truth recording of the same text).
- ``dnsmos_ovrl`` / ``dnsmos_sig`` / ``dnsmos_bak`` / ``dnsmos_p808``: DNSMOS (`jaxtts.eval.mos`),
  a no-reference MOS *proxy*; the papers' MOS are listening tests.
- ``seconds``.

Rows whose audio is missing or unreadable are recorded in ``failures`` ({"id", "line",
"reason"}) and counted; a backend that cannot score a readable file leaves that figure out and
says why in the row's ``errors`` (counted as ``num_metric_failures``); rows whose text
normalizes to nothing are excluded and counted (``num_empty_text``). Transcripts, embeddings and DNSMOS are cached per
file path, so a ground-truth or prompt file shared by several rows is scored once.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from jaxtts.eval import report as report_lib
from jaxtts.eval.asr import WhisperASR, normalize_text, resolve_whisper_model, word_error_rate
from jaxtts.eval.backends import load_audio
from jaxtts.eval.mos import dnsmos
from jaxtts.eval.speaker import SPEAKER_ENCODERS, cosine_similarity, get_speaker_encoder

log = logging.getLogger("jaxtts.eval")

SCORES = ("wer", "cer", "sim_prompt", "sim_reference", "dnsmos_ovrl", "dnsmos_sig",
          "dnsmos_bak", "dnsmos_p808", "seconds")


class Scorer:
  """The three backends, loaded once (lazily), with per-path caches.

  Args:
    asr_model: ``"base"`` (the bundled Whisper-base) or a local CTranslate2 Whisper folder
      (e.g. large-v3, as the papers use; see `jaxtts.eval.asr.resolve_whisper_model`);
      ``None`` disables WER.
    speaker_backend: ``"ge2e"`` (Resemblyzer) or ``"wavlm"`` (needs ``speaker_model_path``);
      ``None`` disables SIM.
    mos: compute DNSMOS.
    asr_options: extra keyword arguments of `WhisperASR` (``compute_type``, ``beam_size``...).
  """

  def __init__(self, asr_model: Optional[str] = "base", speaker_backend: Optional[str] = "ge2e",
               speaker_model_path: Optional[str] = None, mos: bool = True,
               asr_options: Optional[dict] = None):
    self.asr_model, self.speaker_backend = asr_model, speaker_backend
    self.speaker_model_path, self.mos = speaker_model_path, bool(mos)
    self.asr_options = dict(asr_options or {})
    self._asr = self._speaker = None
    # Fail before any synthesis when a backend cannot be had (BackendUnavailableError).
    if asr_model is not None:
      resolve_whisper_model(asr_model)
    if speaker_backend is not None:
      if speaker_backend not in SPEAKER_ENCODERS:
        raise ValueError(f"speaker backend {speaker_backend!r}: choose from {SPEAKER_ENCODERS}")
      if speaker_backend == "wavlm" and not speaker_model_path:
        raise ValueError("speaker backend 'wavlm' needs a local model folder "
                         "(--speaker-model DIR)")
    self._audio: dict[str, np.ndarray] = {}
    self._transcripts: dict[str, str] = {}
    self._embeddings: dict[str, np.ndarray] = {}
    self._dnsmos: dict[str, dict] = {}

  # ------------------------------------------------------------------ backends
  def describe(self) -> dict[str, Any]:
    """What produced the numbers (goes into reports)."""
    return {"asr": None if self.asr_model is None else
                   {"backend": "faster-whisper", "model": self.asr_model, **self.asr_options},
            "speaker": None if self.speaker_backend is None else
                       {"backend": self.speaker_backend, "path": self.speaker_model_path},
            "mos": "dnsmos (speechmos)" if self.mos else None}

  def asr(self):
    if self._asr is None:
      self._asr = WhisperASR(self.asr_model, **self.asr_options)
    return self._asr

  def speaker(self):
    if self._speaker is None:
      self._speaker = get_speaker_encoder(self.speaker_backend, self.speaker_model_path)
    return self._speaker

  def load(self, path: str) -> np.ndarray:
    """float32 mono [T] at 16 kHz (every backend's rate)."""
    key = os.path.abspath(path)
    if key not in self._audio:
      self._audio[key] = load_audio(key, target_rate=16000)
    return self._audio[key]

  def transcript(self, path: str) -> str:
    key = os.path.abspath(path)
    if key not in self._transcripts:
      self._transcripts[key] = self.asr().transcribe(self.load(key), 16000)
    return self._transcripts[key]

  def embedding(self, path: str) -> np.ndarray:
    key = os.path.abspath(path)
    if key not in self._embeddings:
      self._embeddings[key] = np.asarray(self.speaker().embed(self.load(key), 16000))
    return self._embeddings[key]

  def dnsmos(self, path: str) -> dict:
    key = os.path.abspath(path)
    if key not in self._dnsmos:
      self._dnsmos[key] = dnsmos(self.load(key), 16000)
    return self._dnsmos[key]

  # ------------------------------------------------------------------ rows
  def score_row(self, row: dict[str, Any]) -> dict[str, Any]:
    """Scores one row (see the module docstring). Unreadable audio raises; a backend that
    cannot score this audio (e.g. no speech left for the speaker encoder after its voice
    activity trimming) leaves its fields out and explains why in ``errors`` {field: reason},
    so the row's other figures still count."""
    out = dict(row)
    wav = row["wav"]
    out["seconds"] = len(self.load(wav)) / 16000.0
    for field in ("prompt_wav", "reference_wav"):
      if row.get(field):
        self.load(row[field])
    errors = {}

    def attempt(name, fn):
      try:
        fn()
      except (ValueError, RuntimeError) as e:
        errors[name] = f"{type(e).__name__}: {e}"

    def asr():
      out["hypothesis"] = self.transcript(wav)
      w = word_error_rate([row["text"]], [out["hypothesis"]])
      out["wer"], out["cer"], out["num_words"] = w["wer"], w["cer"], w["num_words"]

    def sim(field, name):
      out[name] = cosine_similarity(self.embedding(wav), self.embedding(row[field]))

    def mos():
      out.update({f"dnsmos_{k.replace('_mos', '')}": float(v)
                  for k, v in self.dnsmos(wav).items()})

    if self.asr_model is not None:
      attempt("wer", asr)
    if self.speaker_backend is not None:
      for field, name in (("prompt_wav", "sim_prompt"), ("reference_wav", "sim_reference")):
        if row.get(field):
          attempt(name, lambda f=field, n=name: sim(f, n))
    if self.mos:
      attempt("dnsmos", mos)
    if errors:
      out["errors"] = errors
    return out

  def score_rows(self, rows: Sequence[dict[str, Any]], progress: bool = True
                 ) -> tuple[list[dict], list[dict], int]:
    """Scores every row; returns (scored rows, failures, number of empty-text rows)."""
    scored, failures, empty = [], [], 0
    for k, row in enumerate(_progress(rows, progress, "scoring")):
      line = row.get("line", k + 1)
      if not normalize_text(str(row.get("text") or "")):
        empty += 1
        continue
      try:
        for field in ("wav", "prompt_wav", "reference_wav"):
          path = row.get(field)
          if field == "wav" or path:
            if not isinstance(path, str) or not os.path.isfile(path):
              raise FileNotFoundError(f"{field}: no such file {path!r}")
        scored.append(self.score_row(row))
      except Exception as e:  # pylint: disable=broad-except  # reported per row, not fatal
        reason = f"{type(e).__name__}: {e}"
        log.warning("row %s (%s): %s", line, row.get("id"), reason)
        failures.append({"id": row.get("id"), "line": line, "reason": reason})
    return scored, failures, empty


def _progress(items: Sequence, enabled: bool, desc: str) -> Iterable:
  if not enabled:
    return items
  return tqdm(items, desc=desc, leave=False)


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Figures of a group: corpus-level WER/CER (percent), means and standard deviations of the
  other scores over the rows that have them, and ``n``."""
  out: dict[str, Any] = {"n": len(rows)}
  with_asr = [r for r in rows if "hypothesis" in r]
  if with_asr:
    w = word_error_rate([r["text"] for r in with_asr], [r["hypothesis"] for r in with_asr])
    out["wer"], out["cer"] = 100.0 * w["wer"], 100.0 * w["cer"]
  for name in SCORES:
    if name in ("wer", "cer"):
      continue
    values = [float(r[name]) for r in rows if r.get(name) is not None]
    if values:
      out[name], out[f"{name}_std"] = float(np.mean(values)), float(np.std(values))
  return out


def read_manifest(path: str) -> tuple[list[dict], list[dict]]:
  """JSONL rows (relative paths are relative to the manifest's folder); bad lines become
  failures ``{"id", "line", "reason"}``."""
  base = os.path.dirname(os.path.abspath(path))
  rows, failures = [], []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        if not isinstance(row, dict) or "wav" not in row or "text" not in row:
          raise ValueError('expected an object with "wav" and "text"')
      except ValueError as e:
        failures.append({"id": None, "line": line_no, "reason": f"{path}:{line_no}: {e}"})
        continue
      row.setdefault("id", f"line{line_no}")
      row["line"] = line_no
      for field in ("wav", "prompt_wav", "reference_wav"):
        if isinstance(row.get(field), str) and not os.path.isabs(row[field]):
          row[field] = os.path.join(base, row[field])
      rows.append(row)
  return rows, failures


def score_manifest(manifest: str, out_dir: Optional[str] = None, *,
                   scorer: Optional[Scorer] = None, progress: bool = True) -> dict[str, Any]:
  """`jaxtts-eval score`: scores a JSONL manifest of outside or inside systems alike.

  Rows may carry ``group`` (e.g. a system name); the table has one line per group plus
  ``all``. Writes ``report.json`` and ``report.md`` into ``out_dir`` (default: beside the
  manifest, ``<manifest>.eval/``) and returns the report.
  """
  scorer = scorer or Scorer()
  rows, failures = read_manifest(manifest)
  scored, row_failures, empty = scorer.score_rows(rows, progress)
  failures += row_failures
  groups: dict[str, list[dict]] = {}
  for r in scored:
    groups.setdefault(str(r.get("group", "all")), []).append(r)
  table = [{"system": g, **summarize(rs)} for g, rs in groups.items()]
  if len(groups) > 1:
    table.append({"system": "all", **summarize(scored)})
  out_dir = out_dir or os.path.splitext(os.path.abspath(manifest))[0] + ".eval"
  result = {"manifest": os.path.abspath(manifest), "backends": scorer.describe(),
            "table": table, "rows": scored, "failures": failures,
            "num_failed": len(failures), "num_empty_text": empty,
            "num_metric_failures": sum(len(r.get("errors", ())) for r in scored)}
  result["out_dir"] = os.path.abspath(out_dir)
  result["markdown"] = report_lib.markdown_report(
      f"Scores of {os.path.basename(manifest)}", result, columns=report_lib.SCORE_COLUMNS)
  report_lib.write_report(out_dir, result)
  return result
