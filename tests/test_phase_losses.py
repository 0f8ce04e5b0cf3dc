"""APNet's amplitude and phase losses (`jaxtts.audio.phase`) against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtts.audio import phase


def _wrap_distance(a, b):
  """The angle between a and b, through complex numbers (not the formula under test)."""
  return np.abs(np.angle(np.exp(1j * (a - b))))


def test_anti_wrap_is_the_angle_between_two_phases():
  rng = np.random.default_rng(0)
  a, b = rng.uniform(-20, 20, 1000), rng.uniform(-20, 20, 1000)
  np.testing.assert_allclose(np.asarray(phase.anti_wrap(jnp.asarray(a - b))),
                             _wrap_distance(a, b), atol=1e-4)
  assert float(phase.anti_wrap(jnp.asarray(2 * np.pi * 3 + 0.25))) == pytest.approx(0.25,
                                                                                    abs=1e-5)


def test_phase_losses_match_numpy_with_a_frame_mask():
  rng = np.random.default_rng(1)
  b, n, k = 2, 6, 5
  target = rng.standard_normal((b, n, k)) + 1j * rng.standard_normal((b, n, k))
  pred = rng.uniform(-9, 9, (b, n, k))
  mask = np.ones((b, n), np.float32)
  mask[1, 4:] = 0.0
  got = phase.phase_losses(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.complex64),
                           jnp.asarray(mask))
  want_phase = np.angle(target)
  ip = _wrap_distance(pred, want_phase)
  gd = _wrap_distance(np.diff(pred, axis=-1), np.diff(want_phase, axis=-1))
  iaf = _wrap_distance(np.diff(pred, axis=1), np.diff(want_phase, axis=1))
  pair = mask[:, 1:] * mask[:, :-1]
  np.testing.assert_allclose(float(got["instantaneous_phase"]),
                             (ip * mask[..., None]).sum() / (mask.sum() * k), rtol=1e-4)
  np.testing.assert_allclose(float(got["group_delay"]),
                             (gd * mask[..., None]).sum() / (mask.sum() * (k - 1)), rtol=1e-4)
  np.testing.assert_allclose(float(got["instantaneous_frequency"]),
                             (iaf * pair[..., None]).sum() / (pair.sum() * k), rtol=1e-4)


def test_phase_losses_vanish_at_the_target_up_to_whole_turns_and_have_finite_grads():
  rng = np.random.default_rng(2)
  target = rng.standard_normal((1, 4, 6)) + 1j * rng.standard_normal((1, 4, 6))
  turns = 2 * np.pi * rng.integers(-3, 4, (1, 4, 6))
  got = phase.phase_losses(jnp.asarray(np.angle(target) + turns, jnp.float32),
                           jnp.asarray(target, jnp.complex64))
  assert all(float(v) < 1e-5 for v in got.values()), got
  grads = jax.grad(lambda p: sum(phase.phase_losses(p, jnp.asarray(target)).values()))(
      jnp.asarray(rng.uniform(-3, 3, (1, 4, 6)), jnp.float32))
  assert bool(jnp.all(jnp.isfinite(grads))) and float(jnp.abs(grads).sum()) > 0


def test_amplitude_loss_is_log10_l1_over_valid_frames():
  rng = np.random.default_rng(3)
  target = (rng.standard_normal((2, 3, 4)) + 1j * rng.standard_normal((2, 3, 4))) * 0.1
  log_mag = rng.standard_normal((2, 3, 4))
  mask = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  got = phase.amplitude_loss(jnp.asarray(log_mag, jnp.float32),
                             jnp.asarray(target, jnp.complex64), jnp.asarray(mask))
  diff = np.abs(log_mag / np.log(10) - np.log10(np.maximum(np.abs(target), 1e-5)))
  np.testing.assert_allclose(float(got), (diff * mask[..., None]).sum() / (mask.sum() * 4),
                             rtol=1e-5)
