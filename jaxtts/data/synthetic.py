"""A fast, deterministic synthetic corpus with the exact layout of the espeak corpus.

Tests and benchmarks use it instead of the espeak builder: no external binaries, a few
milliseconds per utterance, byte-identical output for a given seed. Layout, manifest and
records follow ``CONTRACTS.md`` (``DIR/manifest.json`` plus
``DIR/<split>-<i:05d>-of-<n:05d>.array_record`` for the splits ``train``, ``valid`` and
``test_zero_shot``; records written by `jaxtts.data.records.encode_example`).

The "speech" is a sum of harmonics of a speaker-specific fundamental ``f0`` (with slow
vibrato). Every phoneme symbol owns a fixed set of harmonic amplitudes (a crude formant
pattern), so the audio inside a phoneme's frames depends on the phoneme id and the pitch on
the speaker: enough structure for smoke tests of codecs, aligners and TTS models.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

import numpy as np
from array_record.python import array_record_module

from jaxtts.audio import f0 as f0_lib
from jaxtts.data import features, records

SPLITS = ("train", "valid", "test_zero_shot")
_NUM_HARMONICS = 8
# The phoneme inventory of the synthetic corpus: id 0 is padding, then a small IPA-ish set.
_SYMBOLS = ("<pad>", " ", "a", "e", "i", "o", "u", "p", "t", "k", "m", "n", "s", "l", "r", "ə")
_PHONEME_TABLE_VERSION = "synthetic-1"


def shard_names(split: str, num_shards: int) -> list[str]:
  """``[<split>-00000-of-0000n.array_record, ...]`` as CONTRACTS.md names shards."""
  return [f"{split}-{i:05d}-of-{num_shards:05d}.array_record" for i in range(num_shards)]


def _durations(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """Positive int32 durations summing to ``num_frames`` (2 to 8 frames each on average)."""
  num_phonemes = max(1, min(num_frames, int(round(num_frames / rng.uniform(2.0, 8.0)))))
  # Stars and bars: P - 1 bars among the num_frames - 1 slots split the num_frames - P
  # extra frames into P groups; every phoneme gets one frame plus its group.
  bars = np.sort(rng.choice(num_frames - 1, size=num_phonemes - 1, replace=False))
  bounds = np.concatenate([[-1], bars.astype(np.int64), [num_frames - 1]])
  extra = np.diff(bounds) - 1  # >= 0, sums to num_frames - num_phonemes.
  return (extra + 1).astype(np.int32)


def _synthesize(rng: np.random.Generator, f0: float, phonemes: np.ndarray,
                durations: np.ndarray, hop_length: int, sample_rate: int,
                harmonic_table: np.ndarray) -> np.ndarray:
  """int16 [sum(durations) * hop_length] audio: harmonics of f0 shaped per phoneme."""
  num_samples = int(durations.sum()) * hop_length
  t = np.arange(num_samples, dtype=np.float64) / sample_rate
  vibrato = 1.0 + 0.02 * np.sin(2 * np.pi * rng.uniform(3.0, 6.0) * t + rng.uniform(0, 2 * np.pi))
  phase = 2 * np.pi * np.cumsum(f0 * vibrato) / sample_rate
  # Per-sample harmonic amplitudes: the phoneme's row, held for its frames.
  amps = np.repeat(harmonic_table[phonemes], durations * hop_length, axis=0)  # [T, H]
  k = np.arange(1, _NUM_HARMONICS + 1, dtype=np.float64)
  harmonics = np.sin(phase[:, None] * k[None, :])  # [T, H]
  # Harmonics above Nyquist are silenced.
  harmonics *= (f0 * 1.05 * k < sample_rate / 2)[None, :]
  wave = np.einsum("th,th->t", amps, harmonics)
  wave += 0.01 * rng.standard_normal(num_samples)
  # Short fades at phoneme boundaries are not needed; a global 5 ms fade in/out is.
  fade = min(num_samples // 2, int(0.005 * sample_rate))
  if fade > 0:
    ramp = np.linspace(0.0, 1.0, fade)
    wave[:fade] *= ramp
    wave[-fade:] *= ramp[::-1]
  peak = np.max(np.abs(wave)) + 1e-9
  wave = 0.3 * wave / peak
  return np.round(wave * 32767).astype(np.int16)


def write_synthetic_corpus(
    out_dir: str | os.PathLike,
    *,
    num_speakers: int = 4,
    utterances_per_speaker: int | Sequence[int] = 8,
    zero_shot_speakers: int = 1,
    seed: int = 0,
    sample_rate: int = 16000,
    hop_length: int = 200,
    min_seconds: float = 0.5,
    max_seconds: float = 3.0,
    shard_size: int = 16,
    latent_dim: int = 0,
    f0: bool = False,
    code_quantizers: int = 0,
    codebook_size: int = 1024,
    timbre_dim: int = 0,
    store: Sequence[str] = ("phonemes", "durations"),
) -> dict[str, Any]:
  """Writes a synthetic corpus to ``out_dir`` and returns its manifest dict.

  Args:
    out_dir: directory to create (may exist; files of the same name are overwritten).
    num_speakers: training speakers; their utterances go to ``train`` and ``valid``.
    utterances_per_speaker: utterances per speaker, or one count per speaker (training
      speakers first, then zero-shot speakers) to build an unbalanced corpus.
    zero_shot_speakers: held-out speakers; all their utterances go to ``test_zero_shot``.
    seed: the whole corpus (bytes included) is a function of the arguments.
    sample_rate: Hz, written to the manifest and every record.
    hop_length: samples per duration frame; every ``len(audio)`` is a multiple of it.
    min_seconds: shortest utterance.
    max_seconds: longest utterance.
    shard_size: records per ArrayRecord shard (the last shard of a split may be smaller).
    latent_dim: > 0 also stores ``latents`` [frames, latent_dim] float32 in every record and a
      ``latents`` manifest entry, as `jaxtts-codec encode-dataset` does (one latent frame per
      duration frame): a phoneme-specific vector held for the phoneme's frames, plus a
      speaker offset and small noise, so stage-2 models have a learnable target without a
      trained codec (``codec_workdir`` is None).
    f0: also store ``f0`` / ``voiced`` per hop frame (`jaxtts.audio.f0`, as ``jaxtts-corpus
      --f0`` does).
    code_quantizers: > 0 also stores ``codes`` [frames, code_quantizers] int16 (one code
      frame per duration frame), as a discrete codec's stage-2 encode would: code ``q`` of a
      frame is a fixed function of its phoneme and the speaker, replaced by a random code on
      ~10% of frames.
    codebook_size: codes are in ``[0, codebook_size)``.
    timbre_dim: > 0 also stores a per-utterance ``timbre`` [timbre_dim] float32 (a speaker
      vector plus small noise), as FACodec's encoder gives.
    store: which of ``phonemes`` / ``durations`` the records keep (and the manifest's
      ``features`` lists): ``("phonemes",)`` is a corpus built without aligner output,
      ``()`` one without transcripts. The audio and the other fields do not change.

  Returns:
    The manifest (the same object written to ``out_dir/manifest.json``).

  Of each training speaker's ``n`` utterances, ``max(1, n // 8)`` go to ``valid`` (when
  ``n >= 2``), the others to ``train``.
  """
  total_speakers = num_speakers + zero_shot_speakers
  if isinstance(utterances_per_speaker, int):
    counts = [utterances_per_speaker] * total_speakers
  else:
    counts = [int(c) for c in utterances_per_speaker]
    if len(counts) != total_speakers:
      raise ValueError(f"utterances_per_speaker has {len(counts)} counts for "
                       f"{total_speakers} speakers")
  if any(c < 1 for c in counts):
    raise ValueError(f"every speaker needs at least one utterance, got {counts}")
  if not 0 < min_seconds <= max_seconds:
    raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
  if shard_size < 1:
    raise ValueError(f"shard_size must be positive, got {shard_size}")
  os.makedirs(out_dir, exist_ok=True)

  root = np.random.SeedSequence([seed % 2**63, 0x5E7])
  table_rng = np.random.default_rng(root.spawn(1)[0])
  # Phoneme id -> harmonic amplitudes (pad and space are near-silent).
  harmonic_table = table_rng.uniform(0.05, 1.0, size=(len(_SYMBOLS), _NUM_HARMONICS))
  harmonic_table /= np.arange(1, _NUM_HARMONICS + 1)[None, :] ** 0.7
  harmonic_table[:2] *= 0.02
  latent_table = table_rng.normal(0.0, 1.0, size=(len(_SYMBOLS), max(latent_dim, 1)))
  speaker_rng = np.random.default_rng(root.spawn(2)[1])
  speakers = []
  for s in range(total_speakers):
    pitch = float(np.round(speaker_rng.uniform(90.0, 260.0), 2))
    speakers.append({
        "id": s,
        "name": f"synth{s:03d}",
        "split": "train" if s < num_speakers else "test_zero_shot",
        "f0": pitch,
        "num_harmonics": _NUM_HARMONICS,
    })
  speaker_offsets = speaker_rng.normal(0.0, 0.3, size=(total_speakers, max(latent_dim, 1)))
  # Separate streams, so corpora without codes / timbre keep their bytes.
  extra_rng = np.random.default_rng(root.spawn(1)[0])
  code_table = extra_rng.integers(0, codebook_size, size=(len(_SYMBOLS), total_speakers,
                                                          max(code_quantizers, 1)))
  timbre_table = extra_rng.normal(0.0, 1.0, size=(total_speakers, max(timbre_dim, 1)))

  examples: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
  for spk in speakers:
    s = spk["id"]
    n = counts[s]
    num_valid = (max(1, n // 8) if n >= 2 else 0) if spk["split"] == "train" else 0
    for u in range(n):
      rng = np.random.default_rng(np.random.SeedSequence([seed % 2**63, s, u]))
      num_frames = int(rng.integers(
          max(1, math.ceil(min_seconds * sample_rate / hop_length)),
          max(1, int(max_seconds * sample_rate / hop_length)) + 1))
      durations = _durations(rng, num_frames)
      phonemes = rng.integers(2, len(_SYMBOLS), size=durations.shape[0]).astype(np.int32)
      audio = _synthesize(rng, spk["f0"], phonemes, durations, hop_length, sample_rate,
                          harmonic_table)
      example = {
          "id": f"{spk['name']}-{u:05d}",
          "text": "".join(_SYMBOLS[p] for p in phonemes),
          "phonemes": phonemes,
          "durations": durations,
          "audio": audio,
          "sample_rate": sample_rate,
          "speaker_id": s,
          "speaker": spk["name"],
      }
      if latent_dim > 0:
        latents = np.repeat(latent_table[phonemes], durations, axis=0) + speaker_offsets[s]
        example["latents"] = (latents + 0.1 * rng.standard_normal(latents.shape)).astype(
            np.float32)
      if f0:
        example["f0"], example["voiced"] = f0_lib.compute_f0(audio, sample_rate, hop_length)
      if code_quantizers > 0 or timbre_dim > 0:
        urng = np.random.default_rng(np.random.SeedSequence([seed % 2**63, s, u, 0xC0DE]))
        if code_quantizers > 0:
          codes = np.repeat(code_table[phonemes, s], durations, axis=0)
          noisy = urng.random(codes.shape) < 0.1
          codes[noisy] = urng.integers(0, codebook_size, size=int(noisy.sum()))
          example["codes"] = codes.astype(np.int16 if codebook_size <= 2**15 else np.int32)
        if timbre_dim > 0:
          example["timbre"] = (timbre_table[s] + 0.05 * urng.standard_normal(timbre_dim)).astype(
              np.float32)
      for name in ("phonemes", "durations"):
        if name not in store:
          del example[name]
      if spk["split"] == "test_zero_shot":
        split = "test_zero_shot"
      else:
        split = "valid" if u >= n - num_valid else "train"
      examples[split].append(example)

  splits = {}
  for split in SPLITS:
    exs = examples[split]
    num_shards = max(1, math.ceil(len(exs) / shard_size))
    names = shard_names(split, num_shards)
    for i, name in enumerate(names):
      writer = array_record_module.ArrayRecordWriter(
          os.path.join(os.fspath(out_dir), name), records.WRITER_OPTIONS)
      for ex in exs[i * shard_size:(i + 1) * shard_size]:
        writer.write(records.encode_example(ex))
      writer.close()
    splits[split] = {
        "shards": names,
        "num_examples": len(exs),
        "hours": round(sum(len(e["audio"]) for e in exs) / sample_rate / 3600.0, 6),
        "speaker_ids": sorted({int(e["speaker_id"]) for e in exs}),
    }

  manifest = {
      "format_version": 1,
      "builder": "synthetic",
      "seed": seed,
      "sample_rate": sample_rate,
      "hop_length": hop_length,
      "phoneme_table": {"version": _PHONEME_TABLE_VERSION, "symbols": list(_SYMBOLS)},
      "speakers": speakers,
      "splits": splits,
      "build_args": {
          "num_speakers": num_speakers,
          "utterances_per_speaker": counts,
          "zero_shot_speakers": zero_shot_speakers,
          "seed": seed,
          "sample_rate": sample_rate,
          "hop_length": hop_length,
          "min_seconds": min_seconds,
          "max_seconds": max_seconds,
          "shard_size": shard_size,
      },
  }
  specs = {}
  if latent_dim > 0:
    manifest["latents"] = {"dim": latent_dim, "hop_length": hop_length,
                           "frame_rate": sample_rate / hop_length, "codec_workdir": None}
    manifest["build_args"]["latent_dim"] = latent_dim
    specs["latents"] = features.latents_spec(latent_dim, hop_length, sample_rate,
                                             codec_workdir=None)
  if f0:
    manifest["build_args"]["f0"] = True
    specs.update(features.f0_specs(hop_length, sample_rate, f0_lib.settings()))
  if code_quantizers > 0:
    manifest["build_args"].update(code_quantizers=code_quantizers, codebook_size=codebook_size)
    specs["codes"] = features.codes_spec(code_quantizers, [codebook_size] * code_quantizers,
                                         hop_length, sample_rate, codec_workdir=None)
  if timbre_dim > 0:
    manifest["build_args"]["timbre_dim"] = timbre_dim
    specs["timbre"] = features.utterance_spec("float32", (timbre_dim,), codec_workdir=None)
  manifest = features.with_features(manifest, specs)
  for name in ("phonemes", "durations"):
    if name not in store:
      del manifest["features"][name]
  if tuple(store) != ("phonemes", "durations"):
    manifest["build_args"]["store"] = list(store)
  with open(os.path.join(os.fspath(out_dir), "manifest.json"), "w", encoding="utf-8") as f:
    json.dump(manifest, f, sort_keys=True, indent=1)
    f.write("\n")
  return manifest
