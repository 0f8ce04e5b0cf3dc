"""Serialized utterance records: the one on-disk format every corpus builder writes.

A record is a msgpack map with deterministic key order. NumPy arrays are stored as
``{"__nd__": True, "dtype": str, "shape": [..], "data": bytes}`` so that the same
example always serializes to the same bytes (corpus determinism depends on it).

Utterance fields (every builder writes them; ``phonemes`` and ``durations`` only when the
corpus has them: a manifest whose ``features`` entry omits them has records without them, e.g. a
real corpus built without aligner output has no ``durations``, and LibriLight's untranscribed
VAD pieces have neither; manifests without a ``features`` entry imply both):

======================  ============  =====================================================
field                   type          meaning
======================  ============  =====================================================
``id``                  str           unique utterance id, ``<speaker>-<index>``
``text``                str           the normalized sentence
``phonemes``            int32 [P]     phoneme ids in the manifest's symbol table
``durations``           int32 [P]     frames per phoneme at the manifest's ``hop_length``;
                                      ``durations.sum() == len(audio) // hop_length``
``audio``               int16 [T]     mono PCM at ``sample_rate``; ``T % hop_length == 0``
``sample_rate``         int           Hz (16000 for every corpus we build)
``speaker_id``          int           index into the manifest's ``speakers`` list
``speaker``             str           speaker name
======================  ============  =====================================================

Optional fields (present when the manifest's ``features`` entry lists them; `decode_example`
checks the dtype and rank of those it finds; frame counts are checked against the manifest by
`jaxtts.data.features.check_record`):

======================  ==============  ===================================================
field                   type            meaning
======================  ==============  ===================================================
``latents``             float32 [F, D]  continuous codec latents (``jaxtts-codec
                                        encode-dataset``), F = ceil(T / codec hop)
``codes``               int16 / int32   discrete codec codes [F, Q], F = ceil(T / codec hop)
                        [F, Q]
``timbre``              float32 [D]     per-utterance timbre vector of a codec (FACodec)
``f0``                  float32 [F]     F0 in Hz of frame f (centre sample f*hop + hop//2),
                                        0 when unvoiced; F = T // hop (`jaxtts.audio.f0`)
``voiced``              bool [F]        voicing of the same frames (``f0 > 0``)
======================  ==============  ===================================================
"""

from __future__ import annotations

from typing import Any, Mapping

import msgpack
import numpy as np

# ArrayRecord writer options of every shard we write. One record per chunk (``group_size:1``)
# so a random read decodes one record. Uncompressed: ArrayRecord's default, zstd level 3, saves
# ~7 % on int16 PCM and float32 latents (both near-incompressible) and costs 4-5x the read
# (measured here: 1.86 ms against 0.35 ms per 1.1 MB latent + audio record, one CPU core),
# which is most of the input pipeline's per-example time.
WRITER_OPTIONS = "group_size:1,uncompressed"

REQUIRED_FIELDS = ("id", "text", "audio", "sample_rate", "speaker_id", "speaker")

# name -> (allowed dtypes, rank) of the optional fields.
OPTIONAL_FIELDS = {
    "phonemes": (("int32",), 1),
    "durations": (("int32",), 1),
    "latents": (("float32",), 2),
    "codes": (("int16", "int32"), 2),
    "timbre": (("float32",), 1),
    "f0": (("float32",), 1),
    "voiced": (("bool", "uint8"), 1),
}


class RecordError(ValueError):
  """A record that cannot be decoded or lacks a required field."""


def _pack(obj: Any) -> Any:
  if isinstance(obj, np.ndarray):
    return {"__nd__": True, "dtype": obj.dtype.str, "shape": list(obj.shape),
            "data": np.ascontiguousarray(obj).tobytes()}
  if isinstance(obj, np.generic):
    return obj.item()
  return obj


def _unpack(obj: dict) -> Any:
  if obj.get("__nd__"):
    return np.frombuffer(obj["data"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
  return obj


def encode_example(example: Mapping[str, Any]) -> bytes:
  """Serializes one utterance dict (keys in the given order) to bytes."""
  return msgpack.packb(dict(example), default=_pack, use_bin_type=True, strict_types=False)


def decode_example(data: bytes, *, source: str = "<record>") -> dict:
  """Inverse of `encode_example`; raises `RecordError` naming ``source`` on bad bytes."""
  try:
    example = msgpack.unpackb(data, object_hook=_unpack, raw=False)
  except Exception as e:  # msgpack raises several unrelated exception types.
    raise RecordError(f"{source}: cannot decode record ({type(e).__name__}: {e})") from e
  if not isinstance(example, dict):
    raise RecordError(f"{source}: record is a {type(example).__name__}, expected a map")
  missing = [k for k in REQUIRED_FIELDS if k not in example]
  if missing:
    raise RecordError(f"{source}: record {example.get('id', '?')!r} lacks fields {missing}")
  for name, (dtypes, rank) in OPTIONAL_FIELDS.items():
    if name in example:
      value = example[name]
      if (not isinstance(value, np.ndarray) or value.dtype.name not in dtypes
          or value.ndim != rank):
        got = (f"{value.dtype.name} {list(value.shape)}" if isinstance(value, np.ndarray)
               else type(value).__name__)
        raise RecordError(f"{source}: record {example.get('id', '?')!r} field {name!r} is "
                          f"{got}, expected {' or '.join(dtypes)} of rank {rank}")
  return example
