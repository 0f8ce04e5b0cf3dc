"""`jaxtts-eval codec`: the reconstruction table of a trained codec on a corpus split
(Lin & He 2025, Table 3; DAC's metrics): mel distance, multi-resolution STFT distance,
SI-SDR, PESQ-wb, STOI and ViSQOL (`jaxtts.eval.codec_metrics`) of whole utterances encoded and
decoded by the workdir's codec (`jaxtts.codec.registry.load_codec`).

Writes ``OUT/report.json`` (per-utterance figures, failures), ``OUT/report.md`` (mean and
standard deviation per metric) and ``OUT/plots/mel-<id>.png`` (target over reconstruction)
and ``OUT/audio/<id>.{target,recon}.wav`` for the first ``plots`` utterances; ``OUT``
defaults to ``WORKDIR/eval/codec``. A metric that cannot be computed on an utterance (e.g.
ViSQOL on a very short one) is recorded as a failure of that metric, not of the run.

Intelligibility (``asr_model``, default Whisper base through `jaxtts.eval.asr`): the
resynthesis and the ground truth of the same utterances are transcribed by the same
recognizer, and the table gains ``wer`` (of the resynthesis) and ``wer_ground_truth``, both
corpus-level against the corpus texts (the gap between them is what the codec costs).

Codecs with a timbre (FACodec) add two tables (``vc_pairs`` > 0, ``probe_utterances`` > 0):

* ``vc_table``: zero-shot voice conversion between the split's speakers
  (`jaxtts.eval.voice_conversion`: SIM to the prompt and to the source, WER of the converted
  speech beside the sources'); audio in ``OUT/vc/``;
* ``probe_table``: disentanglement probes on frozen codes (`jaxtts.eval.probes`: phone
  accuracy from content vs prosody codes, speaker accuracy from timbre vs content codes, F0
  correlation from prosody vs content codes), fitted on ``train`` and scored on ``valid``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional, Sequence

import numpy as np
from tqdm import tqdm

from jaxtts.audio.io import save_wav
from jaxtts.codec.registry import load_codec
from jaxtts.data.source import CorpusSource
from jaxtts.eval import codec_metrics, report
from jaxtts.eval.asr import WhisperASR, word_error_rate
from jaxtts.plots import save_mels

log = logging.getLogger("jaxtts.eval")

DEFAULT_METRICS = ("mel_distance", "stft_distance", "si_sdr", "pesq_wb", "stoi", "visqol", "mcd")
HIGHER_IS_BETTER = {"mel_distance": False, "stft_distance": False, "si_sdr": True,
                    "pesq_wb": True, "stoi": True, "visqol": True, "mcd": False}
WER_ROWS = {"wer": "transcript_recon", "wer_ground_truth": "transcript_target"}


def evaluate_codec(workdir: str, *, split: str = "test_zero_shot",
                   corpus_dir: Optional[str] = None, limit: Optional[int] = None,
                   out_dir: Optional[str] = None, metrics: Optional[Sequence[str]] = None,
                   step: Optional[int] = None, plots: int = 4, progress: bool = True,
                   asr_model: Optional[str] = "base", vc_pairs: int = 8,
                   probe_utterances: int = 100, speaker_encoder: str = "ge2e"
                   ) -> dict[str, Any]:
  """See the module docstring; returns the report (``table``, ``rows``, ``failures``,
  ``markdown``, ``out_dir``)."""
  metrics = tuple(metrics or DEFAULT_METRICS)
  unknown = sorted(set(metrics) - set(HIGHER_IS_BETTER))
  if unknown:
    raise ValueError(f"--metrics: unknown {unknown}; choose from {sorted(HIGHER_IS_BETTER)}")
  t_start = time.perf_counter()
  codec = load_codec(workdir, step)
  corpus_dir = corpus_dir or codec.corpus_dir
  if not corpus_dir:
    raise ValueError(f"--corpus-dir: the codec {workdir} names no training corpus; pass one")
  source = CorpusSource(corpus_dir, split, sample_rate=codec.sample_rate)
  out_dir = os.path.abspath(out_dir or os.path.join(workdir, "eval", "codec"))
  for sub in ("plots", "audio"):
    os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
  count = min(limit, len(source)) if limit else len(source)
  indices = range(count)
  if progress:
    indices = tqdm(indices, desc="codec eval", leave=False)
  asr = WhisperASR(asr_model) if asr_model else None
  rows, failures, texts = [], [], []
  for i in indices:
    ex = source.example(i)
    audio = ex["audio"].astype(np.float32) / 32768.0
    recon = codec.resynthesize(audio)
    row = {"id": ex["id"], "speaker": ex["speaker"], "seconds": len(audio) / codec.sample_rate}
    for name in metrics:
      try:
        row[name] = float(codec_metrics.compute_all(recon, audio, codec.sample_rate,
                                                    metrics=(name,))[name])
      except ValueError as e:  # e.g. too short for ViSQOL, silent reference for PESQ
        failures.append({"id": ex["id"], "metric": name, "reason": str(e)})
    if asr is not None:
      row["text"] = ex["text"]
      row["transcript_target"] = asr.transcribe(audio, codec.sample_rate)
      row["transcript_recon"] = asr.transcribe(recon, codec.sample_rate)
    rows.append(row)
    if i < plots:
      save_wav(os.path.join(out_dir, "audio", f"{ex['id']}.target.wav"), audio,
               codec.sample_rate)
      save_wav(os.path.join(out_dir, "audio", f"{ex['id']}.recon.wav"), recon,
               codec.sample_rate)
      save_mels(os.path.join(out_dir, "plots", f"mel-{ex['id']}.png"),
                [(f"target {ex['id']}", audio), ("reconstruction", recon)], codec.sample_rate)
  table = []
  for name in metrics:
    values = [r[name] for r in rows if name in r]
    table.append({"metric": name, "n": len(values),
                  "mean": float(np.mean(values)) if values else None,
                  "std": float(np.std(values)) if values else None,
                  "better": "higher" if HIGHER_IS_BETTER[name] else "lower"})
  if asr is not None and rows:
    for name, field in WER_ROWS.items():
      wer = word_error_rate([r["text"] for r in rows], [r[field] for r in rows])
      table.append({"metric": name, "n": len(rows), "mean": wer["wer"], "std": None,
                    "better": "lower"})
  result = {"workdir": os.path.abspath(workdir), "corpus_dir": os.path.abspath(corpus_dir),
            "split": split, "limit": limit, "num_utterances": len(rows),
            "num_metric_failures": len(failures), "table": table, "rows": rows, "failures": failures,
            "out_dir": out_dir, "wall_seconds": time.perf_counter() - t_start}
  notes = []
  if vc_pairs and hasattr(codec, "convert"):
    from jaxtts.eval import voice_conversion  # pylint: disable=import-outside-toplevel
    from jaxtts.eval.speaker import get_speaker_encoder  # pylint: disable=import-outside-toplevel
    vc = voice_conversion.evaluate_conversion(codec, source, vc_pairs, out_dir,
                                              speaker_encoder=get_speaker_encoder(
                                                  speaker_encoder), asr=asr)
    result["vc_table"], result["vc_rows"] = vc["table"], vc["rows"]
    result["vc_failures"] = vc["failures"]
    notes.append("## Voice conversion\n\n" + report.markdown_table(vc["table"],
                                                                      report.CODEC_COLUMNS)
                 + f"\n{len(vc['rows'])} pairs of {split} speakers; SIM: {speaker_encoder} "
                 "cosine; sim_prompt above sim_source means the voice changed.")
  if probe_utterances and hasattr(codec, "branch_features"):
    from jaxtts.eval import probes  # pylint: disable=import-outside-toplevel
    probe = probes.evaluate_probes(codec, corpus_dir, fit_utterances=probe_utterances,
                                   test_utterances=max(1, probe_utterances // 2))
    result["probe_table"] = probe["table"]
    notes.append("## Disentanglement probes (linear, on frozen codes)\n\n"
                 + probes.markdown(probe))
  result["wall_seconds"] = time.perf_counter() - t_start
  result["markdown"] = report.markdown_report(
      f"Codec reconstruction of {os.path.basename(os.path.abspath(workdir))} on {split}",
      result, report.CODEC_COLUMNS,
      [f"{len(rows)} whole utterances, {codec.sample_rate} Hz; failures are per metric."]
      + ([f"wer: corpus WER of the resynthesis, wer_ground_truth: of the recordings, both by "
          f"Whisper {asr_model} against the corpus texts."] if asr is not None else []))
  if notes:
    result["markdown"] += "\n" + "\n\n".join(notes) + "\n"
  report.write_report(out_dir, result)
  return result
