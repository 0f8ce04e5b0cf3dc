"""Frame-level F0 and voicing with WORLD (pyworld): DIO + StoneMask, one value per hop frame.

DIO [Morise et al. 2009, "Fast and reliable F0 estimation method based on the period
extraction of vocal fold vibration"] estimates F0 candidates from zero-crossing intervals of
band-passed signals; StoneMask refines each estimate from the instantaneous frequency of the
fundamental. This is the F0 of FastSpeech 2 and of the NaturalSpeech / FACodec recipes
(``../shared/research/ns3_facodec.md``: the prosody head's F0 target). ``librosa.pyin`` would
also do, but costs ~4 s per second of audio on this machine against ~7 ms for DIO.

Frames: for audio of ``T`` samples, ``F = T // hop_length`` frames, frame ``f`` covering
samples ``[f * hop, (f + 1) * hop)`` (the frames of ``durations``, phone labels and a
hop-200 codec). Its F0 is estimated at the frame's centre, sample ``f * hop + hop // 2``:
DIO's k-th analysis time is ``k * frame_period`` from the start of the signal it sees, so it
is run on ``audio[hop // 2:]`` with ``frame_period = 1000 * hop / sample_rate`` ms.

Unvoiced frames have ``f0 == 0`` (WORLD's convention) and ``voiced == False``; no
interpolation is applied (models that want a continuous contour interpolate themselves).
"""

from __future__ import annotations

import warnings

import numpy as np

with warnings.catch_warnings():
  # pyworld 0.3.5's __init__ imports pkg_resources (deprecated) for its version string.
  warnings.simplefilter("ignore", UserWarning)
  warnings.simplefilter("ignore", DeprecationWarning)
  import pyworld

METHOD = "pyworld.dio+stonemask"
F0_FLOOR = 50.0   # Hz, below the lowest espeak / adult voices
F0_CEIL = 800.0   # Hz, WORLD's default ceiling


def settings(f0_floor: float = F0_FLOOR, f0_ceil: float = F0_CEIL) -> dict:
  """The analysis settings, as recorded in a manifest's ``features.f0`` entry."""
  return {"method": METHOD, "pyworld_version": str(getattr(pyworld, "__version__", "?")),
          "f0_floor": float(f0_floor), "f0_ceil": float(f0_ceil)}


def compute_f0(audio: np.ndarray, sample_rate: int, hop_length: int, *,
               f0_floor: float = F0_FLOOR, f0_ceil: float = F0_CEIL
               ) -> tuple[np.ndarray, np.ndarray]:
  """F0 in Hz and voicing of every hop frame (module docstring for the frame convention).

  Args:
    audio: [T] mono waveform, int16 PCM (scaled by 1/32768) or float in [-1, 1].
    sample_rate: Hz.
    hop_length: samples per frame.
    f0_floor: lowest F0 DIO searches (Hz).
    f0_ceil: highest F0 DIO searches (Hz).

  Returns:
    ``(f0 float32 [F], voiced bool [F])`` with ``F = T // hop_length``; ``f0`` is 0 where
    ``voiced`` is False.
  """
  audio = np.asarray(audio)
  if audio.ndim != 1:
    raise ValueError(f"compute_f0 expects mono audio [T], got shape {audio.shape}")
  if hop_length <= 0 or sample_rate <= 0:
    raise ValueError(f"need positive sample_rate and hop_length, got {sample_rate}, "
                     f"{hop_length}")
  if not 0 < f0_floor < f0_ceil:
    raise ValueError(f"need 0 < f0_floor < f0_ceil, got {f0_floor}, {f0_ceil}")
  num_frames = len(audio) // hop_length
  f0 = np.zeros((num_frames,), np.float32)
  if num_frames == 0:
    return f0, np.zeros((0,), bool)
  scale = 1.0 / 32768.0 if np.issubdtype(audio.dtype, np.integer) else 1.0
  x = np.ascontiguousarray(audio[hop_length // 2:], dtype=np.float64) * scale
  period_ms = 1000.0 * hop_length / sample_rate
  coarse, times = pyworld.dio(x, sample_rate, f0_floor=float(f0_floor), f0_ceil=float(f0_ceil),
                              frame_period=period_ms)
  refined = pyworld.stonemask(x, coarse, times, sample_rate)
  n = min(num_frames, len(refined))  # DIO gives F or F + 1 values (last one past the audio).
  f0[:n] = refined[:n]
  f0[~np.isfinite(f0)] = 0.0
  f0[f0 < 0] = 0.0
  return f0, f0 > 0
