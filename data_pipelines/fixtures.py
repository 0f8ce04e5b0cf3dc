"""Tiny LibriSpeech / LibriTTS(-R) / LibriLight + LibriHeavy trees in the real layouts, spoken
by espeak-ng (seconds to build): what the real-corpus tests and a dry run of the builder read.

    python -m data_pipelines.fixtures OUT_DIR

``OUT_DIR/LibriSpeech/{train-clean-100,test-clean}``: 16 kHz FLAC + upper-case ``.trans.txt``
(+ ``SPEAKERS.TXT``).
``OUT_DIR/LibriTTS{,_R}/{train-clean-100,test-clean}``: 24 kHz WAV + ``.normalized.txt`` /
``.original.txt``. ``OUT_DIR/librilight/{small,medium}``: long 16 kHz FLAC files (utterances
joined by silences) + ``.json`` with ``voice_activity``; ``OUT_DIR/libriheavy/
libriheavy_cuts_{small,test_clean}.jsonl.gz``: MonoCuts pointing into them
(``download/librilight/<subset>/...``). ``OUT_DIR/alignments/LibriSpeech``: TextGrids of the
LibriSpeech utterances from espeak's phoneme events (one with a wrong label).

Train speakers (4) are in ``train-clean-100`` / ``small``, zero-shot ones (2) in ``test-clean``
/ ``medium``; 3 good utterances each. Deliberate bad entries in the first train speaker's
chapter: a corrupt audio file, an empty transcript, an over-long utterance (~9 s, over a
``--max-seconds 6``), and (LibriSpeech, LibriTTS) audio without a transcript.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from typing import Any

import numpy as np
import soundfile as sf

from jaxtts.audio.io import resample
from jaxtts.text import espeak, normalize_text, phonemize_clauses, default_phoneme_table

TRAIN = (("19", "198", "en-us+m1"), ("26", "495", "en-us+f2"), ("103", "1240", "en-us+m3"),
         ("1034", "121", "en-us+f4"))
TEST = (("121", "127", "en-us+m5"), ("237", "134", "en-us+f5"))
SENTENCES = (
    "The cat sat on the warm mat.", "A small boat crossed the quiet lake.",
    "She opened the old wooden door.", "We walked home after the rain.",
    "His garden was full of red roses.", "The train left the station early.",
    "They found a map under the bed.", "My friend plays the violin well.",
    "The dog barked at the moon.", "Fresh bread smells wonderful.",
    "He painted the fence bright blue.", "Birds sang in the tall trees.",
    "The children laughed at the joke.", "A cold wind blew from the north.",
    "Please close the window now.", "The market opens at noon.",
    "Her letter arrived on Monday.", "The river runs through the valley.",
)
LONG = " ".join(SENTENCES[:4])
SILENCE_S = 0.6
LEAD_S = 0.3
LIBRILIGHT_BOOK = "sea_fairies_0812_librivox_64kb_mp3"


def _speak(text: str, voice: str, sr: int) -> tuple[np.ndarray, list[float]]:
  """int16 audio at ``sr`` and the start time (s) of every phoneme token of the text."""
  from data_pipelines.espeak_synth import token_starts  # pylint: disable=import-outside-toplevel
  table = default_phoneme_table()
  norm = normalize_text(text)
  synth = espeak.synthesize(norm, voice=voice, volume=80, seed=0)
  x = resample(synth.audio.astype(np.float32) / 32768.0, synth.sample_rate, sr)
  try:
    clauses = phonemize_clauses(norm, language=voice, table=table, normalize=False)
    starts = [s / synth.sample_rate for s in token_starts(clauses, synth, table, norm)]
  except ValueError:
    starts = []
  return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16), starts


def _sentences(k: int) -> list[str]:
  return [SENTENCES[(3 * k + j) % len(SENTENCES)] for j in range(3)]


def _write_textgrid(path: str, text: str, voice: str, starts: list[float], end_s: float,
                    corrupt: bool = False) -> None:
  from data_pipelines.alignments import write_textgrid  # pylint: disable=import-outside-toplevel
  symbols = [s for c in phonemize_clauses(normalize_text(text), language=voice) for s in c.symbols]
  if len(symbols) != len(starts):
    return
  if corrupt:
    symbols = symbols[::-1]
  bounds = list(starts) + [end_s]
  for i in range(len(bounds) - 2, -1, -1):  # strictly increasing (espeak gives 0-length ends)
    bounds[i] = round(min(bounds[i], bounds[i + 1] - 0.001), 6)
  write_textgrid(path, [(a, b, s) for a, b, s in zip(bounds, bounds[1:], symbols)], end_s)


def librispeech(out: str) -> str:
  root = os.path.join(out, "LibriSpeech")
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "SPEAKERS.TXT"), "w", encoding="utf-8") as f:
    f.write("; ID  |SEX| SUBSET           |MINUTES| NAME\n")
    for (spk, _, voice), subset in zip(TRAIN + TEST, ["train-clean-100"] * 4 + ["test-clean"] * 2):
      f.write(f"{spk:<5}| {'F' if '+f' in voice else 'M'} | {subset:<17}| 0.10 | Reader {spk}\n")
  for subset, speakers, offset in (("train-clean-100", TRAIN, 0), ("test-clean", TEST, 4)):
    for k, (spk, chapter, voice) in enumerate(speakers):
      d = os.path.join(root, subset, spk, chapter)
      os.makedirs(d, exist_ok=True)
      lines = []
      for u, text in enumerate(_sentences(offset + k)):
        uid = f"{spk}-{chapter}-{u:04d}"
        audio, starts = _speak(text, voice, 16000)
        sf.write(os.path.join(d, uid + ".flac"), audio, 16000, subtype="PCM_16")
        lines.append(f"{uid} {text.upper().rstrip('.')}")
        _write_textgrid(os.path.join(out, "alignments", "LibriSpeech", spk, uid + ".TextGrid"),
                        text, voice, starts, len(audio) // 200 * 200 / 16000,
                        corrupt=(subset == "test-clean" and k == 1 and u == 2))
      if subset == "train-clean-100" and k == 0:
        with open(os.path.join(d, f"{spk}-{chapter}-0003.flac"), "wb") as f:
          f.write(b"fLaC" + bytes(range(256)) * 8)             # corrupt FLAC
        lines.append(f"{spk}-{chapter}-0003 THE CORRUPT ONE")
        audio, _ = _speak(SENTENCES[9], voice, 16000)
        sf.write(os.path.join(d, f"{spk}-{chapter}-0004.flac"), audio, 16000)
        lines.append(f"{spk}-{chapter}-0004")                 # empty transcript
        audio, _ = _speak(LONG, voice, 16000)
        sf.write(os.path.join(d, f"{spk}-{chapter}-0005.flac"), audio, 16000)
        lines.append(f"{spk}-{chapter}-0005 {LONG.upper().replace('.', '')}")  # over-long
        sf.write(os.path.join(d, f"{spk}-{chapter}-0006.flac"), audio[:16000], 16000)
      with open(os.path.join(d, f"{spk}-{chapter}.trans.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
  return root


def libritts(out: str, name: str = "LibriTTS") -> str:
  root = os.path.join(out, name)
  for subset, speakers, offset in (("train-clean-100", TRAIN, 0), ("test-clean", TEST, 4)):
    for k, (spk, chapter, voice) in enumerate(speakers):
      d = os.path.join(root, subset, spk, chapter)
      os.makedirs(d, exist_ok=True)
      texts = {f"{spk}_{chapter}_000001_{u:06d}": t for u, t in enumerate(_sentences(offset + k))}
      if subset == "train-clean-100" and k == 0:
        texts.update({f"{spk}_{chapter}_000002_000000": SENTENCES[9],
                      f"{spk}_{chapter}_000002_000001": "", f"{spk}_{chapter}_000002_000002": LONG})
      for uid, text in texts.items():
        audio, _ = _speak(text or SENTENCES[10], voice, 24000)
        sf.write(os.path.join(d, uid + ".wav"), audio, 24000, subtype="PCM_16")
        for ext, t in ((".normalized.txt", normalize_text(text) if text else ""),
                       (".original.txt", text)):
          with open(os.path.join(d, uid + ext), "w", encoding="utf-8") as f:
            f.write(t)
      if subset == "train-clean-100" and k == 0:
        bad = f"{spk}_{chapter}_000002_000000"
        with open(os.path.join(d, bad + ".wav"), "wb") as f:
          f.write(b"RIFF" + bytes(range(200)))                   # corrupt WAV
        audio, _ = _speak(SENTENCES[11], voice, 24000)          # no .normalized.txt
        sf.write(os.path.join(d, f"{spk}_{chapter}_000003_000000.wav"), audio, 24000)
  return root


def librilight(out: str) -> tuple[str, dict[str, str]]:
  """The LibriLight tree and ``{"small": cuts file, "test_clean": cuts file}``."""
  root = os.path.join(out, "librilight")
  cuts: dict[str, list[dict[str, Any]]] = {"small": [], "test_clean": []}
  for subset, speakers, offset, key in (("small", TRAIN, 0, "small"),
                                        ("medium", TEST, 4, "test_clean")):
    for k, (spk, _, voice) in enumerate(speakers):
      d = os.path.join(root, subset, spk, LIBRILIGHT_BOOK)
      os.makedirs(d, exist_ok=True)
      texts = _sentences(offset + k)
      if subset == "small" and k == 0:
        texts = texts + [LONG, "..."]                           # over-long; empty text cut
      stem = f"{k + 1:02d}_baum_sea_fairies_64kb"
      pieces, vad, spans = [np.zeros(int(LEAD_S * 16000), np.int16)], [], []
      pos = len(pieces[0])
      for text in texts:
        audio, _ = _speak(text if text != "..." else SENTENCES[12], voice, 16000)
        spans.append((pos, len(audio)))
        vad.append([round(pos / 16000, 6), round((pos + len(audio)) / 16000, 6)])
        pieces += [audio, np.zeros(int(SILENCE_S * 16000), np.int16)]
        pos += len(audio) + int(SILENCE_S * 16000)
      wav = np.concatenate(pieces)
      sf.write(os.path.join(d, stem + ".flac"), wav, 16000, subtype="PCM_16")
      with open(os.path.join(d, stem + ".json"), "w", encoding="utf-8") as f:
        json.dump({"speaker": spk, "book_meta": {"id": "812", "title": "The Sea Fairies"},
                   "snr": 20.0, "voice_activity": vad}, f)
      rec = f"{subset}/{spk}/{LIBRILIGHT_BOOK}/{stem}"
      for u, (text, (start, n)) in enumerate(zip(texts, spans)):
        cased = "" if text == "..." else text
        cuts[key].append({
            "id": f"{rec}_{u}", "start": start / 16000, "duration": n / 16000, "channel": 0,
            "supervisions": [{"id": f"{rec}_{u}", "recording_id": rec, "start": 0.0,
                              "duration": n / 16000, "channel": 0, "speaker": spk,
                              "language": "English"}],
            "recording": {"id": rec, "sources": [{"type": "file", "channels": [0],
                                                  "source": f"download/librilight/{rec}.flac"}],
                          "sampling_rate": 16000, "num_samples": len(wav),
                          "duration": len(wav) / 16000, "channel_ids": [0]},
            "custom": {"texts": [cased, cased.upper()], "pre_texts": ["", ""]},
            "type": "MonoCut"})
      if subset == "small" and k == 1:                          # corrupt FLAC + its json/cut
        with open(os.path.join(d, "99_corrupt.flac"), "wb") as f:
          f.write(b"fLaC" + bytes(range(256)) * 8)
        with open(os.path.join(d, "99_corrupt.json"), "w", encoding="utf-8") as f:
          json.dump({"speaker": spk, "voice_activity": [[0.1, 1.5]]}, f)
        bad = dict(cuts[key][-1], id=f"{subset}/{spk}/{LIBRILIGHT_BOOK}/99_corrupt_0",
                   start=0.1, duration=1.4)
        bad["recording"] = dict(bad["recording"], sources=[{
            "type": "file", "channels": [0],
            "source": f"download/librilight/{subset}/{spk}/{LIBRILIGHT_BOOK}/99_corrupt.flac"}])
        cuts[key].append(bad)
  files = {}
  os.makedirs(os.path.join(out, "libriheavy"), exist_ok=True)
  for key, rows in cuts.items():
    files[key] = os.path.join(out, "libriheavy", f"libriheavy_cuts_{key}.jsonl.gz")
    with gzip.GzipFile(files[key], "wb", mtime=0) as f:
      f.write("".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))
  return root, files


def build_all(out: str) -> dict[str, Any]:
  """Every fixture tree under ``out``; returns their paths."""
  ll_root, ll_cuts = librilight(out)
  return {"librispeech": librispeech(out), "libritts": libritts(out),
          "libritts_r": libritts(out, "LibriTTS_R"), "librilight": ll_root, "cuts": ll_cuts,
          "alignments": os.path.join(out, "alignments", "LibriSpeech")}


if __name__ == "__main__":
  print(json.dumps(build_all(sys.argv[1]), indent=1))
