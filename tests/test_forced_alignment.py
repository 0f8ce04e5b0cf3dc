"""Forced alignment (VITS monotonic alignment search via librosa's DTW) against a plain loop."""

import numpy as np
import pytest

from jaxtts.alignment.forced import align_durations


def _reference(log_probs):
  """The recurrence as a double loop: ``(durations [P], best score)``."""
  num_frames, num_phones = log_probs.shape
  q = np.full((num_frames, num_phones), -np.inf)
  q[0, 0] = log_probs[0, 0]
  for f in range(1, num_frames):
    for p in range(num_phones):
      prev = q[f - 1, p] if p == 0 else max(q[f - 1, p], q[f - 1, p - 1])
      q[f, p] = log_probs[f, p] + prev
  durations = np.zeros(num_phones, dtype=np.int64)
  p = num_phones - 1
  for f in range(num_frames - 1, -1, -1):
    durations[p] += 1
    if f > 0 and p > 0 and q[f - 1, p - 1] > q[f - 1, p]:
      p -= 1
  assert p == 0
  return durations, q[-1, -1]


def _score(log_probs, durations):
  phone = np.repeat(np.arange(len(durations)), durations)
  return log_probs[np.arange(len(phone)), phone].sum()


@pytest.mark.parametrize("num_frames,num_phones", [
    (1, 1), (7, 1), (5, 5), (6, 5), (12, 4), (30, 9), (40, 17), (64, 3)])
def test_matches_reference(num_frames, num_phones):
  rng = np.random.default_rng(1000 * num_frames + num_phones)
  for _ in range(3):
    log_probs = np.log(rng.dirichlet(np.ones(num_phones), size=num_frames))          # [F, P]
    durations = align_durations(log_probs)
    ref_durations, ref_score = _reference(log_probs)
    assert durations.dtype == np.int32 and durations.shape == (num_phones,)
    assert durations.sum() == num_frames and durations.min() >= 1
    np.testing.assert_allclose(_score(log_probs, durations), ref_score, rtol=1e-6)
    np.testing.assert_allclose(_score(log_probs, ref_durations), ref_score, rtol=1e-6)
    # Random float scores tie with probability 0, so the paths agree as well.
    np.testing.assert_array_equal(durations, ref_durations)


def test_known_durations():
  truth = np.array([3, 1, 4])
  phone = np.repeat(np.arange(3), truth)
  log_probs = np.full((truth.sum(), 3), -10.0)
  log_probs[np.arange(truth.sum()), phone] = -0.1
  np.testing.assert_array_equal(align_durations(log_probs), truth)


def test_neg_inf_cells_are_avoided():
  log_probs = np.zeros((5, 2))
  log_probs[:3, 1] = -np.inf                 # phoneme 1 impossible on frames 0-2
  log_probs[4, 0] = -np.inf                  # phoneme 0 impossible on frame 4
  # frame 3 ties between the phonemes; the path stays on phoneme 1 when backtracking
  np.testing.assert_array_equal(align_durations(log_probs), [3, 2])
  with pytest.raises(ValueError, match="finite score"):
    align_durations(np.full((4, 2), -np.inf))


def test_too_few_frames():
  with pytest.raises(ValueError, match="F=3 frames cannot hold P=5 phonemes"):
    align_durations(np.zeros((3, 5)))


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((2, 3, 4)), np.zeros((3, 0))])
def test_bad_shapes(bad):
  with pytest.raises(ValueError):
    align_durations(bad)


def test_nan():
  log_probs = np.zeros((4, 2))
  log_probs[1, 1] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    align_durations(log_probs)
