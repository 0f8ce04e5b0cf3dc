"""Zero-shot voice conversion of a codec with a timbre (FACodec, NaturalSpeech 3 §3.2 and
Table 5's VC setting): each source utterance of a split is converted to the voice of another
speaker of the same split, given one of that speaker's utterances as the prompt.

Pairs (deterministic): speakers sorted by id; the source utterance ``i`` of speaker ``s_k`` is
converted with the ``i``-th utterance of speaker ``s_{k+1}`` (cyclically) as the prompt.

Per pair: ``sim_prompt`` = SIM(converted, prompt) (the target voice), ``sim_source`` =
SIM(converted, source) (the voice it should have left), ``sim_source_prompt`` = SIM(source,
prompt) (how alike the two speakers are to begin with); SIM is the cosine of speaker
embeddings (`jaxtts.eval.speaker`, GE2E by default). With a recognizer, the converted speech
and the source recordings are transcribed by the same Whisper (`jaxtts.eval.asr`) and scored
against the corpus texts: ``wer`` and ``wer_source``. Conversion keeps the content when ``wer``
is close to ``wer_source``, and changes the voice when ``sim_prompt`` > ``sim_source``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Optional

import numpy as np

from jaxtts.audio.io import save_wav
from jaxtts.data.source import CorpusSource
from jaxtts.eval.asr import word_error_rate
from jaxtts.eval.speaker import speaker_similarity


def conversion_pairs(source: CorpusSource, count: int) -> list[tuple[int, int]]:
  """``count`` (source index, prompt index) pairs across speakers (module docstring)."""
  by_speaker: dict[int, list[int]] = defaultdict(list)
  for i in range(len(source)):
    by_speaker[int(source.example(i)["speaker_id"])].append(i)
  speakers = sorted(by_speaker)
  if len(speakers) < 2:
    raise ValueError(f"voice conversion needs two speakers in the split; it has "
                     f"{len(speakers)}")
  pairs, i = [], 0
  while len(pairs) < count:
    added = False
    for k, spk in enumerate(speakers):
      other = by_speaker[speakers[(k + 1) % len(speakers)]]
      if i < len(by_speaker[spk]) and len(pairs) < count:
        pairs.append((by_speaker[spk][i], other[i % len(other)]))
        added = True
    if not added:
      break
    i += 1
  return pairs


def evaluate_conversion(codec: Any, source: CorpusSource, count: int, out_dir: str, *,
                        speaker_encoder: Any, asr: Optional[Any] = None,
                        audio_files: int = 4) -> dict[str, Any]:
  """Converts ``count`` pairs (module docstring); writes the first ``audio_files`` as
  ``OUT/vc/<source>-to-<prompt speaker>.{source,prompt,converted}.wav``; returns ``rows``,
  ``table`` (mean of each figure over the pairs that have it) and ``failures`` (a SIM that
  cannot be computed, e.g. too little speech in the conversion, is a failure of that pair)."""
  sr = codec.sample_rate
  os.makedirs(os.path.join(out_dir, "vc"), exist_ok=True)
  rows, failures = [], []
  for n, (si, pi) in enumerate(conversion_pairs(source, count)):
    src, prm = source.example(si), source.example(pi)
    a = src["audio"].astype(np.float32) / 32768.0
    p = prm["audio"].astype(np.float32) / 32768.0
    converted = codec.convert(a, p, prompt_name=f"prompt {prm['id']}")
    row = {"source": src["id"], "prompt": prm["id"], "source_speaker": src["speaker"],
           "prompt_speaker": prm["speaker"]}
    try:
      row.update(sim_prompt=speaker_similarity(speaker_encoder, converted, p, sr),
                 sim_source=speaker_similarity(speaker_encoder, converted, a, sr),
                 sim_source_prompt=speaker_similarity(speaker_encoder, a, p, sr))
    except ValueError as e:  # e.g. too little speech in the conversion for an embedding
      failures.append({"source": src["id"], "prompt": prm["id"], "metric": "sim",
                       "reason": str(e)})
    if asr is not None:
      row.update(text=src["text"], transcript_converted=asr.transcribe(converted, sr),
                 transcript_source=asr.transcribe(a, sr))
    rows.append(row)
    if n < audio_files:
      stem = os.path.join(out_dir, "vc", f"{src['id']}-to-{prm['speaker']}")
      for kind, wav in (("source", a), ("prompt", p), ("converted", converted)):
        save_wav(f"{stem}.{kind}.wav", wav, sr)
  table = []
  for k, better in (("sim_prompt", "higher"), ("sim_source", "lower"),
                    ("sim_source_prompt", "-")):
    values = [r[k] for r in rows if k in r]
    table.append({"metric": k, "n": len(values), "better": better,
                  "mean": float(np.mean(values)) if values else None,
                  "std": float(np.std(values)) if values else None})
  if asr is not None and rows:
    for name, field in (("wer", "transcript_converted"), ("wer_source", "transcript_source")):
      table.append({"metric": name, "n": len(rows), "std": None, "better": "lower",
                    "mean": word_error_rate([r["text"] for r in rows],
                                            [r[field] for r in rows])["wer"]})
  return {"rows": rows, "table": table, "failures": failures}
