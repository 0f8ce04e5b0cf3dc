"""`jaxtts-eval zero-shot`: the zero-shot protocol of Lin & He (ICLR 2025) §5.1 / Table 2.

For every utterance of a held-out split (its speakers unseen in training) and every prompt
length ``s`` (3, 8, 15 s), a prompt is cut from the *other* utterances of the same speaker
(`jaxtts.infer.prompts.build_prompts`: truncate, or concatenate until ``s``); the trained
generator synthesizes the utterance's text from it ``K`` times (``--samples-per-text``, seeds
``seed + k``). Every file is written under ``OUT/audio/`` and scored by `jaxtts.eval.score`:

- ``generated``: the model's speech; WER against the text, SIM against the prompt (Table 2's
  SIM) and against the ground-truth recording of the same text, DNSMOS.
- ``ground_truth``: the recording itself (the WER floor of the ASR model on this corpus; its
  SIM against the same prompts is the ceiling a perfect clone would reach).
- ``codec_resynthesis``: the recording encoded and decoded by the generator's codec (the
  ceiling the codec allows).
- with ``K >= 2``, diversity proxies across the K samples (`jaxtts.eval.diversity`):
  spread of mean F0 and of per-phoneme durations (Table 5 asks humans for "diversity").

Writes ``OUT/report.json`` (configuration, backends, table, every row, failures, synthesis
statistics), ``OUT/report.md`` (the table) and ``OUT/plots/`` (metric bars, mel spectrograms
generated vs ground truth, alignments); ``OUT`` defaults to ``WORKDIR/eval``. Results are
deterministic for a fixed seed. Requests the generator refuses (e.g. a 15 s prompt over its
``max_total_seconds``) and rows that fail to score are reported and counted, not fatal.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time
from typing import Any, Optional, Sequence

import numpy as np
from tqdm import tqdm

from jaxtts.audio.io import save_wav
from jaxtts.data.source import CorpusSource
from jaxtts.eval import report as report_lib
from jaxtts.eval.asr import normalize_text
from jaxtts.eval.backends import load_audio
from jaxtts.eval.diversity import sample_diversity
from jaxtts.eval.score import Scorer, summarize
from jaxtts.infer import prompts as prompts_lib
from jaxtts.infer.base import SynthesisInputError, save_alignment_image
from jaxtts.infer.registry import load_generator
from jaxtts.plots import save_mels

log = logging.getLogger("jaxtts.eval")

SYSTEMS = ("ground_truth", "codec_resynthesis", "generated")
PROTOCOLS = ("lin_he", "librispeech")


def _prompt_seconds(item: dict) -> float:
  """The row's prompt length: the requested one (Lin & He), else the prompt's actual one."""
  requested = item.get("requested_seconds")
  return float(requested if requested is not None else item["prompt_seconds"])
BAR_METRICS = (("wer", "WER (%)"), ("sim_prompt", "SIM vs prompt"),
               ("dnsmos_ovrl", "DNSMOS OVRL"))


def _select(items: list[dict], limit: Optional[int]) -> tuple[list[dict], int]:
  """Keeps the prompts of the first ``limit`` targets with pronounceable text; returns them
  and the number of targets excluded for empty text."""
  targets, empty = [], set()
  for it in items:
    if not normalize_text(it["text"]) or not len(it["phonemes"]):
      empty.add(it["target_id"])
    elif it["target_id"] not in targets:
      targets.append(it["target_id"])
  keep = set(targets[:limit] if limit else targets)
  return [it for it in items if it["target_id"] in keep], len(empty)


def _synthesize(synth, items: list[dict], k: int, seed: int, batch_size: int,
                max_seconds: Optional[float], progress: bool) -> tuple[dict, list[dict]]:
  """Sample ``k`` of every item: {item id: result}, failures. The prompt's phonemes and the
  target's ids go to generators that take them (`Generator.request_fields`)."""
  requests, failures = [], []
  fields = set(synth.request_fields)
  for it in items:
    request = {"text": it["text"], "prompt_audio": it["prompt_audio"].astype(np.float32)
               / 32768.0, "prompt_phonemes": it["prompt_phonemes"],
               "target_phonemes": it["phonemes"], "max_seconds": max_seconds,
               "prompt_durations": it.get("prompt_durations")}
    request = {k: v for k, v in request.items() if k in fields and v is not None}
    try:
      requests.append((it["id"], synth.prepare(request)))
    except SynthesisInputError as e:
      failures.append({"id": f"{it['id']}-s{k}", "line": None, "reason": f"synthesis: {e}"})
  results = {}
  batches = [requests[i:i + batch_size] for i in range(0, len(requests), batch_size)]
  if progress:
    batches = tqdm(batches, desc=f"synthesizing (sample {k})", leave=False)
  for b, batch in enumerate(batches):
    options = {"max_seconds": max_seconds} if max_seconds is not None else {}
    outs = synth.synthesize_batch([r for _, r in batch], seed=seed + 7919 * k + b, **options)
    results.update({name: out for (name, _), out in zip(batch, outs)})
  return results, failures


def _diversity(rows: list[dict], durations: dict[str, np.ndarray]) -> dict[str, float]:
  """Mean over items of `sample_diversity` across their K generated samples."""
  by_item = collections.defaultdict(list)
  for r in rows:
    by_item[r["item_id"]].append(r)
  figures = collections.defaultdict(list)
  for group in by_item.values():
    if len(group) < 2:
      continue
    wavs = [load_audio(r["wav"], target_rate=16000) for r in group]
    durs = [durations.get(r["id"]) for r in group]
    durs = None if any(d is None for d in durs) else durs
    for key, value in sample_diversity(wavs, 16000, durs).items():
      if value is not None and np.isfinite(value):
        figures[key].append(float(value))
  return {k: float(np.mean(v)) for k, v in figures.items()}


def evaluate_zero_shot(workdir: str, *, split: str = "test_zero_shot",
                       corpus_dir: Optional[str] = None, prompt_seconds: Sequence[float] = (3,),
                       samples_per_text: int = 1, limit: Optional[int] = None,
                       out_dir: Optional[str] = None, seed: int = 0,
                       asr_model: Optional[str] = "base",
                       speaker_backend: Optional[str] = "ge2e",
                       speaker_model_path: Optional[str] = None, mos: bool = True,
                       max_seconds: Optional[float] = None, batch_size: int = 8,
                       codec_workdir: Optional[str] = None, step: Optional[int] = None,
                       components: Optional[dict[str, str]] = None,
                       plots: int = 4, progress: bool = True, scorer=None,
                       protocol: str = "lin_he", target_seconds: Sequence[float] = (4.0, 10.0),
                       targets_per_speaker: Optional[int] = 1) -> dict[str, Any]:
  """Runs the protocol of the module docstring; returns the report (also written to disk)
  with ``table`` (rows: ``prompt``, ``system``, ``n``, ``wer``, ``cer``, ``sim_prompt``,
  ``sim_reference``, ``dnsmos_*``...), ``rows``, ``failures``, ``markdown``, ``out_dir``.

  ``protocol``: ``"lin_he"`` (prompts of ``prompt_seconds``, `prompts.build_prompts`) or
  ``"librispeech"``, the LibriSpeech test-clean protocol (targets of ``target_seconds`` =
  (min, max), ``targets_per_speaker`` each, prompted by a whole other utterance of the speaker:
  `prompts.build_cross_sentence_prompts`; ``prompt_seconds`` is then unused)."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}")
  if samples_per_text < 1:
    raise ValueError(f"--samples-per-text must be >= 1, got {samples_per_text}")
  if not prompt_seconds or min(prompt_seconds) <= 0:
    raise ValueError(f"--prompt-seconds must be positive, got {list(prompt_seconds)}")
  t_start = time.perf_counter()
  components = dict(components or {})
  if codec_workdir:
    components["codec"] = codec_workdir
  synth = load_generator(workdir, step, components=components)
  corpus_dir = corpus_dir or synth.corpus_dir
  if not corpus_dir or not os.path.isfile(os.path.join(corpus_dir, "manifest.json")):
    raise FileNotFoundError(f"--corpus-dir: {corpus_dir!r} has no manifest.json (default: the "
                            f"corpus the generator trained on); pass the corpus or its "
                            f"stage-2 shards")
  out_dir = os.path.abspath(out_dir or os.path.join(workdir, "eval"))
  audio_dirs = {n: os.path.join(out_dir, "audio", n)
                for n in ("generated", "prompts", "ground_truth", "codec_resynthesis")}
  for d in (*audio_dirs.values(), os.path.join(out_dir, "plots")):
    os.makedirs(d, exist_ok=True)
  if protocol == "librispeech":
    lo, hi = (float(x) for x in target_seconds)
    planned = prompts_lib.build_cross_sentence_prompts(
        corpus_dir, split, min_seconds=lo, max_seconds=hi,
        targets_per_speaker=targets_per_speaker, seed=seed)
  else:
    planned = prompts_lib.build_prompts(corpus_dir, split, prompt_seconds, seed)
  items, num_empty = _select(planned, limit)
  groups = list(dict.fromkeys(it["prompt_group"] for it in items))
  if not items:
    raise ValueError(f"split {split!r} of {corpus_dir} has no utterance to evaluate (targets "
                     f"need another utterance of their speaker for the prompt)")
  source = CorpusSource(corpus_dir, split)
  index = {source.example(i)["id"]: i for i in range(len(source))}
  rate = synth.sample_rate

  # Ground truth and codec resynthesis of every target, prompts of every item.
  rows, failures = [], []
  targets = {}
  for it in items:
    tid = it["target_id"]
    if tid not in targets:
      audio = source.example(index[tid])["audio"].astype(np.float32) / 32768.0
      gt = os.path.join(audio_dirs["ground_truth"], f"{tid}.wav")
      save_wav(gt, audio, rate)
      targets[tid] = {"ground_truth": gt, "audio": audio}
      resynthesis = synth.resynthesize(audio)
      if resynthesis is not None:  # end-to-end generators have no codec of their own
        codec = os.path.join(audio_dirs["codec_resynthesis"], f"{tid}.wav")
        save_wav(codec, resynthesis, rate)
        targets[tid]["codec_resynthesis"] = codec
    prompt = os.path.join(audio_dirs["prompts"], f"{it['id']}.wav")
    save_wav(prompt, it["prompt_audio"], rate)
    it["prompt_wav"] = prompt
    for system in ("ground_truth", "codec_resynthesis"):
      if system not in targets[tid]:
        continue
      rows.append({"id": f"{it['id']}-{system}", "wav": targets[tid][system], "text": it["text"],
                   "prompt_wav": prompt, "reference_wav": targets[tid]["ground_truth"],
                   "system": system, "prompt_seconds": _prompt_seconds(it),
                   "prompt_group": it["prompt_group"], "item_id": it["id"]})

  # Generation.
  durations, synthesis = {}, []
  t0 = time.perf_counter()
  for k in range(samples_per_text):
    results, synth_failures = _synthesize(synth, items, k, seed + k, batch_size, max_seconds,
                                          progress)
    failures += synth_failures
    for n, it in enumerate(items):
      if it["id"] not in results:
        continue
      out, name = results[it["id"]], f"{it['id']}-s{k}"
      wav = os.path.join(audio_dirs["generated"], f"{name}.wav")
      save_wav(wav, out["wav"], rate)
      if out.get("durations") is not None:
        durations[name] = np.asarray(out["durations"])
      synthesis.append({"id": name, "seconds": len(out["wav"]) / rate,
                        "stopped_by": out.get("stopped_by"), "frames": out.get("frames"),
                        "phonemes": len(out.get("phonemes", ())), "rtf": out["timings"]["rtf"]})
      rows.append({"id": name, "wav": wav, "text": it["text"], "prompt_wav": it["prompt_wav"],
                   "reference_wav": targets[it["target_id"]]["ground_truth"],
                   "system": "generated", "prompt_seconds": _prompt_seconds(it),
                   "prompt_group": it["prompt_group"], "item_id": it["id"],
                   "stopped_by": out.get("stopped_by")})
      if k == 0 and n < plots:
        save_alignment_image(os.path.join(out_dir, "plots", f"alignment-{name}.png"), out,
                             title=f"{name}: alignment (prompt at 0.5)")
        save_mels(os.path.join(out_dir, "plots", f"mel-{name}.png"),
                  [(f"generated {name}", out["wav"]),
                   (f"ground truth {it['target_id']}", targets[it["target_id"]]["audio"])], rate)
  generate_seconds = time.perf_counter() - t0

  # Scoring and the table.
  scorer = scorer or Scorer(asr_model, speaker_backend, speaker_model_path, mos)
  scored, score_failures, empty_rows = scorer.score_rows(rows, progress)
  failures += score_failures
  table = []
  for label in groups:
    for system in SYSTEMS:
      if system == "codec_resynthesis" and not any(r["system"] == system for r in rows):
        continue
      group = [r for r in scored if r["system"] == system and r["prompt_group"] == label]
      line = {"prompt": label, "system": system, **summarize(group)}
      if system == "generated" and samples_per_text > 1:
        line.update(_diversity(group, durations))
      table.append(line)
  for r in scored:
    r.pop("line", None)
  stops = collections.Counter(x["stopped_by"] for x in synthesis)
  result = {
      "workdir": os.path.abspath(workdir), "generator": synth.describe(),
      "corpus_dir": os.path.abspath(corpus_dir),
      "split": split, "protocol": protocol,
      "prompt_seconds": [float(s) for s in prompt_seconds] if protocol == "lin_he" else None,
      "target_seconds": [float(s) for s in target_seconds] if protocol != "lin_he" else None,
      "targets_per_speaker": targets_per_speaker if protocol != "lin_he" else None,
      "samples_per_text": samples_per_text, "seed": seed, "limit": limit,
      "num_targets": len(targets), "num_items": len(items),
      "num_failed": len(failures), "num_empty_text": num_empty + empty_rows,
      "num_metric_failures": sum(len(r.get("errors", ())) for r in scored),
      "backends": scorer.describe(), "table": table, "rows": scored, "failures": failures,
      "synthesis": {"stopped_by": dict(stops), "seconds": generate_seconds,
                    "mean_generated_seconds": float(np.mean([x["seconds"] for x in synthesis]))
                    if synthesis else None,
                    "median_rtf": float(np.median([x["rtf"] for x in synthesis]))
                    if synthesis else None, "utterances": synthesis},
      "out_dir": out_dir,
  }
  result["wall_seconds"] = time.perf_counter() - t_start
  prompts = (f"prompts of {', '.join(f'{float(s):g}' for s in prompt_seconds)} s from other "
             "utterances of the same speaker" if protocol == "lin_he" else
             f"targets of {target_seconds[0]:g} to {target_seconds[1]:g} s "
             f"({targets_per_speaker or 'all'} per speaker), each prompted by a whole other "
             "utterance of its speaker (LibriSpeech test-clean protocol)")
  notes = [f"{len(targets)} target utterances of split `{split}`, {prompts}, "
           f"{samples_per_text} sample(s) per text, seed {seed}.",
           "SIM (prompt) is the papers' SIM; SIM (ground truth) compares with the recording of "
           "the same text. DNSMOS is a no-reference MOS proxy, not a listening test.",
           f"Generation stopped by: {json.dumps(dict(stops))}."]
  result["markdown"] = report_lib.markdown_report(
      f"Zero-shot evaluation of {os.path.basename(os.path.abspath(workdir))}", result,
      report_lib.ZERO_SHOT_COLUMNS, notes)
  report_lib.metric_bars(os.path.join(out_dir, "plots", "metrics.png"), table, BAR_METRICS)
  report_lib.write_report(out_dir, result)
  log.info("zero-shot report: %s", os.path.join(out_dir, "report.md"))
  return result
