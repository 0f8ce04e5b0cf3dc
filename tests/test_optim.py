"""`jaxtts.train.optim`: the chains `make_optimizer` builds from config against hand-written
NumPy optimizers (global-norm clipping, AdamW with warmup/cosine, schedule-free AdamW and its
evaluation parameters), and the schedules against their formulas."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.base import optimizer_config
from jaxtts.train import optim

EPS = 1e-8  # optax's Adam epsilon (outside the square root)


def np_schedule(t, peak, warmup, total, cosine):
  """Linear warmup 0 -> peak over ``warmup`` steps, then constant, a half cosine to 0 at
  ``total`` (and 0 after) or ``peak sqrt(warmup / t)`` (``cosine='inverse_sqrt'``)."""
  if t < warmup:
    return peak * t / warmup
  if cosine == "inverse_sqrt":
    return peak * np.sqrt(warmup / t)
  if not cosine:
    return peak
  frac = min(t - warmup, total - warmup) / (total - warmup)
  return peak * 0.5 * (1.0 + np.cos(np.pi * frac))


def np_clip(grads, max_norm):
  norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
  scale = min(1.0, max_norm / norm) if max_norm else 1.0
  return {k: g * scale for k, g in grads.items()}, norm


def _quadratic_grads(params):
  """Gradient of sum_k 0.5 * |A_k p_k - b_k|^2 (fixed A, b), float64."""
  rng = np.random.default_rng(0)
  out = {}
  for k in sorted(params):
    p = params[k]
    a = rng.standard_normal((p.size, p.size)) * 3.0
    b = rng.standard_normal(p.size) * 3.0
    out[k] = (a.T @ (a @ p.ravel() - b)).reshape(p.shape)
  return out


def _run(cfg, total_steps, steps):
  """``steps`` updates of our chain on the quadratic: (params per step, eval params, norms)."""
  tx = optim.make_optimizer(cfg, total_steps)
  params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([[0.3], [-0.7]])}
  state = tx.init(params)
  history = [jax_tree_np(params)]
  for _ in range(steps):
    grads = {k: jnp.asarray(g, jnp.float32) for k, g in _quadratic_grads(history[-1]).items()}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(jax_tree_np(params))
  return history, jax_tree_np(optim.eval_params(cfg, state, params))


def jax_tree_np(tree):
  return {k: np.asarray(v, np.float64) for k, v in tree.items()}


@pytest.mark.parametrize("schedule", ["constant", "cosine", "inverse_sqrt"])
def test_schedules_match_their_formulas(schedule):
  peak, warmup, total = 0.3, 7, 40
  sched = optim.learning_rate_schedule(
      optimizer_config(learning_rate=peak, warmup_steps=warmup, schedule=schedule), total)
  steps = np.arange(total + 5)
  kind = "inverse_sqrt" if schedule == "inverse_sqrt" else schedule == "cosine"
  want = [np_schedule(t, peak, warmup, total, kind) for t in steps]
  np.testing.assert_allclose([float(sched(int(t))) for t in steps], want, rtol=1e-5, atol=1e-7)
  flat = optim.learning_rate_schedule(optimizer_config(learning_rate=peak), total)
  np.testing.assert_allclose([float(flat(t)) for t in (0, 1, total)], peak, rtol=1e-6)


def test_clipped_adamw_matches_numpy():
  """Clip to the global norm over all leaves, then AdamW (bias-corrected moments, decoupled
  weight decay) at the warmup-cosine rate of the step: 6 steps, the first 4 clipped."""
  peak, warmup, total, clip, wd, b1, b2 = 0.05, 3, 8, 40.0, 0.1, 0.8, 0.95
  cfg = optimizer_config(learning_rate=peak, warmup_steps=warmup, schedule="cosine",
                         grad_clip_norm=clip, weight_decay=wd, b1=b1, b2=b2)
  history, ev = _run(cfg, total, 6)
  p = history[0]
  mu = {k: np.zeros_like(v) for k, v in p.items()}
  nu = {k: np.zeros_like(v) for k, v in p.items()}
  clipped = 0
  for t in range(1, 7):
    g, norm = np_clip(_quadratic_grads(p), clip)
    clipped += norm > clip
    lr = np_schedule(t - 1, peak, warmup, total, cosine=True)
    new = {}
    for k in p:
      mu[k] = b1 * mu[k] + (1 - b1) * g[k]
      nu[k] = b2 * nu[k] + (1 - b2) * g[k] ** 2
      m_hat, v_hat = mu[k] / (1 - b1 ** t), nu[k] / (1 - b2 ** t)
      new[k] = p[k] - lr * (m_hat / (np.sqrt(v_hat) + EPS) + wd * p[k])
    p = new
    for k in p:
      np.testing.assert_allclose(history[t][k], p[k], rtol=2e-5, atol=1e-6, err_msg=f"{t} {k}")
  assert 0 < clipped < 6  # both branches of the clip
  for k in p:  # AdamW evaluates its parameters as they are
    np.testing.assert_array_equal(ev[k], history[-1][k])


def test_schedule_free_adamw_and_eval_params_match_numpy():
  """Schedule-free AdamW (Defazio et al. 2024), the paper's optimizer (§4), after clipping:
  ``y`` (trained parameters) = ``b1 x + (1 - b1) z``; ``z`` takes RMS-normalised steps
  (bias-corrected second moment, decoupled weight decay at y) at the warmup rate of the
  previous count; ``x`` (the evaluation parameters) averages ``z`` with weights
  ``max_lr^2``."""
  peak, warmup, clip, wd, b1, b2 = 0.1, 3, 40.0, 0.05, 0.9, 0.99
  cfg = optimizer_config(name="schedule_free_adamw", learning_rate=peak, warmup_steps=warmup,
                         grad_clip_norm=clip, weight_decay=wd, b1=b1, b2=b2)
  history, ev = _run(cfg, 100, 6)
  y = history[0]
  z = dict(y)
  x = dict(y)
  nu = {k: np.zeros_like(v) for k, v in y.items()}
  weight_sum, max_lr, clipped = 0.0, 0.0, 0
  for t in range(1, 7):
    g, norm = np_clip(_quadratic_grads(y), clip)
    clipped += norm > clip
    lr_z = np_schedule(t - 1, peak, warmup, 0, cosine=False)
    max_lr = max(max_lr, np_schedule(t, peak, warmup, 0, cosine=False))
    weight_sum += max_lr ** 2
    c = max_lr ** 2 / weight_sum if weight_sum else 0.0
    for k in y:
      nu[k] = b2 * nu[k] + (1 - b2) * g[k] ** 2
      step = g[k] / (np.sqrt(nu[k] / (1 - b2 ** t)) + EPS) + wd * y[k]
      z[k] = z[k] - lr_z * step
      x[k] = (1 - c) * x[k] + c * z[k]
    y = {k: b1 * x[k] + (1 - b1) * z[k] for k in y}
    for k in y:
      np.testing.assert_allclose(history[t][k], y[k], rtol=2e-5, atol=1e-6, err_msg=f"{t} {k}")
  assert 0 < clipped < 6  # both branches of the clip
  for k in x:
    np.testing.assert_allclose(ev[k], x[k], rtol=2e-5, atol=1e-6)
    assert np.abs(ev[k] - history[-1][k]).max() > 1e-3  # x is not y


def test_unknown_optimizer_and_schedule_are_named():
  with pytest.raises(ValueError, match="unknown optimizer 'adamax'"):
    optim.make_optimizer(optimizer_config(name="adamax"), 10)
  with pytest.raises(ValueError, match="unknown 'linear'"):
    optim.learning_rate_schedule(optimizer_config(schedule="linear"), 10)
