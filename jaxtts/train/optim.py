"""Optimizers from config: AdamW with warmup/cosine/inverse-sqrt, or schedule-free AdamW (Defazio
et al. 2024, used by the GMM-LM paper §4 with lr 1e-3 for the codec and 1e-2, clip 0.005 for the
LM).

Schedules (``schedule``; every one warms up linearly from 0 over ``warmup_steps``):
``constant``; ``cosine`` (a half cosine to 0 at the last step); ``inverse_sqrt``
(``peak * sqrt(warmup / t)`` after the warm-up, fairseq's schedule, which NaturalSpeech 3
appendix A.2 trains with: 5k warm-up steps).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections
import optax

SCHEDULE_FREE = "schedule_free_adamw"


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  peak, warmup = float(opt.learning_rate), int(opt.warmup_steps)
  if opt.schedule == "constant":
    if warmup <= 0:
      return optax.constant_schedule(peak)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
  if opt.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup, 1),
                                              max(total_steps, warmup + 1))
  if opt.schedule == "inverse_sqrt":
    w = float(max(warmup, 1))

    def inverse_sqrt(step):
      t = jnp.asarray(step, jnp.float32)
      return peak * jnp.where(t < w, t / w, jnp.sqrt(w / jnp.maximum(t, 1.0)))
    return inverse_sqrt
  raise ValueError(f"config.train.optimizers.*.schedule: unknown {opt.schedule!r}; "
                   "valid: constant, cosine, inverse_sqrt")


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int
                   ) -> optax.GradientTransformation:
  """One parameter group's optimizer. Clipping (global norm) precedes the update rule."""
  chain = []
  if opt.grad_clip_norm and opt.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(float(opt.grad_clip_norm)))
  if opt.name == "adamw":
    chain.append(optax.adamw(learning_rate_schedule(opt, total_steps), b1=opt.b1, b2=opt.b2,
                             weight_decay=opt.weight_decay))
  elif opt.name == SCHEDULE_FREE:
    chain.append(optax.contrib.schedule_free_adamw(
        learning_rate=float(opt.learning_rate), warmup_steps=int(opt.warmup_steps) or None,
        b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay))
  else:
    raise ValueError(f"config.train.optimizers.*.name: unknown optimizer {opt.name!r}; "
                     f"valid: adamw, {SCHEDULE_FREE}")
  return optax.chain(*chain)


def eval_params(opt: ml_collections.ConfigDict, opt_state: Any, params: Any) -> Any:
  """Parameters to evaluate/export: schedule-free's averaged x sequence, else params as is."""
  if opt.name == SCHEDULE_FREE:
    inner = opt_state[-1]  # the chain's last element is the schedule-free state
    return optax.contrib.schedule_free_eval_params(inner, params)
  return params
