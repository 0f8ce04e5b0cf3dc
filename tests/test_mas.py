"""Monotonic alignment search: the lax.scan pair against the VITS recurrence, cell by cell, and
against the Cython kernel of the `monotonic-alignment-search` package."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxtts.alignment import mas


def vits_cell_loop(ll: np.ndarray, frames: int, texts: int, sentinel: float) -> np.ndarray:
  """VITS's ``maximum_path_each`` transcribed cell by cell (frames on rows), in ``ll``'s dtype:
  ``[F, T]`` -> phoneme per frame (``-1`` past ``frames``)."""
  q = np.full(ll.shape, sentinel, ll.dtype)
  for f in range(frames):
    for t in range(max(0, texts + f - frames), min(texts, f + 1)):
      stay = sentinel if t == f else q[f - 1, t]
      if t == 0:
        move = 0.0 if f == 0 else sentinel
      else:
        move = q[f - 1, t - 1]
      q[f, t] = max(stay, move) + ll[f, t]
  index = np.full(ll.shape[0], -1, np.int32)
  cur = texts - 1
  for f in range(frames - 1, -1, -1):
    index[f] = cur
    if cur != 0 and (cur == f or q[f - 1, cur] < q[f - 1, cur - 1]):
      cur -= 1
  return index


def cython_paths(ll: np.ndarray, frames: np.ndarray, texts: np.ndarray) -> np.ndarray:
  """The package's Cython kernel (Glow-TTS layout ``[B, T, F]``) -> phoneme per frame ``[B, F]``."""
  from monotonic_alignment_search.core import maximum_path_c
  values = np.ascontiguousarray(np.swapaxes(ll, 1, 2), np.float32)               # [B, T, F]
  paths = np.zeros(values.shape, np.int32)
  maximum_path_c(paths, values, texts.astype(np.int32), frames.astype(np.int32))
  index = np.argmax(paths, axis=1).astype(np.int32)                               # [B, F]
  return np.where(paths.sum(axis=1) > 0, index, -1)


def random_batch(seed: int, b: int, f: int, t: int, ties: bool):
  rng = np.random.default_rng(seed)
  if ties:   # few distinct values: most comparisons are ties
    ll = -rng.integers(0, 3, size=(b, f, t)).astype(np.float32)
  else:
    ll = rng.normal(size=(b, f, t)).astype(np.float32) * 3 - 2
  texts = rng.integers(1, t + 1, size=b)
  frames = np.maximum(texts, rng.integers(1, f + 1, size=b))
  texts[0], frames[0] = t, f                    # one unpadded row
  frames[1] = texts[1]                          # one row with T_text == T_frames
  return ll, frames, texts


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", [(6, 40, 12), (4, 16, 16)])
def test_scan_equals_vits_cell_loop_and_cython(shape, ties):
  b, f, t = shape
  ll, frames, texts = random_batch(sum(shape) + ties, b, f, t, ties)
  got = np.asarray(mas.monotonic_alignment_search(jnp.asarray(ll), jnp.asarray(frames),
                                                  jnp.asarray(texts)))
  want = np.stack([vits_cell_loop(ll[i], frames[i], texts[i], mas.SENTINEL) for i in range(b)])
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got, cython_paths(ll, frames, texts))
  np.testing.assert_array_equal(
      got, mas.monotonic_alignment_search_reference(ll, frames, texts))


def test_the_path_is_monotonic_and_covers_every_phoneme():
  b, f, t = 6, 40, 12
  ll, frames, texts = random_batch(3, b, f, t, ties=False)
  index = mas.monotonic_alignment_search(jnp.asarray(ll), jnp.asarray(frames), jnp.asarray(texts))
  durations = np.asarray(mas.path_durations(index, t))
  index = np.asarray(index)
  for i in range(b):
    row = index[i, :frames[i]]
    assert row[0] == 0 and row[-1] == texts[i] - 1
    assert set(np.diff(row)) <= {0, 1}
    assert (index[i, frames[i]:] == -1).all()
    assert (durations[i, :texts[i]] >= 1).all() and (durations[i, texts[i]:] == 0).all()
    assert durations[i].sum() == frames[i]
  path = np.asarray(mas.alignment_path(jnp.asarray(index), t))
  np.testing.assert_array_equal(path.sum(axis=1), durations)


def test_the_best_path_scores_at_least_any_other_monotonic_path():
  # Exhaustive over every monotonic path of a 7-frame, 4-phoneme row: C(6, 3) = 20 paths.
  from itertools import combinations
  rng = np.random.default_rng(5)
  ll = rng.normal(size=(1, 7, 4)).astype(np.float32)
  index = np.asarray(mas.monotonic_alignment_search(jnp.asarray(ll), jnp.asarray([7]),
                                                    jnp.asarray([4])))[0]
  best = ll[0, np.arange(7), index].sum()
  scores = []
  for steps in combinations(range(1, 7), 3):     # the frames where the path moves on
    row = np.cumsum(np.isin(np.arange(7), steps))
    scores.append(ll[0, np.arange(7), row].sum())
  assert np.isclose(best, max(scores), rtol=0, atol=1e-5)


def test_rows_with_more_phonemes_than_frames_come_back_empty_and_are_refused():
  ll = np.zeros((3, 8, 10), np.float32)
  frames, texts = np.array([8, 5, 8]), np.array([10, 6, 0])
  index = np.asarray(mas.monotonic_alignment_search(jnp.asarray(ll), jnp.asarray(frames),
                                                    jnp.asarray(texts)))
  assert (index == -1).all()
  np.testing.assert_array_equal(np.asarray(mas.alignable(jnp.asarray(frames), jnp.asarray(texts))),
                                [False, False, False])
  with pytest.raises(ValueError, match="more phonemes than frames"):
    mas.check_alignable(frames, texts, what="shard 3")
  np.testing.assert_array_equal(mas.check_alignable([8, 5], [4, 6]), [True, False])


def test_the_cython_kernels_sentinel_mis_aligns_where_ours_does_not():
  # Log-likelihoods of about -5e7 per cell: a path over 40 frames sums to -2e9, below the Cython
  # kernel's -1e9 sentinel, which it injects raw at the diagonal and at phoneme 0. Ours keeps
  # the best path, and so it does with a -1e9 sentinel too (unreachable cells accumulate).
  rng = np.random.default_rng(0)
  f, t = 40, 6
  ll = (-5e7 * (1 + 0.01 * rng.random((1, f, t)))).astype(np.float32)
  frames, texts = np.array([f]), np.array([t])
  want = vits_cell_loop(ll[0].astype(np.float64), f, t, -np.inf)
  args = jnp.asarray(ll), jnp.asarray(frames), jnp.asarray(texts)
  np.testing.assert_array_equal(np.asarray(mas.monotonic_alignment_search(*args))[0], want)
  np.testing.assert_array_equal(
      np.asarray(mas.monotonic_alignment_search(*args, sentinel=-1e9))[0], want)
  assert not np.array_equal(cython_paths(ll, frames, texts)[0], want)
