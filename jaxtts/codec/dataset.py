"""Stage 2: a corpus's shards encoded by a codec (`jaxtts-codec encode-dataset`).

Every record is copied with the codec's representation added: per-frame fields
(``latents [F, D]`` of the GMM-VAE, ``codes [F, Q]`` of FACodec) and per-utterance ones
(``timbre [D_t]``), ``F = ceil(len(audio) / hop)``. Shards are split over processes
(``shard % process_count == process_index``); a finished shard is skipped on rerun
(resumable) and each is written to a temporary name and renamed when complete
(`jaxtts.data.derive.derive_corpus`). The manifest is the corpus's with the new fields in
its ``features`` and ``codec`` (`Codec.describe` and its workdir) and, for
continuous latents, the ``latents`` entry of CONTRACTS.md (``dim``, ``hop_length``,
``frame_rate``, ``codec_workdir``), for codes the ``codes`` entry (``num_quantizers``,
``codebook_sizes``, ``hop_length``, ``frame_rate``, ``codec_workdir``). A codec with
phone-level fields (FACodec's ``phone_prosody_codes`` [P, 1], NaturalSpeech 3 §3.3.1) adds
them when the corpus' phone durations are at the codec's hop.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from jaxtts.codec.base import CONTINUOUS, Codec
from jaxtts.data import derive, features
from jaxtts.data.source import read_manifest


def representation_manifest(codec: Codec) -> tuple[dict[str, Any], dict[str, Any]]:
  """``(feature specs, top-level manifest entries)`` that describe ``codec``'s
  representation in stage-2 shards (`jaxtts.data.features`)."""
  rep = codec.representation
  wd = os.path.abspath(codec.workdir)
  common = {"hop_length": int(codec.hop), "frame_rate": codec.sample_rate / codec.hop,
            "codec_workdir": wd}
  entries: dict[str, Any] = {"codec": {**codec.describe(), "workdir": wd}}
  specs: dict[str, Any] = {}
  for name, field in rep.fields.items():
    if not field.per_frame:
      specs[name] = features.utterance_spec(field.dtype, field.shape, codec_workdir=wd)
  if rep.kind == CONTINUOUS:
    entries["latents"] = {"dim": int(rep.dim), **common}
    specs["latents"] = features.latents_spec(int(rep.dim), codec.hop, codec.sample_rate,
                                             codec_workdir=wd)
  else:
    sizes = [int(c) for c in rep.codebook_sizes]
    entries["codes"] = {"num_quantizers": len(sizes), "codebook_sizes": sizes, **common}
    specs["codes"] = features.codes_spec(len(sizes), sizes, codec.hop, codec.sample_rate,
                                         codec_workdir=wd)
    if "timbre" in rep.fields:
      entries["codes"]["timbre_dim"] = int(rep.fields["timbre"].shape[0])
  return specs, entries


def encode_dataset(codec: Codec, data_dir: str, out_dir: str, splits: Sequence[str],
                   process_index: int = 0, process_count: int = 1,
                   progress: bool = True) -> dict[str, Any]:
  """Writes ``<out>/<split>-*.array_record`` and the manifest (`jaxtts.data.derive`: the
  process that completes the last shard writes it); returns counts. Empty splits are
  skipped; a split the corpus does not have is an error naming it."""
  manifest = read_manifest(data_dir)
  unknown = [s for s in splits if s not in manifest["splits"]]
  if unknown:
    raise ValueError(f"--splits: {unknown} not in {data_dir}/manifest.json (splits: "
                     f"{sorted(manifest['splits'])})")
  if int(manifest["sample_rate"]) != int(codec.sample_rate):
    raise ValueError(f"{data_dir}/manifest.json: sample_rate {manifest['sample_rate']} but "
                     f"the codec {codec.workdir} takes {codec.sample_rate} Hz")
  splits = [s for s in splits if int(manifest["splits"][s]["num_examples"]) > 0]
  specs, entries = representation_manifest(codec)
  fields = tuple(codec.representation.fields)
  # Phone-level fields (FACodec: NS3's phone-level prosody codes) need durations at the
  # codec's hop; a corpus without them, or at another hop, gets none.
  stored = features.manifest_features(manifest)
  phone_level = bool(codec.phone_fields) and "durations" in stored and int(
      manifest["hop_length"]) == int(codec.hop)
  if phone_level:
    wd = os.path.abspath(codec.workdir)
    for name, field in codec.phone_fields.items():
      specs[name] = features.phoneme_spec(field.dtype, field.shape, codec_workdir=wd)

  def encode(example: Mapping[str, Any]) -> dict[str, np.ndarray]:
    audio = example["audio"].astype(np.float32) / 32768.0
    out = codec.encode(audio)
    out = {k: out[k].astype(specs[k]["dtype"]) for k in fields}
    if phone_level:
      phones = codec.encode_phones(audio, example["durations"])
      out.update({k: phones[k].astype(specs[k]["dtype"]) for k in codec.phone_fields})
    return out

  return derive.derive_corpus(data_dir, out_dir, encode, specs, splits=splits,
                              process_index=process_index, process_count=process_count,
                              manifest_updates=entries, progress=progress)
