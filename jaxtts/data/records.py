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

import struct
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


# The same as dtype objects (a dtype's ``.name`` is computed in Python on every access).
_OPTIONAL_DTYPES = {name: (frozenset(np.dtype(d) for d in dtypes), rank)
                    for name, (dtypes, rank) in OPTIONAL_FIELDS.items()}


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


# ------------------------------------------------------------ zero-copy decoding
#
# `msgpack.unpackb` copies every ``bin`` into its own bytes object before `_unpack` wraps it:
# the whole record once more (0.3-1.4 MB per element for the paper presets, 25-90 us with the
# GIL held). `_decode_zero_copy` parses the msgpack subset `encode_example` writes in Python
# and returns arrays that are views of the record's bytes (read-only, like `_unpack`'s); it
# reads `_ND_HEAD`-shaped array maps (what `_pack` writes) without building their dicts.
# Anything else (ext types, non-str map keys, trailing bytes, a non-``bytes`` buffer, any
# error) makes `decode_example` use msgpack instead, so results and errors are msgpack's.

_UINT = {1: struct.Struct(">B").unpack_from, 2: struct.Struct(">H").unpack_from,
         4: struct.Struct(">I").unpack_from, 8: struct.Struct(">Q").unpack_from}
_INT = {1: struct.Struct(">b").unpack_from, 2: struct.Struct(">h").unpack_from,
        4: struct.Struct(">i").unpack_from, 8: struct.Struct(">q").unpack_from}
_F32 = struct.Struct(">f").unpack_from
_F64 = struct.Struct(">d").unpack_from
# A 4-entry msgpack map, "__nd__": true, "dtype": the start of every array `_pack` writes.
_ND_HEAD = b"\x84\xa6__nd__\xc3\xa5dtype"
_ND_SHAPE = b"\xa5shape"
_ND_DATA = b"\xa4data"
_DTYPES: dict[bytes, np.dtype] = {}


class _Unsupported(Exception):
  """Outside `_decode_zero_copy`'s subset: decode with msgpack."""


class _Bin:
  """A ``bin`` value: its payload is ``data[start:stop]``."""
  __slots__ = ("start", "stop")

  def __init__(self, start: int, stop: int):
    self.start, self.stop = start, stop


def _plain(data: bytes, value: Any) -> Any:
  return data[value.start:value.stop] if type(value) is _Bin else value


def _array_map(data: bytes, pos: int) -> tuple[np.ndarray, int] | None:
  """The `_pack` array at ``pos`` (just past `_ND_HEAD`) as a view, or None if it differs."""
  b = data[pos]
  if not 0xA0 <= b <= 0xBF:
    return None
  n = b & 0x1F
  name = data[pos + 1:pos + 1 + n]
  dtype = _DTYPES.get(name)
  if dtype is None:
    dtype = _DTYPES[name] = np.dtype(name.decode("utf-8"))
  pos += 1 + n
  if not data.startswith(_ND_SHAPE, pos):
    return None
  pos += len(_ND_SHAPE)
  b = data[pos]
  if not 0x90 <= b <= 0x9F:
    return None
  pos += 1
  shape = []
  for _ in range(b & 0x0F):
    d = data[pos]
    if d <= 0x7F:
      shape.append(d)
      pos += 1
    elif 0xCC <= d <= 0xCF:
      w = 1 << (d - 0xCC)
      shape.append(_UINT[w](data, pos + 1)[0])
      pos += 1 + w
    else:
      return None
  if not data.startswith(_ND_DATA, pos):
    return None
  pos += len(_ND_DATA)
  b = data[pos]
  if not 0xC4 <= b <= 0xC6:
    return None
  w = 1 << (b - 0xC4)
  size = _UINT[w](data, pos + 1)[0]
  pos += 1 + w
  if size % dtype.itemsize or pos + size > len(data):
    return None
  array = np.frombuffer(data, dtype, size // dtype.itemsize, pos).reshape(shape)
  return array, pos + size


def _map(data: bytes, pos: int, n: int) -> tuple[Any, int]:
  if n == 4 and data.startswith(_ND_HEAD, pos - 1):
    got = _array_map(data, pos - 1 + len(_ND_HEAD))
    if got is not None:
      return got
  out = {}
  for _ in range(n):
    key, pos = _value(data, pos)
    key = _plain(data, key)
    if not isinstance(key, (str, bytes)):
      raise _Unsupported("map key")  # msgpack's strict_map_key error
    out[key], pos = _value(data, pos)
  for key, value in out.items():
    if type(value) is _Bin:
      out[key] = data[value.start:value.stop]
  if out.get("__nd__"):
    raise _Unsupported("array map")  # `_unpack` on another layout: msgpack decides
  return out, pos


def _list(data: bytes, pos: int, n: int) -> tuple[list, int]:
  out = []
  for _ in range(n):
    value, pos = _value(data, pos)
    out.append(_plain(data, value))
  return out, pos


def _value(data: bytes, pos: int) -> tuple[Any, int]:
  """The msgpack value at ``pos`` and the position after it (``bin`` as `_Bin`)."""
  b = data[pos]
  pos += 1
  if b <= 0x7F:
    return b, pos
  if b >= 0xE0:
    return b - 0x100, pos
  if b <= 0x8F:
    return _map(data, pos, b & 0x0F)
  if b <= 0x9F:
    return _list(data, pos, b & 0x0F)
  if b <= 0xBF:
    n = b & 0x1F
    return data[pos:pos + n].decode("utf-8"), pos + n
  if b == 0xC0:
    return None, pos
  if b == 0xC2:
    return False, pos
  if b == 0xC3:
    return True, pos
  if 0xC4 <= b <= 0xC6:
    w = 1 << (b - 0xC4)
    n = _UINT[w](data, pos)[0]
    pos += w
    if pos + n > len(data):
      raise _Unsupported("truncated")
    return _Bin(pos, pos + n), pos + n
  if b == 0xCA:
    return _F32(data, pos)[0], pos + 4
  if b == 0xCB:
    return _F64(data, pos)[0], pos + 8
  if 0xCC <= b <= 0xCF:
    w = 1 << (b - 0xCC)
    return _UINT[w](data, pos)[0], pos + w
  if 0xD0 <= b <= 0xD3:
    w = 1 << (b - 0xD0)
    return _INT[w](data, pos)[0], pos + w
  if 0xD9 <= b <= 0xDB:
    w = 1 << (b - 0xD9)
    n = _UINT[w](data, pos)[0]
    pos += w
    if pos + n > len(data):
      raise _Unsupported("truncated")
    return data[pos:pos + n].decode("utf-8"), pos + n
  if b in (0xDC, 0xDD):
    w = 2 if b == 0xDC else 4
    return _list(data, pos + w, _UINT[w](data, pos)[0])
  if b in (0xDE, 0xDF):
    w = 2 if b == 0xDE else 4
    return _map(data, pos + w, _UINT[w](data, pos)[0])
  raise _Unsupported(f"type byte {b:#x}")  # ext types, reserved 0xc1


def _decode_zero_copy(data: bytes) -> Any:
  """What ``msgpack.unpackb(data, object_hook=_unpack, raw=False)`` returns, with array
  payloads as views of ``data``; raises `_Unsupported` (or anything) where it may differ."""
  if type(data) is not bytes:
    raise _Unsupported("buffer type")
  value, pos = _value(data, 0)
  if pos != len(data):
    raise _Unsupported("trailing bytes")
  return _plain(data, value)


def encode_example(example: Mapping[str, Any]) -> bytes:
  """Serializes one utterance dict (keys in the given order) to bytes."""
  return msgpack.packb(dict(example), default=_pack, use_bin_type=True, strict_types=False)


def decode_example(data: bytes, *, source: str = "<record>") -> dict:
  """Inverse of `encode_example`; raises `RecordError` naming ``source`` on bad bytes.

  Arrays are read-only views of ``data`` (zero-copy; msgpack's decoding where the record is
  outside the subset the fast path reads, with the same result).
  """
  try:
    example = _decode_zero_copy(data)
  except Exception:  # pylint: disable=broad-except
    try:
      example = msgpack.unpackb(data, object_hook=_unpack, raw=False)
    except Exception as e:  # msgpack raises several unrelated exception types.
      raise RecordError(f"{source}: cannot decode record ({type(e).__name__}: {e})") from e
  if not isinstance(example, dict):
    raise RecordError(f"{source}: record is a {type(example).__name__}, expected a map")
  missing = [k for k in REQUIRED_FIELDS if k not in example]
  if missing:
    raise RecordError(f"{source}: record {example.get('id', '?')!r} lacks fields {missing}")
  for name, (dtypes, rank) in _OPTIONAL_DTYPES.items():
    if name in example:
      value = example[name]
      if (not isinstance(value, np.ndarray) or value.dtype not in dtypes
          or value.ndim != rank):
        dtypes = OPTIONAL_FIELDS[name][0]
        got = (f"{value.dtype.name} {list(value.shape)}" if isinstance(value, np.ndarray)
               else type(value).__name__)
        raise RecordError(f"{source}: record {example.get('id', '?')!r} field {name!r} is "
                          f"{got}, expected {' or '.join(dtypes)} of rank {rank}")
  return example
