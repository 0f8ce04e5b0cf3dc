"""Waveform I/O and resampling (host side, NumPy).

Waveforms are mono float32 arrays ``[T]`` in ``[-1, 1]``. Files are read with ``soundfile``
(anything libsndfile reads: WAV, FLAC, OGG, ...), multi-channel audio is averaged to mono, and
resampling uses ``soxr`` (high quality).
"""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np
import soundfile as sf
import soxr

PathLike = Union[str, os.PathLike]


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
  """Resamples ``wav`` [T] (or [T, C]) from ``orig_sr`` to ``target_sr`` Hz with soxr 'HQ'.

  Returns float32 of length ``round(T * target_sr / orig_sr)``; returns the input (as float32)
  unchanged when the rates are equal.
  """
  wav = np.asarray(wav, dtype=np.float32)
  if int(orig_sr) <= 0 or int(target_sr) <= 0:
    raise ValueError(f"resample: sample rates must be positive, got {orig_sr} -> {target_sr}")
  if int(orig_sr) == int(target_sr):
    return wav
  out = soxr.resample(wav, int(orig_sr), int(target_sr), quality="HQ")
  return np.asarray(out, dtype=np.float32)


def wav_sample_rate(path: PathLike) -> int:
  """The native sample rate of an audio file (Hz), read from its header."""
  return int(sf.info(os.fspath(path)).samplerate)


def load_wav(path: PathLike, sample_rate: Optional[int] = None, *,
             resample: bool = True) -> np.ndarray:  # pylint: disable=redefined-outer-name
  """Reads an audio file as mono float32 ``[T]``.

  Args:
    path: file to read.
    sample_rate: the rate the caller wants; ``None`` keeps the file's rate (see
      ``wav_sample_rate`` to learn it).
    resample: when the file's rate differs from ``sample_rate``, resample with soxr if True,
      otherwise raise ``ValueError`` naming the file and both rates.

  Returns:
    float32 ``[T]``; channels are averaged.
  """
  wav, sr = sf.read(os.fspath(path), dtype="float32", always_2d=True)  # [T, C]
  wav = wav.mean(axis=1).astype(np.float32)
  if sample_rate is not None and int(sr) != int(sample_rate):
    if not resample:
      raise ValueError(f"{os.fspath(path)}: sample rate is {sr} Hz but {sample_rate} Hz was "
                       "requested (pass resample=True to convert)")
    wav = _resample(wav, int(sr), int(sample_rate))
  return wav


_resample = resample  # `load_wav`'s keyword argument shadows the function name.


def save_wav(path: PathLike, wav: np.ndarray, sample_rate: int) -> None:
  """Writes mono ``wav`` [T] (float in [-1, 1]; clipped) as 16-bit PCM.

  Conversion is ``clip(round(wav * 32768), -32768, 32767)``, the inverse of soundfile's
  ``int16 / 32768`` on reading, so a saved and re-read signal in [-1, 1) differs from the
  original by at most ``0.5 / 32768`` (values >= 32767/32768 saturate).
  """
  wav = np.asarray(wav)
  if wav.ndim != 1:
    raise ValueError(f"save_wav expects mono audio [T], got shape {wav.shape}")
  if np.issubdtype(wav.dtype, np.integer):
    if wav.dtype != np.int16:
      raise ValueError(f"save_wav: integer audio must be int16, got {wav.dtype}")
    pcm = wav
  else:
    x = np.nan_to_num(wav.astype(np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
  parent = os.path.dirname(os.fspath(path))
  if parent:
    os.makedirs(parent, exist_ok=True)
  sf.write(os.fspath(path), pcm, int(sample_rate), subtype="PCM_16")
