"""The training state and the generic pieces of every task's pure `train_step`.

A task may hold several parameter groups (e.g. "generator", "discriminator"), each with its own
optimizer; `TrainState.params` and `TrainState.opt_state` are dicts keyed by group name.

EMA (``train.ema_decay`` = ``d > 0``): `TrainState.ema_params` holds, for the groups of
``train.ema_groups`` (default: all but "discriminator"), the exponential moving average of the
parameters after each accepted update, ``e_0 = p_0`` (the initial parameters) and
``e_t = d * e_{t-1} + (1 - d) * p_t``; a step the NaN/inf guard rejects keeps ``e_{t-1}``. With
``d = 0`` it is an empty dict (no extra arrays; checkpoints of runs without it restore as is).
Checkpoint paths: ``ema_params/<group>/...`` beside ``params/<group>/...``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array              # int32 []: batches consumed (rejected updates included)
  params: dict[str, Any]       # group -> parameter pytree (float32)
  ema_params: dict[str, Any]   # group -> EMA of params (the EMA groups only; {} when off)
  opt_state: dict[str, Any]    # group -> optax state
  rng: jax.Array               # uint32 [2]: base key; step keys are fold_in(rng, step)
  nonfinite_run: jax.Array     # int32 []: consecutive rejected (NaN/inf) steps
  nonfinite_total: jax.Array   # int32 []: all rejected steps


def ema_groups(train_cfg: Any, groups: Sequence[str]) -> tuple[str, ...]:
  """The groups that keep an EMA: none when ``train.ema_decay`` is 0, else ``train.ema_groups``
  (None: every group but "discriminator"). A named group the task lacks is an error."""
  if not float(train_cfg.get("ema_decay", 0.0) or 0.0) > 0.0:
    return ()
  chosen = train_cfg.get("ema_groups", None)
  if chosen is None:
    return tuple(g for g in groups if g != "discriminator")
  unknown = [g for g in chosen if g not in groups]
  if unknown:
    raise ValueError(f"config.train.ema_groups: {unknown} are not parameter groups of this "
                     f"task ({', '.join(groups)})")
  return tuple(g for g in groups if g in tuple(chosen))


def create(params: dict[str, Any], optimizers: Mapping[str, optax.GradientTransformation],
           rng: jax.Array, ema_groups: Sequence[str] = ()) -> TrainState:
  """The state at step 0; the EMA of ``ema_groups`` starts at the initial parameters (a copy:
  a donated state must not hold one buffer twice)."""
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params={g: jax.tree.map(jnp.copy, params[g]) for g in ema_groups},
      opt_state={g: optimizers[g].init(params[g]) for g in params},
      rng=rng,
      nonfinite_run=jnp.zeros((), jnp.int32),
      nonfinite_total=jnp.zeros((), jnp.int32),
  )


def step_rng(state: TrainState) -> jax.Array:
  """The key for this step: a pure function of the seed and the step (exact resumes)."""
  return jax.random.fold_in(state.rng, state.step)


def apply_group(params: Any, opt_state: Any, grads: Any,
                optimizer: optax.GradientTransformation) -> tuple[Any, Any]:
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _all_finite(tree: Any) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def guard_nonfinite(old: TrainState, new: TrainState, loss: jax.Array
                    ) -> tuple[TrainState, jax.Array]:
  """Rejects the update when the loss or an updated parameter is NaN/inf.

  A NaN/inf gradient reaches the parameters through any optax update rule, so the parameters
  are the one place to check (checking the optimizer moments as well doubled compile time).

  Returns the state to continue from (the old one, with counters bumped, when rejected) and
  a bool [] saying whether the update was applied.
  """
  ok = jnp.isfinite(loss) & _all_finite(new.params)
  # lax.cond rather than an elementwise select: a select over every parameter lets XLA fuse
  # the whole backward pass into each consumer, and compile time explodes on CPU.
  kept = jax.lax.cond(ok, lambda: new, lambda: old)
  kept = kept.replace(
      step=old.step + 1,
      nonfinite_run=jnp.where(ok, 0, old.nonfinite_run + 1),
      nonfinite_total=old.nonfinite_total + (~ok).astype(jnp.int32))
  return kept, ok


def update_ema(state: TrainState, decay: float) -> TrainState:
  """``e <- decay * e + (1 - decay) * p`` for every group in ``state.ema_params`` (float32)."""
  if not state.ema_params:
    return state
  ema = {g: jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype), e_g,
                         state.params[g])
         for g, e_g in state.ema_params.items()}
  return state.replace(ema_params=ema)


def make_train_step(task_step: Callable[[TrainState, dict, jax.Array],
                                        tuple[TrainState, dict]], ema_decay: float = 0.0):
  """Wraps a task's update into the trainer's pure step: PRNG per step, the EMA update of the
  new parameters, then the NaN/inf guard (a rejected step keeps the old parameters and EMA)."""

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    new_state, metrics = task_step(state, batch, step_rng(state))
    new_state = update_ema(new_state, float(ema_decay))
    new_state, ok = guard_nonfinite(state, new_state, metrics["loss"])
    metrics = dict(metrics, update_applied=ok.astype(jnp.float32))
    return new_state, metrics

  return train_step


def count_params(tree: Any) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))
