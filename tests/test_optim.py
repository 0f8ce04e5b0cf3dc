"""Optimizers from config: schedules, clipping, schedule-free eval parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.base import optimizer_config
from jaxtts.train import optim


def test_warmup_then_constant_and_cosine():
  const = optim.learning_rate_schedule(optimizer_config(learning_rate=1.0, warmup_steps=10), 100)
  np.testing.assert_allclose([const(0), const(5), const(10), const(90)], [0, 0.5, 1, 1],
                             atol=1e-6)
  cos = optim.learning_rate_schedule(
      optimizer_config(learning_rate=1.0, warmup_steps=10, schedule="cosine"), 110)
  assert float(cos(10)) == pytest.approx(1.0)
  assert float(cos(60)) == pytest.approx(0.5, abs=1e-3)  # half-way down the cosine
  assert float(cos(110)) == pytest.approx(0.0, abs=1e-6)


def test_global_norm_clipping_bounds_the_update():
  """The chain clips a huge gradient to the configured global norm before AdamW sees it."""
  cfg = optimizer_config(learning_rate=0.1, grad_clip_norm=0.005)
  tx = optim.make_optimizer(cfg, 10)
  params = {"w": jnp.ones(4)}
  state = tx.init(params)
  clip_state, _ = state
  clipped, _ = optax.clip_by_global_norm(0.005).update({"w": jnp.full(4, 1e6)}, clip_state)
  assert float(optax.tree.norm(clipped)) == pytest.approx(0.005, rel=1e-5)
  updates, _ = tx.update({"w": jnp.full(4, 1e6)}, state, params)
  assert np.all(np.isfinite(np.asarray(updates["w"])))


def test_schedule_free_eval_params_are_the_averaged_sequence():
  cfg = optimizer_config(name="schedule_free_adamw", learning_rate=0.1, warmup_steps=0)
  tx = optim.make_optimizer(cfg, 100)
  params = {"w": jnp.array([1.0, -2.0])}
  state = tx.init(params)
  loss = lambda p: jnp.sum(jnp.square(p["w"]))
  for _ in range(5):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  ev = optim.eval_params(cfg, state, params)
  expected = optax.contrib.schedule_free_eval_params(state[-1], params)
  np.testing.assert_allclose(ev["w"], expected["w"])
  assert not np.allclose(ev["w"], params["w"])  # x (averaged) differs from y (gradient point)
  assert loss(ev) < loss({"w": jnp.array([1.0, -2.0])})


def test_unknown_optimizer_and_schedule_are_named():
  with pytest.raises(ValueError, match="unknown optimizer 'adamax'"):
    optim.make_optimizer(optimizer_config(name="adamax"), 10)
  with pytest.raises(ValueError, match="unknown 'linear'"):
    optim.learning_rate_schedule(optimizer_config(schedule="linear"), 10)
