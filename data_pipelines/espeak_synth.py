"""Synthesis and labels of the embedded espeak corpus: one planned utterance -> one record.

Labels. Each utterance is phonemized with `jaxtts.text.phonemize_clauses` (the inference
frontend) and synthesized with the phoneme events of espeak; the events (pauses dropped) must
equal the G2P phonemes, else `AlignmentError` (the build skips the utterance and counts it:
``num_skipped`` per split in the manifest, and a log line). A phoneme lasts from its event to
the next phoneme's; the pause after a clause belongs to its punctuation token; pauses inside a
clause and leading silence go to the phoneme before / the first phoneme (`token_starts`).
Audio is resampled 22050 -> 16000 Hz with soxr, loudness-normalized, zero-padded to a multiple
of ``hop_length`` = 200; event times are mapped to frame boundaries (rounded, then nudged so
every token has at least one frame: `frame_boundaries`), so that
``durations.sum() == len(audio) // 200``.

F0. With ``with_f0`` (the builder's ``--f0``) a record also stores ``f0`` (float32 Hz, 0 when
unvoiced) and ``voiced`` (bool) per 200-sample frame, from WORLD DIO + StoneMask
(`jaxtts.audio.f0`), and the manifest lists them in its ``features``. It is off by default: DIO
costs ~7 ms per second of audio, about four times the synthesis itself, so it would make the
build several times slower. The same fields can be added to any existing corpus later with
``jaxtts-corpus derive f0`` (same values).

`jaxtts.text.espeak.synthesize` is a pure function of its arguments (a fresh library instance
per call), so `synthesize_utterance` is too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from data_pipelines.espeak_plan import Utterance
from jaxtts.audio import f0 as f0_lib
from jaxtts.data import records
from jaxtts.text import espeak, normalize_text, phonemize_clauses
from jaxtts.text.symbols import PhonemeTable

SAMPLE_RATE = 16000
HOP_LENGTH = 200
SYNTH_VOLUME = 60       # espeak amplitude (0-200); leaves headroom, loudness is set afterwards
TARGET_RMS_DBFS = -23.0
PEAK_LIMIT = 0.89       # max |sample| after normalization, as a fraction of full scale


class AlignmentError(ValueError):
  """espeak's phoneme events do not match the G2P phonemes of the text."""


def frame_boundaries(starts: Sequence[int], num_samples_in: int, num_frames: int,
                     sr_in: int, sr_out: int = SAMPLE_RATE, hop: int = HOP_LENGTH
                     ) -> np.ndarray:
  """Token start samples (at ``sr_in``) -> frame boundaries [P+1] at ``sr_out`` / ``hop``.

  Boundaries are rounded to the nearest frame, the first is 0 and the last ``num_frames``;
  then a forward and a backward pass make them strictly increasing (every token >= 1 frame).
  """
  p = len(starts)
  if num_frames < p:
    raise AlignmentError(f"{p} tokens do not fit in {num_frames} frames")
  s = np.asarray(starts, np.int64)
  b = np.empty(p + 1, np.int64)
  b[:p] = (s * sr_out * 2 + sr_in * hop) // (2 * sr_in * hop)  # round(s * sr_out/sr_in / hop)
  b[0], b[p] = 0, num_frames
  b = np.clip(b, 0, num_frames)
  for i in range(1, p + 1):
    b[i] = max(b[i], b[i - 1] + 1) if i < p else b[i]
  for i in range(p - 1, 0, -1):
    b[i] = min(b[i], b[i + 1] - 1)
  assert np.all(np.diff(b) >= 1), b
  return b


def token_starts(clauses, synth: espeak.Synthesis, table: PhonemeTable, text: str) -> list[int]:
  """Start sample of every token of ``clauses`` (phonemes and punctuation tokens).

  Event symbols are mapped with the same `PhonemeTable.canonical` as the G2P; the sequence of
  non-pause events must equal the G2P phonemes.
  """
  events = []  # (canonical symbol or None for a pause, sample)
  for ev in synth.events:
    events.append((table.canonical(ev.symbol, text=text), ev.sample))
  phones = [(k, e) for k, e in enumerate(events) if e[0] is not None]
  g2p = [p for c in clauses for p in c.phonemes]
  got = [e[0] for _, e in phones]
  if got != g2p:
    raise AlignmentError(f"events {' '.join(got)} != G2P {' '.join(g2p)}")
  starts = []
  j = 0  # index into phones
  for c in clauses:
    for _ in c.phonemes:
      starts.append(phones[j][1][1])
      j += 1
    last_event = phones[j - 1][0]
    # The punctuation token starts at the first pause event after the clause's last phoneme.
    nxt = last_event + 1
    if nxt < len(events) and events[nxt][0] is None:
      starts.append(events[nxt][1])
    else:  # no pause: zero length here, frame_boundaries gives it one frame
      starts.append(phones[j][1][1] if j < len(phones) else len(synth.audio))
  starts[0] = 0  # leading silence goes to the first token
  if any(b < a for a, b in zip(starts, starts[1:])):
    raise AlignmentError("event times are not monotonic")
  return starts


def _resample(audio: np.ndarray, sr_in: int) -> np.ndarray:
  import soxr
  x = audio.astype(np.float32) / 32768.0
  if sr_in != SAMPLE_RATE:
    x = soxr.resample(x, sr_in, SAMPLE_RATE, quality="HQ")
  rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
  peak = float(np.max(np.abs(x))) if len(x) else 0.0
  if rms > 0:
    gain = min(10 ** (TARGET_RMS_DBFS / 20) / rms, PEAK_LIMIT / peak)
    x = x * np.float32(gain)
  pad = (-len(x)) % HOP_LENGTH
  x = np.pad(x, (0, pad))
  return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def synthesize_utterance(utt: Utterance, table: PhonemeTable, with_f0: bool = False) -> dict:
  """One record dict (the `jaxtts.data.records` fields, plus ``f0``/``voiced`` if
  ``with_f0``). Raises AlignmentError on mismatch."""
  spk = utt.speaker
  text = normalize_text(utt.raw_text)
  clauses = phonemize_clauses(text, language=spk.language, table=table, normalize=False)
  synth = espeak.synthesize(text, voice=spk.voice, pitch=spk.pitch, pitch_range=spk.pitch_range,
                            rate=spk.rate, volume=SYNTH_VOLUME, seed=0)
  starts = token_starts(clauses, synth, table, text)
  audio = _resample(synth.audio, synth.sample_rate)
  frames = len(audio) // HOP_LENGTH
  bounds = frame_boundaries(starts, len(synth.audio), frames, synth.sample_rate)
  symbols = [s for c in clauses for s in c.symbols]
  example = {
      "id": utt.id,
      "text": text,
      "phonemes": table.encode(symbols, text=text),
      "durations": np.diff(bounds).astype(np.int32),
      "audio": audio,
      "sample_rate": SAMPLE_RATE,
      "speaker_id": spk.id,
      "speaker": spk.name,
  }
  if with_f0:
    example["f0"], example["voiced"] = f0_lib.compute_f0(audio, SAMPLE_RATE, HOP_LENGTH)
  return example


def synthesize_task(task: tuple[int, list[Utterance], dict, bool]) -> tuple[int, list[tuple]]:
  """Worker of `data_pipelines.espeak_corpus.build`: a block of utterances -> (task index,
  results in order), each ``("ok", split, shard, record bytes, num samples)`` or ``("skip",
  split, shard, utterance id, reason)``."""
  index, utts, table_json, with_f0 = task
  table = PhonemeTable.from_json(table_json)
  out = []
  for utt in utts:
    try:
      ex = synthesize_utterance(utt, table, with_f0)
    except AlignmentError as e:
      out.append(("skip", utt.split, utt.shard, utt.id, f"{e} (text {utt.raw_text!r})"))
      continue
    out.append(("ok", utt.split, utt.shard, records.encode_example(ex), len(ex["audio"])))
  return index, out

