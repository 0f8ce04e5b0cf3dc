"""Stochastic hard monotonic alignment (GMM-LM §3.3 eqs. 8-11, Algorithm 1)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtts.alignment import monotonic as mono


def _key(seed):
  # rbg keys: threefry programs take seconds to compile on the 2-core CI machine
  return jax.random.key(seed, impl="rbg")


def _normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _mask(lengths, num_ph):
  return np.arange(num_ph)[None, :] < np.asarray(lengths)[:, None]


def _problem(seed, batch, frames, num_ph, scale=2.0, offset=1.0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, num_ph + 1, size=batch)
  lengths[0] = 1
  lengths[-1] = num_ph
  e = (scale * rng.standard_normal((batch, frames, num_ph)) + offset).astype(np.float32)
  return jnp.asarray(e), _mask(lengths, num_ph), lengths


def _check_hard_path(alpha, lengths):
  alpha = np.asarray(alpha)
  batch, frames, num_ph = alpha.shape
  assert set(np.unique(alpha)) <= {0.0, 1.0}
  np.testing.assert_array_equal(alpha.sum(-1), 1.0)  # one-hot rows
  pos = alpha.argmax(-1)  # [B, I]
  steps = np.diff(np.concatenate([np.zeros((batch, 1), int), pos], axis=1), axis=1)
  assert steps.min() >= 0 and steps.max() <= 1  # monotonic, at most one phoneme per step
  for b in range(batch):
    assert pos[b].max() <= lengths[b] - 1  # never on padding
    np.testing.assert_array_equal(alpha[b, :, lengths[b]:], 0.0)
    at_end = np.nonzero(pos[b] == lengths[b] - 1)[0]
    if at_end.size:
      assert np.all(pos[b, at_end[0]:] == lengths[b] - 1)  # stays at the end


SHAPES = [(1, 1, 1), (3, 17, 5), (6, 40, 9)]
SOFT = ("gumbel", "noise", "expected")
HARD = ("st_gumbel", "threshold")


@jax.jit
def _all_modes(key, e, mask):
  """u and alpha for every mode (one compilation per shape keeps the tests fast)."""
  modes = SOFT + HARD
  u = {m: mono.sample_stay(key, e, 0.5, mode=m) for m in modes}
  uniform = jax.nn.softmax(jnp.where(mask, 0.0, -jnp.inf), axis=-1)  # uniform start
  n = len(modes)  # one scan over all modes stacked along the batch, plus a uniform alpha0 row
  alpha0 = jnp.concatenate([jnp.tile(mono.initial_alignment(mask), (n, 1)), uniform])
  stacked = mono.monotonic_alignment(jnp.concatenate([u[m] for m in modes] + [u["expected"]]),
                                     jnp.tile(mask, (n + 1, 1)), alpha0)
  parts = jnp.split(stacked, n + 1)
  return u, dict(zip(modes, parts)), uniform, parts[-1]


@pytest.mark.parametrize("shape", SHAPES)
def test_scan_matches_reference_and_hard_paths(shape):
  e, mask, lengths = _problem(sum(shape), *shape, offset=0.5)
  u, alpha, alpha0, alpha_uniform = _all_modes(_key(2), e, mask)
  for m in HARD:  # exact one-hot monotonic paths, identical to the NumPy loop
    _check_hard_path(alpha[m], lengths)
    np.testing.assert_array_equal(alpha[m], mono.monotonic_alignment_reference(u[m], mask))
  for m in SOFT:
    ref = mono.monotonic_alignment_reference(u[m], mask)
    np.testing.assert_allclose(alpha[m], ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(alpha[m]).sum(-1), 1.0, atol=1e-5)  # unit mass
    np.testing.assert_array_equal(np.asarray(alpha[m])[~np.broadcast_to(
        mask[:, None], ref.shape)], 0.0)  # nothing on padding
  np.testing.assert_allclose(alpha_uniform, mono.monotonic_alignment_reference(
      u["expected"], mask, alpha0), rtol=0, atol=1e-6)
  if shape[1] > 1:
    assert np.asarray(alpha["st_gumbel"]).argmax(-1)[-1, -1] > 0  # it does move


def test_alignment_step_by_hand():
  shape = SHAPES[1]
  e, mask, _ = _problem(sum(shape), *shape, offset=0.5)
  u, alpha, _, _ = _all_modes(_key(2), e, mask)
  step = jax.jit(mono.alignment_step)
  for m in ("st_gumbel", "expected"):
    a = mono.initial_alignment(mask)
    for i in range(shape[1]):
      a = step(a, u[m][:, i], mask)
      np.testing.assert_allclose(a, alpha[m][:, i], rtol=0, atol=1e-7 if m == "expected" else 0)


def test_st_gumbel_is_bernoulli():
  e = jnp.linspace(-3.0, 3.0, 13, dtype=jnp.float32)[None, None, :]
  n = 4000
  keys = jax.random.split(_key(0), n)
  u = np.asarray(jax.jit(jax.vmap(lambda k: mono.sample_stay(k, e, 0.3)))(keys))  # [n,1,1,13]
  assert set(np.unique(u)) == {0.0, 1.0}  # forward values exactly binary (eq. 10)
  p = np.asarray(jax.nn.sigmoid(e))[0, 0]
  std = np.sqrt(p * (1 - p) / n)
  np.testing.assert_array_less(np.abs(u.mean(0)[0, 0] - p), 4.5 * std + 1e-3)


def test_relaxation_hardens_with_temperature():
  e, _, _ = _problem(4, 2, 30, 8)
  key = _key(5)

  @jax.jit
  def gap(s):
    hard = mono.sample_stay(key, e, s, mode="st_gumbel")
    return jnp.mean(jnp.abs(mono.sample_stay(key, e, s, mode="gumbel") - hard))

  gaps = [float(gap(s)) for s in (1.0, 0.1, 1e-3)]
  assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3
  with pytest.raises(ValueError, match="bogus"):
    mono.sample_stay(key, e, mode="bogus")


def test_straight_through_gradient_nonzero():
  e, mask, _ = _problem(6, 2, 25, 6, offset=1.5)
  feats = _normal(1, (2, 6, 4))
  w = _normal(2, (2, 25, 4))

  def objective(e):
    u = mono.sample_stay(_key(3), e, 0.5, mode="st_gumbel")
    return jnp.sum(mono.alignment_context(mono.monotonic_alignment(u, mask), feats) * w)

  g = np.asarray(jax.jit(jax.grad(objective))(e))
  assert np.all(np.isfinite(g)) and np.max(np.abs(g)) > 0
  # no gradient on padded phonemes or at the last real phoneme (u forced to 1 there)
  for b, n in enumerate(mask.sum(-1)):
    np.testing.assert_array_equal(g[b, :, n - 1:], 0.0)


@pytest.fixture
def enable_x64():
  prev = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", prev)


def test_expected_mode_gradient_matches_finite_differences(enable_x64):
  rng = np.random.default_rng(7)
  e = jnp.asarray(rng.standard_normal((2, 12, 5)) + 1.0)
  mask = _mask([5, 3], 5)
  feats = jnp.asarray(rng.standard_normal((2, 5, 3)))
  w = jnp.asarray(rng.standard_normal((2, 12, 3)))

  def objective(e):
    u = mono.sample_stay(None, e, mode="expected")
    return jnp.sum(mono.alignment_context(mono.monotonic_alignment(u, mask), feats) * w)

  assert e.dtype == jnp.float64 and objective(e).dtype == jnp.float64
  g = np.asarray(jax.jit(jax.grad(objective))(e))
  eps = 1e-6
  basis = eps * np.eye(e.size).reshape((e.size,) + e.shape)
  f = jax.jit(jax.vmap(objective))
  fd = np.asarray(f(e + basis) - f(e - basis)).reshape(e.shape) / (2 * eps)
  np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
  assert np.abs(g[1, :, 2:]).max() == 0.0 and np.abs(g).max() > 1e-2


def test_energy_module_and_bias():
  d = 4.0
  module = mono.MonotonicEnergy(attention_dim=8, bias_init=math.log(d - 1))
  q = jnp.zeros((2, 5, 6))
  k = _normal(0, (2, 3, 7))
  params = module.init(_key(1), q, k)
  e = module.apply(params, q, k)
  assert e.shape == (2, 5, 3) and e.dtype == jnp.float32
  np.testing.assert_allclose(1.0 / (1.0 - jax.nn.sigmoid(e)), d, rtol=1e-5)  # mean stay
  names = jax.tree_util.tree_map(lambda p: p.names, params["params"],
                                 is_leaf=lambda p: hasattr(p, "names"))
  assert names["query"]["kernel"] == ("embed", "mlp") and names["energy_bias"] == ()
  qq, kk = jnp.ones((1, 2, 4)), jnp.full((1, 3, 4), 0.5)
  np.testing.assert_allclose(mono.alignment_energies(qq, kk, -1.0), 0.0, atol=1e-7)


def test_cross_attention_weights():
  e, mask, lengths = _problem(9, 3, 4, 6)
  w = np.asarray(mono.cross_attention_weights(e, mask))
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
  for b in range(3):
    np.testing.assert_array_equal(w[b, :, lengths[b]:], 0.0)


def test_stats_and_durations():
  # row 0: 5 real frames, 3 real phonemes, path 0,0,1,2,2 (+1 padded frame)
  # row 1: 4 real frames, 4 real phonemes, path 0,1,1,1 (never reaches phoneme 3)
  path = [[0, 0, 1, 2, 2, 2], [0, 1, 1, 1, 3, 3]]
  alpha = jax.nn.one_hot(jnp.asarray(path), 4)
  frame_mask = _mask([5, 4], 6)
  phoneme_mask = _mask([3, 4], 4)
  dur = np.asarray(mono.durations_from_alignment(alpha, frame_mask))
  np.testing.assert_array_equal(dur, [[2, 1, 2, 0], [1, 3, 0, 0]])
  stats = {k: float(v) for k, v in mono.alignment_stats(alpha, frame_mask, phoneme_mask).items()}
  assert stats["visited_fraction"] == pytest.approx((3 / 3 + 2 / 4) / 2)
  assert stats["mean_duration"] == pytest.approx((5 / 3 + 4 / 2) / 2)
  assert stats["reached_end"] == pytest.approx(0.5) and stats["past_end_fraction"] == 0.0
  # Last phoneme first reached at frame 3 of 5 in row 0, never in row 1.
  assert stats["last_phoneme_onset"] == pytest.approx((3 / 5 + 1.0) / 2)
  jitted = jax.jit(mono.alignment_stats)(alpha, frame_mask, phoneme_mask)
  assert float(jitted["reached_end"]) == pytest.approx(0.5)
  # Reference durations: row 0 path 0,1,1,2,2 (durations 1,2,2); row 1 path 0,1,2,3
  # (durations 1,1,1,3: 2 phonemes ahead of the alignment at the last real frame).
  ref = jnp.asarray([[1, 2, 2, 0], [1, 1, 1, 3]])
  got = {k: float(v) for k, v in
         mono.alignment_stats(alpha, frame_mask, phoneme_mask, ref).items()}
  diffs = np.abs(np.asarray([0, 0, 1, 2, 2, 0, 1, 1, 1]) - [0, 1, 1, 2, 2, 0, 1, 2, 3])
  assert got["reference_phoneme_error"] == pytest.approx(diffs.mean())
  assert got["reference_within_1"] == pytest.approx(np.mean(diffs <= 1)) and diffs.max() == 2


def test_stats_count_frames_past_the_end_without_hold():
  """``hold_last=False``: a frame whose mass fell off the end is past the end (index n_ph),
  not phoneme 0: it is no phoneme's duration, the row has reached the end, and against a
  reference it is one phoneme beyond the last."""
  # row 0: 3 phonemes, 7 real frames: 0,0,1,2 then fell off (3 all-zero rows), 1 padded
  # row 1: 4 phonemes, 5 real frames: 0,1,1,2,2 (never reaches phoneme 3), 3 padded
  path = [[0, 0, 1, 2, -1, -1, -1, -1], [0, 1, 1, 2, 2, -1, -1, -1]]
  alpha = jax.nn.one_hot(jnp.asarray(path), 4)  # -1: an all-zero row
  u = np.ones((1, 8, 4), np.float32)
  u[0, [2, 3, 4]] = 0.0                         # advance at frames 2-4: off the end at 4
  np.testing.assert_array_equal(alpha[0], mono.monotonic_alignment(
      jnp.asarray(u), _mask([3], 4), hold_last=False)[0])
  frame_mask, phoneme_mask = _mask([7, 5], 8), _mask([3, 4], 4)
  np.testing.assert_array_equal(mono.frame_phonemes(alpha, phoneme_mask),
                                [[0, 0, 1, 2, 3, 3, 3, 3], [0, 1, 1, 2, 2, 4, 4, 4]])
  for pm in (phoneme_mask, None):
    np.testing.assert_array_equal(mono.durations_from_alignment(alpha, frame_mask, pm),
                                  [[2, 1, 1, 0], [1, 2, 2, 0]])
  ref = jnp.asarray([[2, 2, 3, 0], [1, 0, 0, 4]])  # per frame: 0,0,1,1,2,2,2 / 0,3,3,3,3
  got = {k: float(v) for k, v in jax.jit(mono.alignment_stats)(
      alpha, frame_mask, phoneme_mask, ref).items()}
  assert got["visited_fraction"] == pytest.approx((3 / 3 + 3 / 4) / 2)
  assert got["mean_duration"] == pytest.approx((4 / 3 + 5 / 3) / 2)
  assert got["reached_end"] == pytest.approx(0.5)
  assert got["past_end_fraction"] == pytest.approx((3 / 7 + 0) / 2)
  assert got["last_phoneme_onset"] == pytest.approx((3 / 7 + 1.0) / 2)
  diffs = np.array([0, 0, 0, 1, 1, 1, 1] + [0, 2, 2, 1, 1])
  assert got["reference_within_1"] == pytest.approx(np.mean(diffs <= 1))
  assert got["reference_phoneme_error"] == pytest.approx(diffs.mean())
  # Relaxed rows: past the end once the fallen-off mass exceeds every phoneme's (a tie, in
  # exact binary fractions, goes to the phoneme).
  soft = jnp.asarray([[[0.2, 0.1, 0.3], [0.25, 0.125, 0.3125], [0.5, 0.5, 0.0]]])
  np.testing.assert_array_equal(mono.frame_phonemes(soft, _mask([3], 3)), [[3, 2, 0]])


def test_mean_hard_alignment_is_the_expected_alignment():
  """Eq. 9 is the expectation of Algorithm 1's hard recursion under ``u ~ Bernoulli(p)``:
  the mean of N straight-through (Bernoulli-forward) alignments equals the expected
  alignment (``u = p``) within a binomial standard error per entry, with and without
  holding the last phoneme."""
  e, mask, _ = _problem(11, 2, 12, 5, scale=1.5, offset=0.5)
  n = 4000

  @jax.jit
  def mean_hard(keys):  # {hold_last: mean alignment} in one program
    def one(key):
      u = mono.sample_stay(key, e, 0.5, "st_gumbel")
      return {h: mono.monotonic_alignment(u, mask, hold_last=h) for h in (True, False)}
    return jax.tree.map(lambda a: jnp.mean(a, axis=0), jax.vmap(one)(keys))

  means = mean_hard(jax.random.split(_key(4), n))
  p = np.asarray(mono.stay_probabilities(e), np.float64)
  for hold in (True, False):
    expected = mono.monotonic_alignment_reference(p, mask, hold_last=hold).astype(np.float64)
    got = np.asarray(means[hold], np.float64)
    se = np.sqrt(expected * (1 - expected) / n)
    np.testing.assert_array_less(np.abs(got - expected), 5 * se + 1e-6)
    assert (se > 0.005).sum() > 20  # many genuinely random entries


def test_context_selects_features():
  e, mask, lengths = _problem(10, 2, 15, 5)
  u = mono.sample_stay(_key(0), e, mode="threshold")
  alpha = mono.monotonic_alignment(u, mask)
  feats = _normal(1, (2, 5, 3))
  ctx = np.asarray(mono.alignment_context(alpha, feats))
  pos = np.asarray(alpha).argmax(-1)
  np.testing.assert_array_equal(ctx, np.take_along_axis(np.asarray(feats), pos[..., None], 1))


def test_mass_falls_off_past_the_last_phoneme_without_hold():
  """``hold_last=False`` is Algorithm 1's shift as written: advancing from the last real
  phoneme leaves an all-zero alignment (zero context) for the rest of the row; the scan
  equals the NumPy loop in both settings."""
  u = np.zeros((2, 6, 4), np.float32)  # always advance
  u[1] = 1.0
  u[1, 2:, :] = 0.0                    # row 1: stay twice, then advance
  mask = _mask([3, 4], 4)
  held = np.asarray(mono.monotonic_alignment(jnp.asarray(u), mask))
  fell = np.asarray(mono.monotonic_alignment(jnp.asarray(u), mask, hold_last=False))
  np.testing.assert_array_equal(held[0].argmax(-1), [1, 2, 2, 2, 2, 2])
  np.testing.assert_array_equal(fell[0].sum(-1), [1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(fell[1].argmax(-1)[:5], [0, 0, 1, 2, 3])
  np.testing.assert_array_equal(fell[1].sum(-1), [1, 1, 1, 1, 1, 0])
  for hold, got in ((True, held), (False, fell)):
    np.testing.assert_array_equal(got, mono.monotonic_alignment_reference(u, mask,
                                                                          hold_last=hold))


def test_sequence_straight_through_is_hard_forward_relaxed_backward():
  """Forward: the Bernoulli (hard) alignment exactly; backward: the gradient of the relaxed
  (Gumbel-softmax) alignment, which reaches every phoneme's decision, not only the visited
  phoneme's as the per-step estimator's does."""
  e, mask, lengths = _problem(8, 3, 20, 6, offset=1.0)
  key = _key(9)
  w = _normal(3, (3, 20, 6))

  def objective(e, how):
    u_hard = mono.sample_stay(key, e, 0.5, "st_gumbel")
    u_soft = mono.sample_stay(key, e, 0.5, "gumbel")
    if how == "sequence":
      alpha = mono.straight_through_alignment(u_hard, u_soft, mask)
    elif how == "step":
      alpha = mono.monotonic_alignment(u_hard, mask)
    else:
      alpha = mono.monotonic_alignment(u_soft, mask)
    return jnp.sum(alpha * w), alpha

  (_, a_seq), g_seq = jax.value_and_grad(objective, has_aux=True)(e, "sequence")
  (_, a_step), g_step = jax.value_and_grad(objective, has_aux=True)(e, "step")
  _, g_soft = jax.value_and_grad(objective, has_aux=True)(e, "soft")
  np.testing.assert_array_equal(a_seq, a_step)
  _check_hard_path(a_seq, lengths)
  np.testing.assert_allclose(g_seq, g_soft, rtol=1e-6, atol=1e-7)
  # Per-step: off the hard path (alpha_{i-1, j} = 0) a decision gets no gradient.
  prev = np.concatenate([np.asarray(mono.initial_alignment(mask))[:, None],
                         np.asarray(a_step)[:, :-1]], axis=1)
  assert np.all(np.asarray(g_step)[prev == 0] == 0)
  assert np.abs(np.asarray(g_seq)[(prev == 0) & mask[:, None, :]]).max() > 0


def test_reference_phonemes_and_stay_loss_against_numpy():
  """`reference_phonemes` is ``np.repeat`` of the durations (held on the last phoneme past
  their end); `reference_stay_loss` is the BCE of ``sigmoid(e[i, ref[i-1]])`` against "the
  reference stays", over real steps i >= 1 that do not start on the last phoneme."""
  durations = np.array([[2, 1, 3, 0], [1, 2, 0, 0]], np.float32)
  pmask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  ref = np.asarray(mono.reference_phonemes(durations, pmask, 8))
  np.testing.assert_array_equal(ref[0], [0, 0, 1, 2, 2, 2, 2, 2])
  np.testing.assert_array_equal(ref[1], [0, 1, 1, 1, 1, 1, 1, 1])
  e = np.random.default_rng(0).normal(size=(2, 8, 4)).astype(np.float32)
  fmask = np.array([[1] * 7 + [0], [1] * 5 + [0] * 3], bool)
  total, count = 0.0, 0
  for b in range(2):
    for i in range(1, 8):
      prev = ref[b, i - 1]
      if not fmask[b, i] or prev == pmask[b].sum() - 1:
        continue
      p = 1 / (1 + np.exp(-e[b, i, prev]))
      total -= np.log(p) if ref[b, i] == prev else np.log(1 - p)
      count += 1
  assert count == 4  # row 0: steps 1, 2, 3; row 1: step 1 (then on its last phoneme)
  got = float(mono.reference_stay_loss(e, ref, fmask, pmask))
  assert got == pytest.approx(total / count, rel=1e-5)
