"""The interface every codec implements, and the shape-bucketing both codecs share.

A codec turns a mono waveform into a *representation* and back:

- the GMM-VAE (Lin & He, ICLR 2025, §3.1): ``{"latents": float32 [F, D]}``, continuous;
- FACodec (NaturalSpeech 3, §3.2): ``{"codes": int [F, Q], "timbre": float32 [D_t]}``,
  discrete codes of the prosody, content and detail quantizers plus an utterance-level
  timbre vector.

`Representation` says which fields there are, so `jaxtts-codec encode-dataset` writes any
codec's output into stage-2 shards (per-frame fields cropped with the audio, per-utterance
ones beside them) and generators know what they get. A codec is loaded from a workdir by
`jaxtts.codec.registry.load_codec` without building a trainer.

Shapes compile once per bucket: waveforms are zero-padded to whole seconds (frames to the
frames of whole seconds) before the jitted encode/decode, and the output is cut back.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import os
from typing import Any, Mapping, Optional

import numpy as np
import soundfile as sf

from jaxtts.audio import io
from jaxtts.files import round_up

log = logging.getLogger("jaxtts.codec")

CONTINUOUS, DISCRETE = "continuous", "discrete"


class CodecInputError(ValueError):
  """A waveform or representation that this codec cannot take; the message names it."""


@dataclasses.dataclass(frozen=True)
class Field:
  """One array of a representation: ``per_frame`` fields are ``[F, *shape]``, the others
  ``[*shape]`` (one per utterance)."""
  dtype: str
  shape: tuple[int, ...]
  per_frame: bool = True

  def describe(self) -> dict[str, Any]:
    return {"dtype": self.dtype, "shape": list(self.shape), "per_frame": self.per_frame}


@dataclasses.dataclass(frozen=True)
class Representation:
  """What `Codec.encode` returns.

  ``kind`` is `CONTINUOUS` or `DISCRETE`; ``fields`` maps names to `Field`s; ``dim`` is the
  latent size D of a continuous codec; ``codebook_sizes`` has one entry per quantizer (Q of
  them) of a discrete codec; ``frame_rate`` is frames per second.
  """
  kind: str
  fields: Mapping[str, Field]
  frame_rate: float
  dim: Optional[int] = None
  codebook_sizes: tuple[int, ...] = ()

  def describe(self) -> dict[str, Any]:
    """JSON-ready description (written into stage-2 manifests)."""
    return {"kind": self.kind, "frame_rate": self.frame_rate, "dim": self.dim,
            "codebook_sizes": list(self.codebook_sizes),
            "fields": {k: f.describe() for k, f in self.fields.items()}}


class Codec(abc.ABC):
  """A trained codec for inference on single utterances (NumPy in, NumPy out).

  Subclasses set ``name``, ``workdir``, ``step``, ``sample_rate``, ``hop`` and
  ``representation`` and implement `_encode_padded` / `_decode_padded` on one padded
  utterance; this class checks inputs and buckets shapes.
  """

  name: str
  workdir: str
  step: int
  sample_rate: int
  hop: int
  representation: Representation
  corpus_dir: Optional[str] = None  # the corpus it trained on (evaluation's default)
  # Phone-level fields `encode_phones` returns ([P, *shape] each; none by default): stage 2
  # writes them beside the codes when the corpus has phone durations (jaxtts.codec.dataset).
  phone_fields: Mapping[str, "Field"] = {}

  def encode_phones(self, audio: np.ndarray, durations: np.ndarray) -> dict[str, np.ndarray]:
    """``audio [T]``, ``durations [P]`` -> the `phone_fields`: none for a codec without
    phone-level fields (the GMM-VAE); FACodec overrides it."""
    del audio, durations
    return {}

  # ------------------------------------------------------------------ subclass hooks
  @abc.abstractmethod
  def _encode_padded(self, wav: np.ndarray, num_frames: int) -> dict[str, np.ndarray]:
    """``wav [T]`` (T a whole number of bucket units, the first ``num_frames`` frames real)
    -> fields, per-frame ones ``[T / hop, ...]`` (utterance-level ones from the real frames
    only)."""

  @abc.abstractmethod
  def _decode_padded(self, rep: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fields with per-frame ones padded to whole bucket units -> ``wav [F * hop]``."""

  # ------------------------------------------------------------------ shapes
  @property
  def frames_per_unit(self) -> int:
    """Frames in one bucket unit (about a second of audio)."""
    return -(-int(self.sample_rate) // int(self.hop))

  def num_frames(self, num_samples: int) -> int:
    """Frames of a waveform of ``num_samples``: ``ceil(T / hop)``."""
    return -(-int(num_samples) // int(self.hop))

  # ------------------------------------------------------------------ the interface
  def encode(self, audio: np.ndarray) -> dict[str, np.ndarray]:
    """``audio [T]`` float in [-1, 1] at `sample_rate` -> the representation's fields, per-
    frame ones ``[ceil(T / hop), ...]``.

    The zero padding to a bucket sits past the end, so the last frames can differ slightly
    from an unpadded encode (the encoder's receptive field sees the padding).
    """
    wav = np.asarray(audio)
    if wav.dtype == np.int16:
      raise CodecInputError("encode: int16 audio; pass float audio (divide by 32768)")
    wav = wav.astype(np.float32)
    if wav.ndim != 1 or not len(wav):
      raise CodecInputError(f"encode expects a non-empty mono waveform [T], got shape "
                            f"{wav.shape}")
    unit = self.frames_per_unit * self.hop
    padded = np.pad(wav, (0, round_up(len(wav), unit) - len(wav)))
    frames = self.num_frames(len(wav))
    out = self._encode_padded(padded, frames)
    return {k: (np.asarray(v)[:frames] if self.representation.fields[k].per_frame
                else np.asarray(v)) for k, v in out.items()}

  def decode(self, representation: Mapping[str, np.ndarray]) -> np.ndarray:
    """The fields of `encode` (per-frame ones ``[F, ...]``) -> ``wav [F * hop]`` float32."""
    rep = self.check_representation(representation)
    frames = next(len(v) for k, v in rep.items() if self.representation.fields[k].per_frame)
    target = round_up(frames, self.frames_per_unit)
    padded = {k: (np.pad(v, [(0, target - frames)] + [(0, 0)] * (v.ndim - 1))
                  if self.representation.fields[k].per_frame else v) for k, v in rep.items()}
    return np.asarray(self._decode_padded(padded), np.float32)[:frames * self.hop]

  def check_representation(self, representation: Mapping[str, np.ndarray]
                           ) -> dict[str, np.ndarray]:
    """The fields as arrays of the declared dtypes and shapes; anything else is a
    `CodecInputError` naming the field."""
    if not isinstance(representation, Mapping):
      raise CodecInputError(f"decode takes a dict with fields "
                            f"{sorted(self.representation.fields)}, got "
                            f"{type(representation).__name__}")
    out, frames = {}, None
    for name, field in self.representation.fields.items():
      if name not in representation:
        raise CodecInputError(f"decode: missing field {name!r} (this {self.name} codec takes "
                              f"{sorted(self.representation.fields)})")
      v = np.asarray(representation[name])
      want = ((None,) if field.per_frame else ()) + tuple(field.shape)
      ok = v.ndim == len(want) and all(w is None or w == s for w, s in zip(want, v.shape))
      if not ok or (field.per_frame and not len(v)):
        shown = ["F" if w is None else w for w in want]
        raise CodecInputError(f"decode: field {name!r} must have shape {shown} for this "
                              f"{self.name} codec, got {list(v.shape)}")
      if field.per_frame:
        if frames is not None and len(v) != frames:
          raise CodecInputError(f"decode: field {name!r} has {len(v)} frames, others "
                                f"{frames}")
        frames = len(v)
      if np.dtype(field.dtype).kind in "iu" and v.dtype.kind not in "iu":
        raise CodecInputError(f"decode: field {name!r} holds codes: integer dtype needed, "
                              f"got {v.dtype}")
      out[name] = v.astype(field.dtype)
    return out

  def resynthesize(self, audio: np.ndarray) -> np.ndarray:
    """``decode(encode(audio))`` cut to ``len(audio)`` samples."""
    return self.decode(self.encode(audio))[:len(audio)]

  def load(self, path: str, resample: bool = True) -> np.ndarray:
    """A wav file as float32 ``[T]`` at `sample_rate`: resampled (logged) when ``resample``,
    else another rate is an error naming the file."""
    if not os.path.isfile(path):
      raise CodecInputError(f"{path}: no such audio file")
    try:
      rate = io.wav_sample_rate(path)
      if rate != self.sample_rate and resample:
        log.warning("%s: resampling %d Hz -> %d Hz", path, rate, self.sample_rate)
      return io.load_wav(path, self.sample_rate, resample=resample)
    except (RuntimeError, sf.SoundFileError) as e:  # libsndfile's errors
      raise CodecInputError(f"{path}: cannot read audio ({e})") from e

  def describe(self) -> dict[str, Any]:
    return {"codec": self.name, "workdir": self.workdir, "step": self.step,
            "sample_rate": int(self.sample_rate), "hop": int(self.hop),
            "representation": self.representation.describe()}
