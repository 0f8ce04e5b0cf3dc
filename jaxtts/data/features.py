"""What a corpus stores besides the base fields: the manifest's ``features`` entry.

``manifest["features"]`` maps every array field that the records of a corpus carry to a spec::

  {"dtype": "int16", "level": "frame", "shape": "[F, Q]", "inner_shape": [Q],
   "hop_length": 200, "frame_rate": 80.0, ...builder details (codec_workdir, F0 settings)}

``level`` is ``"sample"`` (``audio`` [T]), ``"phoneme"`` ([P, *inner_shape]: ``phonemes`` /
``durations``, and stage-2 phone-level fields such as ``phone_prosody_codes``),
``"frame"`` ([F, *inner_shape] at ``hop_length``: ``F == T // hop`` or ``ceil(T / hop)``)
or ``"utterance"`` (one ``inner_shape`` vector per record, e.g. a codec's ``timbre``).
Manifests written before this entry existed imply the base fields (and ``latents`` / ``codes``
when they have a top-level ``latents`` / ``codes`` entry, CONTRACTS.md): `manifest_features`
fills them in. A manifest *with* the entry lists exactly what its records hold: ``phonemes`` and
``durations`` are absent from a corpus without transcripts (LibriLight's VAD pieces) or without
aligner output (a real corpus built without ``--alignments``); ``audio`` is always there.

Two frame-level labels are *derived* from the base fields when a batch asks for them instead of
being stored (a ``np.repeat``, cheaper than reading them):

* ``phone_labels`` int32 [F]: the phoneme id (in the manifest's ``phoneme_table``) of the
  phoneme covering frame ``f``, ``phonemes[k]`` for ``sum(durations[:k]) <= f <
  sum(durations[:k+1])``;
* ``phone_index`` int32 [F]: that ``k``, the position of the phoneme in the utterance (for
  pooling frames into phones, e.g. NaturalSpeech 3's phone-level prosody, §4.1).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from jaxtts.data.source import CorpusError

LEVELS = ("sample", "phoneme", "frame", "utterance")
BASE_FIELDS = ("audio", "phonemes", "durations")
DERIVED = ("phone_labels", "phone_index")


class FeatureError(CorpusError):
  """A feature a reader asks for that the corpus lacks, or a record whose feature is malformed."""


def base_specs(sample_rate: int, hop_length: int) -> dict[str, dict[str, Any]]:
  """The specs of ``audio``, ``phonemes`` and ``durations`` (a builder drops the ones its
  records lack)."""
  return {
      "audio": {"dtype": "int16", "level": "sample", "shape": "[T]", "inner_shape": [],
                "sample_rate": int(sample_rate), "multiple_of": int(hop_length)},
      "phonemes": {"dtype": "int32", "level": "phoneme", "shape": "[P]", "inner_shape": []},
      "durations": {"dtype": "int32", "level": "phoneme", "shape": "[P]", "inner_shape": [],
                    "hop_length": int(hop_length), "unit": "frames"},
  }


def frame_spec(dtype: str, hop_length: int, sample_rate: int,
               inner_shape: Sequence[int] = (), **details: Any) -> dict[str, Any]:
  """Spec of a frame-level feature ``[F, *inner_shape]`` at ``hop_length``."""
  inner = [int(d) for d in inner_shape]
  shape = "[" + ", ".join(["F"] + [str(d) for d in inner]) + "]"
  return {"dtype": str(np.dtype(dtype)), "level": "frame", "shape": shape, "inner_shape": inner,
          "hop_length": int(hop_length), "frame_rate": float(sample_rate) / int(hop_length),
          **details}


def phoneme_spec(dtype: str, inner_shape: Sequence[int] = (), **details: Any
                 ) -> dict[str, Any]:
  """Spec of a phoneme-level feature ``[P, *inner_shape]``, one row per phoneme of the record
  (e.g. NaturalSpeech 3's phone-level prosody codes)."""
  inner = [int(d) for d in inner_shape]
  return {"dtype": str(np.dtype(dtype)), "level": "phoneme",
          "shape": "[" + ", ".join(["P"] + [str(d) for d in inner]) + "]", "inner_shape": inner,
          **details}


def utterance_spec(dtype: str, inner_shape: Sequence[int], **details: Any) -> dict[str, Any]:
  """Spec of a per-utterance feature of shape ``inner_shape`` (e.g. ``timbre`` [D])."""
  inner = [int(d) for d in inner_shape]
  return {"dtype": str(np.dtype(dtype)), "level": "utterance",
          "shape": "[" + ", ".join(str(d) for d in inner) + "]", "inner_shape": inner,
          **details}


def f0_specs(hop_length: int, sample_rate: int, settings: Mapping[str, Any]
             ) -> dict[str, dict[str, Any]]:
  """Specs of ``f0`` (float32 Hz, 0 when unvoiced) and ``voiced`` (bool) from `jaxtts.audio.f0`."""
  where = "frame f at sample f * hop + hop // 2 (its centre); F = T // hop"
  return {"f0": frame_spec("float32", hop_length, sample_rate, unit="Hz", unvoiced_value=0.0,
                           frames=where, **settings),
          "voiced": frame_spec("bool", hop_length, sample_rate, frames=where,
                               method=settings.get("method"))}


def codes_spec(num_quantizers: int, codebook_sizes: Sequence[int], hop_length: int,
               sample_rate: int, **details: Any) -> dict[str, Any]:
  """Spec of discrete codec ``codes`` [F, Q]: int16 when every codebook fits, else int32."""
  sizes = [int(s) for s in codebook_sizes]
  if len(sizes) != int(num_quantizers):
    raise ValueError(f"codes_spec: {len(sizes)} codebook sizes for {num_quantizers} quantizers")
  dtype = "int16" if max(sizes) <= 2**15 else "int32"
  return frame_spec(dtype, hop_length, sample_rate, (num_quantizers,), codebook_sizes=sizes,
                    **details)


def latents_spec(dim: int, hop_length: int, sample_rate: int, **details: Any) -> dict[str, Any]:
  """Spec of continuous codec ``latents`` [F, D] float32."""
  return frame_spec("float32", hop_length, sample_rate, (dim,), **details)


def manifest_features(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """``name -> spec`` of every stored feature (base fields implied for older manifests)."""
  specs = base_specs(int(manifest["sample_rate"]), int(manifest["hop_length"]))
  listed = manifest.get("features")
  if listed:  # authoritative: a corpus without transcripts or alignments omits them
    specs = {"audio": specs["audio"]}
  legacy = manifest.get("latents")
  if legacy:
    specs["latents"] = latents_spec(int(legacy["dim"]), int(legacy["hop_length"]),
                                    int(manifest["sample_rate"]))
  codes = manifest.get("codes")
  if codes:
    specs["codes"] = codes_spec(int(codes["num_quantizers"]), codes["codebook_sizes"],
                                int(codes["hop_length"]), int(manifest["sample_rate"]))
  specs.update({k: dict(v) for k, v in (manifest.get("features") or {}).items()})
  return specs


def with_features(manifest: Mapping[str, Any], new: Mapping[str, Mapping[str, Any]]
                  ) -> dict[str, Any]:
  """A copy of ``manifest`` whose ``features`` entry lists the old and the ``new`` specs."""
  out = dict(manifest)
  features = manifest_features(manifest)
  for name, spec in new.items():
    if spec.get("level") not in LEVELS:
      raise ValueError(f"feature {name!r}: level must be one of {LEVELS}, got "
                       f"{spec.get('level')!r}")
    features[name] = dict(spec)
  out["features"] = {k: features[k] for k in sorted(features)}
  return out


def require(manifest: Mapping[str, Any], names: Iterable[str], manifest_path: str,
            flag: str = "data.extra_features") -> dict[str, dict[str, Any]]:
  """Specs of the requested ``names``; derived labels need their base fields.

  Raises:
    FeatureError: naming the first missing field, the manifest path and ``flag``.
  """
  specs = manifest_features(manifest)
  out = {}
  for name in names:
    if name in DERIVED:
      needs = [n for n in (("phonemes", "durations") if name == "phone_labels"
                           else ("durations",)) if n not in specs]
      if needs:
        raise FeatureError(f"{manifest_path}: {flag} asks for {name!r}, derived from "
                           f"{needs}, which the manifest's 'features' does not list (a corpus "
                           "built without aligner output has no durations)")
      continue
    if name not in specs:
      hint = (" (add it with `jaxtts-corpus derive f0 --data-dir DIR`)"
              if name in ("f0", "voiced") else "")
      raise FeatureError(f"{manifest_path}: {flag} asks for feature {name!r}, which the "
                         f"manifest's 'features' does not list (present: {sorted(specs)}){hint}")
    out[name] = specs[name]
  return out


def has(manifest: Mapping[str, Any], name: str) -> bool:
  """Whether the corpus of ``manifest`` stores ``name`` (e.g. ``"durations"``)."""
  return name in manifest_features(manifest)


def phone_labels(phonemes: np.ndarray, durations: np.ndarray) -> np.ndarray:
  """int32 [sum(durations)]: the phoneme id covering each frame (module docstring)."""
  return np.repeat(np.asarray(phonemes, np.int32), np.asarray(durations, np.int64))


def phone_index(durations: np.ndarray) -> np.ndarray:
  """int32 [sum(durations)]: the position of the phoneme covering each frame."""
  durations = np.asarray(durations, np.int64)
  return np.repeat(np.arange(len(durations), dtype=np.int32), durations)


def num_frames(num_samples: int, hop_length: int) -> tuple[int, int]:
  """The frame counts a frame-level feature of ``num_samples`` audio may have: floor, ceil."""
  return num_samples // hop_length, -(-num_samples // hop_length)


def check_record(example: Mapping[str, Any], specs: Mapping[str, Mapping[str, Any]],
                 where: str) -> None:
  """Checks that ``example`` holds every feature of ``specs`` with the declared geometry.

  Raises:
    FeatureError: naming the field, the record id and ``where`` (its shard).
  """
  rid = example.get("id", "?")
  t = len(example["audio"]) if "audio" in example else None
  for name, spec in specs.items():
    if spec["level"] == "sample" or name in BASE_FIELDS:
      continue
    if name not in example:
      raise FeatureError(f"record {rid!r} in {where} lacks field {name!r} that the manifest "
                         "lists")
    value = np.asarray(example[name])
    inner = tuple(int(d) for d in spec.get("inner_shape", ()))
    if spec["level"] == "phoneme":
      p = len(example["phonemes"])
      if value.shape != (p,) + inner:
        raise FeatureError(f"record {rid!r} in {where}: field {name!r} has shape "
                           f"{value.shape}, the record has {p} phonemes and the manifest "
                           f"says {spec.get('shape')} with inner shape {list(inner)}")
      continue
    if spec["level"] == "utterance":
      if value.shape != inner:
        raise FeatureError(f"record {rid!r} in {where}: field {name!r} has shape "
                           f"{value.shape}, the manifest says {list(inner)}")
      continue
    if value.ndim != 1 + len(inner) or value.shape[1:] != inner:
      raise FeatureError(f"record {rid!r} in {where}: field {name!r} has shape {value.shape}, "
                         f"the manifest says {spec.get('shape')} with inner shape {list(inner)}")
    if t is not None and len(value) not in num_frames(t, int(spec["hop_length"])):
      raise FeatureError(f"record {rid!r} in {where}: field {name!r} has {len(value)} frames, "
                         f"{t} audio samples at hop {spec['hop_length']} give "
                         f"{num_frames(t, int(spec['hop_length']))[0]}")
