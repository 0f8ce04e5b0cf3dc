"""Shared pieces of the zero-shot TTS evaluation backends (`asr`, `speaker`, `mos`, `diversity`).

* `BackendUnavailableError`: a model or library a metric needs is not installed or not found;
  the message says what to ``pip install`` or which path to pass.
* `load_audio`: one way in for every backend: a file path (any rate, any channel count) or an
  array (int16 PCM or float in [-1, 1], with its ``sample_rate``) becomes mono float32 ``[T]``
  at the backend's rate (16 kHz for Whisper, GE2E, WavLM and DNSMOS), resampled with soxr HQ
  (`jaxtts.audio.io.resample`).
* `import_backend`: lazy import of a heavy optional library (torch, faster-whisper, ...) with
  an install hint instead of a bare ``ImportError``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional, Union

import numpy as np
import soundfile as sf

from jaxtts.audio.io import resample

AudioLike = Union[str, os.PathLike, np.ndarray]
EVAL_SAMPLE_RATE = 16000


class BackendUnavailableError(RuntimeError):
  """A metric's model or library is missing; the message says how to get it."""


def import_backend(module: str, install: str) -> ModuleType:
  """Imports ``module`` or raises `BackendUnavailableError` saying ``pip install <install>``."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise BackendUnavailableError(f"{module} is not importable ({e}); install it with: "
                                  f"pip install {install}") from e


def load_audio(x: AudioLike, sample_rate: Optional[int] = None,
               target_rate: int = EVAL_SAMPLE_RATE) -> np.ndarray:
  """Mono float32 ``[T]`` at ``target_rate`` Hz from a file or an array.

  Args:
    x: path of an audio file (anything libsndfile reads; channels are averaged; its own rate
      is used and ``sample_rate`` must be None or equal to it), or an array ``[T]`` of int16
      PCM (scaled by 1/32768) or float in [-1, 1].
    sample_rate: rate of an array input (Hz); required for arrays.
    target_rate: rate of the result (Hz).

  Raises:
    FileNotFoundError: the path does not exist.
    ValueError: an unreadable file (the message names it), a missing ``sample_rate`` for an
      array, a non-1-D array, non-finite samples, or another integer type than int16.
  """
  if isinstance(x, (str, os.PathLike)):
    path = os.fspath(x)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"audio file {path!r} does not exist")
    try:
      wav, sr = sf.read(path, dtype="float32", always_2d=True)  # [T, C]
    except RuntimeError as e:  # soundfile.LibsndfileError
      raise ValueError(f"cannot read audio file {path!r}: {e}") from e
    if sample_rate is not None and int(sample_rate) != int(sr):
      raise ValueError(f"{path!r} is {sr} Hz but sample_rate={sample_rate} was given")
    return resample(wav.mean(axis=1), int(sr), int(target_rate))
  wav = np.asarray(x)
  if sample_rate is None:
    raise ValueError("load_audio: sample_rate is required for array input")
  if wav.ndim != 1:
    raise ValueError(f"load_audio expects mono audio [T], got shape {wav.shape}")
  if np.issubdtype(wav.dtype, np.integer):
    if wav.dtype != np.int16:
      raise ValueError(f"load_audio: integer audio must be int16 PCM, got {wav.dtype}")
    wav = wav.astype(np.float32) / 32768.0
  wav = wav.astype(np.float32)
  if not np.all(np.isfinite(wav)):
    raise ValueError("load_audio: audio contains NaN or infinite samples")
  return resample(wav, int(sample_rate), int(target_rate))
