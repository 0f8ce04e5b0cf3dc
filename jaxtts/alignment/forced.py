"""Forced alignment: per-frame phone log-probabilities -> per-phoneme durations.

NaturalSpeech 3's prompt durations: the prompt's phone durations come from its transcript and
audio. Given ``log_probs [F, P]``, ``L[f, p] = log p(phoneme p of the transcript | frame f)``,
the hard monotonic alignment puts every frame on exactly one phoneme, phonemes in transcript
order, each phoneme on at least one frame, and maximises the summed log-probability. This is
the monotonic alignment search of VITS (Kim et al., "Conditional Variational Autoencoder with
Adversarial Learning for End-to-End Text-to-Speech", ICML 2021)::

    Q[0, 0] = L[0, 0]
    Q[f, p] = L[f, p] + max(Q[f - 1, p], Q[f - 1, p - 1])

ending at ``(F - 1, P - 1)`` and backtracked; phoneme ``p``'s duration is the number of frames
the path spends on it.

The search is librosa's DTW (`librosa.sequence.dtw`) on the cost ``C = -L`` (frames on rows,
phonemes on columns) with the two steps ``(1, 0)`` (next frame, same phoneme) and ``(1, 1)``
(next frame, next phoneme), unit multiplicative and zero additive weights: its accumulated cost
is ``D = -Q``. librosa also keeps its default steps ``(1, 1), (0, 1), (1, 0)`` but gives them
infinite weights, so they never win; ``(0, 1)`` (a phoneme without a frame) is thereby ruled
out. On ties the path stays on the current phoneme (librosa takes the first best step).
"""

from __future__ import annotations

import librosa
import numpy as np

# (frames, phonemes) advanced by one step: stay on the phoneme, or move to the next one.
_STEPS = np.array([[1, 0], [1, 1]], dtype=np.uint32)


def align_durations(log_probs: np.ndarray) -> np.ndarray:
  """Durations of the best monotonic alignment of ``F`` frames to ``P`` phonemes.

  Args:
    log_probs: ``[F, P]`` float, ``log p(phoneme p | frame f)`` for the transcript's ``P``
      phonemes in order. ``-inf`` marks an impossible pairing; NaN and ``+inf`` are refused.

  Returns:
    ``durations [P]`` int32, each ``>= 1``, summing to ``F``: frames per phoneme on the path
    maximising ``Σ_f log_probs[f, phone(f)]``.

  Raises:
    ValueError: ``log_probs`` is not 2-D, is empty, holds NaN or ``+inf``, has fewer frames
      than phonemes, or admits no path of finite score.
  """
  log_probs = np.asarray(log_probs)
  if log_probs.ndim != 2:
    raise ValueError(f"log_probs must be 2-D [F, P], got shape {log_probs.shape}")
  num_frames, num_phones = log_probs.shape
  if num_phones == 0:
    raise ValueError(f"log_probs has no phonemes (shape {log_probs.shape})")
  if num_frames < num_phones:
    raise ValueError(f"F={num_frames} frames cannot hold P={num_phones} phonemes (each phoneme "
                     f"needs at least one frame)")
  cost = -log_probs.astype(np.float64)                                            # [F, P]
  if np.isnan(cost).any():
    raise ValueError("log_probs contains NaN")
  if np.isneginf(cost).any():
    raise ValueError("log_probs contains +inf")
  try:
    _, path = librosa.sequence.dtw(
        C=cost, step_sizes_sigma=_STEPS, weights_add=np.zeros(2), weights_mul=np.ones(2),
        subseq=False, backtrack=True)                                             # [F, 2]
  except librosa.ParameterError as exc:
    raise ValueError(f"no monotonic alignment of finite score for {num_frames} frames and "
                     f"{num_phones} phonemes (too many -inf log-probs): {exc}") from exc
  # Every step advances one frame, so the path visits each frame exactly once.
  assert path.shape[0] == num_frames, path.shape
  return np.bincount(path[:, 1], minlength=num_phones).astype(np.int32)
