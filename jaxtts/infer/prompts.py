"""Zero-shot prompts of fixed lengths (Lin & He, ICLR 2025, §5.1): "we divided the prompts
into three groups: 3 seconds, 8 seconds, and 15 seconds. If an utterance exceeded the
specified duration, we truncated it; otherwise, we sampled another utterance from the same
speaker and concatenated it until reaching the desired duration."

For every target utterance of a split and every length ``s``, the prompt comes from other
utterances of the target's speaker, in a seeded random order shared by all lengths (so a
short prompt is a prefix of a longer one): they are concatenated (audio and phonemes) until
at least ``s`` seconds, cycling through them again when the speaker has too little other
audio, and the result is cut at the phoneme boundary nearest to ``s`` using the corpus's
per-phoneme ``durations`` (frames of ``hop_length`` samples). A transcript cannot be cut
proportionally, so a prompt carries the exact phoneme ids of its audio
(``prompt_phonemes``, with ``prompt_durations`` summing to the prompt's frames) instead of
text; generators take them as the request's ``prompt_phonemes``.

`build_cross_sentence_prompts` is the LibriSpeech test-clean protocol of the zero-shot papers
(VALL-E §5.1, NaturalSpeech 3 §4.1, F5-TTS's cross-sentence task): targets of 4 to 10 s, each
prompted by a *whole* other utterance of the same speaker with its own transcript. It needs no
phoneme durations, so it runs on a corpus built without aligner output.

`write_prompt_manifest` writes the prompts as wav files plus a JSONL manifest for
``jaxtts-synthesize --manifest`` (rows ``{"id", "text", "prompt_audio", "prompt_phonemes",
...}``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

import numpy as np

from jaxtts.audio.io import save_wav
from jaxtts.data import features
from jaxtts.data.source import CorpusSource
from jaxtts.files import atomic_open

log = logging.getLogger("jaxtts.infer")


def _cut(durations: np.ndarray, frames: int) -> int:
  """Number of phonemes ``k >= 1`` whose duration sum is nearest ``frames`` (the largest
  such ``k``, so zero-length phonemes at the boundary stay in)."""
  cum = np.cumsum(durations)
  err = np.abs(cum - frames)
  return int(np.flatnonzero(err == err.min())[-1]) + 1


def build_prompts(source_dir: str, split: str, seconds: Sequence[float] = (3, 8, 15),
                  seed: int = 0) -> list[dict[str, Any]]:
  """Prompts of ``seconds`` for every utterance of ``split`` of a corpus (or latent corpus).

  Returns one dict per (target, length), targets in corpus order: ``id``
  (``<target>-prompt<s>s``), ``target_id``, ``text`` and ``phonemes`` (int32 [Jt]) of the
  target, ``speaker``, ``speaker_id``, ``prompt_audio`` int16 [T] (``T`` a multiple of
  ``hop_length``), ``prompt_phonemes`` int32 [Jp], ``prompt_durations`` int32 [Jp] (sum
  ``T / hop_length``), ``prompt_seconds`` (actual), ``requested_seconds``, ``source_ids``
  (the utterances used, in order), ``sample_rate``, ``hop_length``. Targets whose speaker has
  no other utterance in the split are skipped (logged).
  """
  source = CorpusSource(source_dir, split)
  rate, hop = source.sample_rate, source.hop_length
  if not features.has(source.manifest, "durations"):
    raise features.FeatureError(
        f"{source_dir}/manifest.json lists no phoneme durations, which cutting a prompt at "
        f"{list(seconds)} s needs; use the cross-sentence protocol (`jaxtts-eval zero-shot "
        "--protocol librispeech`) or build the corpus with --alignments")
  meta = []
  for i in range(len(source)):
    ex = source.example(i)
    meta.append({k: ex[k] for k in ("id", "text", "phonemes", "durations", "speaker",
                                     "speaker_id")})
  by_speaker: dict[int, list[int]] = {}
  for i, m in enumerate(meta):
    by_speaker.setdefault(int(m["speaker_id"]), []).append(i)
  rng = np.random.default_rng(seed)
  items = []
  for i, target in enumerate(meta):
    others = [k for k in by_speaker[int(target["speaker_id"])] if k != i]
    if not others:
      log.warning("prompts: %s: speaker %r has no other utterance in %s; skipped",
                  target["id"], target["speaker"], split)
      continue
    order = [others[k] for k in rng.permutation(len(others))]
    for s in seconds:
      want = max(1, int(round(float(s) * rate / hop)))
      used: list[int] = []
      while sum(int(meta[k]["durations"].sum()) for k in used) < want:
        used.append(order[len(used) % len(order)])
      durations = np.concatenate([meta[k]["durations"] for k in used]).astype(np.int32)
      phonemes = np.concatenate([meta[k]["phonemes"] for k in used]).astype(np.int32)
      keep = _cut(durations, want)
      frames = int(durations[:keep].sum())
      # Utterances past the cut contribute nothing.
      ends = np.cumsum([len(meta[k]["durations"]) for k in used])
      used = used[:int(np.searchsorted(ends, keep)) + 1]
      audio = {k: source.example(k)["audio"] for k in set(used)}
      audio = np.concatenate([audio[k] for k in used])[:frames * hop]
      used_ids = [meta[k]["id"] for k in used]
      items.append({
          "id": f"{target['id']}-prompt{float(s):g}s", "target_id": target["id"],
          "text": target["text"], "phonemes": np.asarray(target["phonemes"], np.int32),
          "speaker": target["speaker"], "speaker_id": int(target["speaker_id"]),
          "prompt_audio": np.asarray(audio, np.int16),
          "prompt_phonemes": phonemes[:keep], "prompt_durations": durations[:keep],
          "prompt_seconds": frames * hop / rate, "requested_seconds": float(s),
          "prompt_group": f"{float(s):g} s",
          "source_ids": used_ids, "sample_rate": rate, "hop_length": hop})
  return items


def build_cross_sentence_prompts(source_dir: str, split: str, *, min_seconds: float = 4.0,
                                 max_seconds: float = 10.0,
                                 targets_per_speaker: int | None = 1,
                                 seed: int = 0) -> list[dict[str, Any]]:
  """The LibriSpeech test-clean protocol (module docstring) over a built corpus's ``split``.

  Targets: utterances of ``min_seconds`` to ``max_seconds`` (NaturalSpeech 3 keeps one per
  speaker: ``targets_per_speaker=1``; ``None`` keeps all), chosen in a seeded order. Prompt:
  another utterance of the target's speaker (any length, seeded), whole, with its phonemes and
  (when the corpus stores them) durations. Items have `build_prompts`' keys;
  ``requested_seconds`` is None and ``prompt_group`` is ``"utterance"``. Speakers with a single
  utterance are skipped (logged).
  """
  source = CorpusSource(source_dir, split)
  rate, hop = source.sample_rate, source.hop_length
  if not features.has(source.manifest, "phonemes"):
    raise features.FeatureError(f"{source_dir}/manifest.json lists no phonemes: the split has "
                                "no transcripts to synthesize")
  with_durations = features.has(source.manifest, "durations")
  meta, by_speaker = [], {}
  for i in range(len(source)):
    ex = source.example(i)
    meta.append({"id": ex["id"], "text": ex["text"], "phonemes": ex["phonemes"],
                 "durations": ex.get("durations"), "speaker": ex["speaker"],
                 "speaker_id": int(ex["speaker_id"]), "seconds": len(ex["audio"]) / rate})
    by_speaker.setdefault(int(ex["speaker_id"]), []).append(i)
  rng = np.random.default_rng(seed)
  items = []
  for spk in sorted(by_speaker):
    members = by_speaker[spk]
    if len(members) < 2:
      log.warning("prompts: speaker %r has one utterance in %s; skipped",
                  meta[members[0]]["speaker"], split)
      continue
    eligible = [k for k in members if min_seconds <= meta[k]["seconds"] <= max_seconds]
    eligible = [eligible[j] for j in rng.permutation(len(eligible))]
    if targets_per_speaker is not None:
      eligible = eligible[:int(targets_per_speaker)]
    for k in sorted(eligible):
      others = [j for j in members if j != k]
      j = others[int(rng.integers(len(others)))]
      target, prompt = meta[k], meta[j]
      audio = np.asarray(source.example(j)["audio"], np.int16)
      items.append({
          "id": f"{target['id']}-prompt-{prompt['id']}", "target_id": target["id"],
          "text": target["text"], "phonemes": np.asarray(target["phonemes"], np.int32),
          "speaker": target["speaker"], "speaker_id": target["speaker_id"],
          "prompt_audio": audio, "prompt_phonemes": np.asarray(prompt["phonemes"], np.int32),
          "prompt_durations": (np.asarray(prompt["durations"], np.int32) if with_durations
                               else None),
          "prompt_text": prompt["text"], "prompt_seconds": len(audio) / rate,
          "requested_seconds": None, "prompt_group": "utterance", "source_ids": [prompt["id"]],
          "sample_rate": rate, "hop_length": hop})
  return items


def write_prompt_manifest(items: Sequence[dict[str, Any]], out_dir: str, *,
                          target_phonemes: bool = False) -> str:
  """Writes ``<out_dir>/prompts/<id>.wav`` and ``<out_dir>/manifest.jsonl``; returns the
  manifest's path.

  Rows: ``id``, ``text``, ``prompt_audio`` (absolute path), ``prompt_phonemes`` (ids; the
  CLI uses them instead of ``prompt_text``), and for reference ``target_id``, ``speaker``,
  ``prompt_seconds``, ``source_ids``; with ``target_phonemes=True`` also
  ``target_phonemes`` (the corpus's ids, used instead of phonemizing ``text``; needed for
  corpora whose phoneme table the text frontend does not produce, e.g. the synthetic one).
  """
  wav_dir = os.path.join(os.path.abspath(out_dir), "prompts")
  os.makedirs(wav_dir, exist_ok=True)
  path = os.path.join(os.path.abspath(out_dir), "manifest.jsonl")
  with atomic_open(path, "w", encoding="utf-8") as f:
    for it in items:
      wav_path = os.path.join(wav_dir, f"{it['id']}.wav")
      save_wav(wav_path, np.asarray(it["prompt_audio"]), int(it["sample_rate"]))
      row = {"id": it["id"], "text": it["text"], "prompt_audio": wav_path,
             "prompt_phonemes": [int(x) for x in it["prompt_phonemes"]],
             "target_id": it["target_id"], "speaker": it["speaker"],
             "prompt_seconds": float(it["prompt_seconds"]),
             "source_ids": list(it["source_ids"])}
      if target_phonemes:
        row["target_phonemes"] = [int(x) for x in it["phonemes"]]
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  return path
