"""The train state's EMA (`jaxtts.train.state`): the recursion against NumPy, rejected steps,
group selection, checkpointing (also of pre-EMA checkpoints) and the trainer's eval params."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxtts.train import checkpoint as ckpt_lib
from jaxtts.train import state as state_lib
from jaxtts.train.config import build_config

LR, DECAY = 0.1, 0.8


def _sgd_task_step(state, batch, rng, optimizers):
  """Gradient step on ``0.5 * sum((w - target)^2) * scale`` for every group."""
  del rng

  def loss_fn(params):
    return sum(0.5 * batch["scale"] * jnp.sum(jnp.square(p["w"] - batch["target"]))
               for p in params.values())

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  params, opt_state = {}, {}
  for g in state.params:
    params[g], opt_state[g] = state_lib.apply_group(state.params[g], state.opt_state[g],
                                                    grads[g], optimizers[g])
  return state.replace(params=params, opt_state=opt_state), {"loss": loss}


@pytest.fixture(scope="module")
def toy():
  w0 = np.array([1.0, -2.0, 0.5], np.float32)
  params = {"generator": {"w": jnp.asarray(w0)}, "discriminator": {"w": jnp.asarray(-w0)}}
  optimizers = {g: optax.sgd(LR) for g in params}
  state = state_lib.create(params, optimizers, jax.random.key(0), ema_groups=("generator",))
  step = jax.jit(state_lib.make_train_step(
      lambda s, b, r: _sgd_task_step(s, b, r, optimizers), ema_decay=DECAY), donate_argnums=0)
  return w0, state, step


def test_ema_follows_numpy_recursion_and_skips_rejected_steps(toy):
  w0, state, step = toy
  target = np.array([0.0, 1.0, 2.0], np.float32)
  scales = [1.0, 0.5, np.nan, 2.0, 1.0]   # the third step's loss is NaN: rejected
  p, e = w0.astype(np.float64), w0.astype(np.float64)
  for scale in scales:
    state, metrics = step(state, {"target": jnp.asarray(target), "scale": jnp.float32(scale)})
    if np.isfinite(scale):
      p = p - LR * scale * (p - target)
      e = DECAY * e + (1 - DECAY) * p
      assert float(metrics["update_applied"]) == 1.0
    else:
      assert float(metrics["update_applied"]) == 0.0
    np.testing.assert_allclose(state.params["generator"]["w"], p, rtol=1e-5)
    np.testing.assert_allclose(state.ema_params["generator"]["w"], e, rtol=1e-5)
  assert set(state.ema_params) == {"generator"}  # only the EMA groups
  assert int(state.step) == len(scales) and int(state.nonfinite_total) == 1
  assert not np.allclose(e, p)  # the EMA lags the parameters


def test_ema_groups_selection():
  train = ml_collections.ConfigDict({"ema_decay": 0.0, "ema_groups": None})
  assert state_lib.ema_groups(train, ("generator", "discriminator")) == ()
  train.ema_decay = 0.99
  assert state_lib.ema_groups(train, ("generator", "discriminator")) == ("generator",)
  assert state_lib.ema_groups(train, ("model",)) == ("model",)
  with train.ignore_type():
    train.ema_groups = ("discriminator",)
  assert state_lib.ema_groups(train, ("generator", "discriminator")) == ("discriminator",)
  with train.ignore_type():
    train.ema_groups = ("decoder",)
  with pytest.raises(ValueError, match="ema_groups.*decoder"):
    state_lib.ema_groups(train, ("generator", "discriminator"))


def test_ema_off_is_an_empty_dict():
  params = {"model": {"w": jnp.ones(2)}}
  state = state_lib.create(params, {"model": optax.sgd(1.0)}, jax.random.key(0))
  assert state.ema_params == {}
  assert state_lib.update_ema(state, 0.9) is state


def test_checkpoint_roundtrip_and_pre_ema_checkpoints(tmp_path):
  params = {"model": {"w": jnp.arange(3.0)}}
  opt = {"model": optax.adam(1e-3)}
  with_ema = state_lib.create(params, opt, jax.random.PRNGKey(0), ema_groups=("model",))
  with_ema = with_ema.replace(ema_params={"model": {"w": jnp.array([7.0, 8.0, 9.0])}})
  ck = ckpt_lib.Checkpointer(str(tmp_path / "a"), max_to_keep=2, async_save=False)
  ck.save(1, with_ema, None, force=True)
  ck.wait()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), with_ema)
  got = ck.restore(1, abstract, None)
  np.testing.assert_array_equal(got.ema_params["model"]["w"], [7.0, 8.0, 9.0])
  ck.close()
  # A checkpoint saved before TrainState had ema_params restores into an EMA-off state.
  off = state_lib.create(params, opt, jax.random.PRNGKey(0))
  legacy = {f: getattr(off, f) for f in ("step", "params", "opt_state", "rng", "nonfinite_run",
                                         "nonfinite_total")}
  ck = ckpt_lib.Checkpointer(str(tmp_path / "b"), max_to_keep=2, async_save=False)
  ck.save(1, legacy, None, force=True)
  ck.wait()
  got = ck.restore(1, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), off), None)
  assert isinstance(got, state_lib.TrainState) and got.ema_params == {}
  np.testing.assert_array_equal(got.params["model"]["w"], [0.0, 1.0, 2.0])
  ck.close()


def test_trainer_evaluates_with_the_ema(tmp_path):
  """`Trainer.eval_params`: the EMA for the EMA groups, schedule-free's x for the rest; the
  jitted eval step uses them; the EMA is sharded like the parameters."""
  from jaxtts.train import loop, optim  # pylint: disable=import-outside-toplevel
  cfg = build_config("configs/gmm_vae.py:tiny", [
      "--config.data.segment_samples=1600", "--config.model.decoder_dim=16",
      "--config.model.encoder_strides=(8,25)", "--config.train.batch_size=2",
      "--config.train.ema_decay=0.5"])
  trainer = loop.Trainer(cfg, str(tmp_path))
  assert trainer.ema_groups == ("generator",)
  sh = trainer.state_shardings
  assert jax.tree.structure(sh.ema_params["generator"]) == jax.tree.structure(
      sh.params["generator"])
  assert all(a == b for a, b in zip(jax.tree.leaves(sh.ema_params["generator"]),
                                    jax.tree.leaves(sh.params["generator"])))
  state = trainer.init_state()
  ema = jax.tree.map(lambda x: x * 0.5 + 0.01, state.params["generator"])
  state = state.replace(ema_params={"generator": ema})
  got = trainer.eval_params(state)
  for a, b in zip(jax.tree.leaves(got["generator"]), jax.tree.leaves(ema)):
    np.testing.assert_array_equal(a, b)
  want_d = optim.eval_params(cfg.train.optimizers.discriminator,
                             state.opt_state["discriminator"], state.params["discriminator"])
  for a, b in zip(jax.tree.leaves(got["discriminator"]), jax.tree.leaves(want_d)):
    np.testing.assert_array_equal(a, b)
  trainer._compile()  # pylint: disable=protected-access
  batch = {k: jnp.asarray(v) for k, v in trainer.task.example_batch(2).items()}
  batch["audio"] = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (2, 1600)),
                               jnp.float32)
  with trainer._ctx():  # pylint: disable=protected-access
    metrics = trainer.eval_step(state, batch)
  with_ema = jax.jit(trainer.task.eval_step)({"generator": ema}, batch)
  with_params = jax.jit(trainer.task.eval_step)({"generator": state.params["generator"]}, batch)
  np.testing.assert_allclose(float(metrics["loss"]), float(with_ema["loss"]), rtol=1e-6)
  assert abs(float(with_ema["loss"]) - float(with_params["loss"])) > 1e-3
