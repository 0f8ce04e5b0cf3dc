"""Masked discrete diffusion: the schedule, the training masks and the re-masking rule.

NaturalSpeech 3 (``../shared/papers/003_1b235cc35c31a20d.txt`` §3.3.2 and its slides; the
public analogue is MaskGCT's ``maskgct_s2a.py``, notes in ``../shared/research/ns3_facodec.md``)
diffuses discrete codes by masking. With ``σ(t) = sin(π t / 2)`` and ``t ~ U(0, 1]``:

* **Training** (`training_masks`). Codes ``[B, T, Q]`` of ``Q`` layers (FACodec: prosody 1,
  content 2, detail 3, in that order). Per row: a prompt prefix of ``prompt_len`` frames is
  visible at every layer; a level ``q`` is drawn; on the target frames (``prompt_len <= i <
  length``) level ``q`` is masked with ``m_i ~ Bernoulli(σ(t))``, at least one token masked;
  layers below ``q`` are visible, layers above ``q`` are masked on the target. The loss is the
  cross-entropy on level ``q``'s masked tokens; padding is never visible and never in the loss.
* **Inference** (`remask`). After predicting every unknown token, the ``⌊N σ(t - Δt)⌋``
  lowest-confidence of the ``N`` target positions are masked again (``N`` the row's target
  length); positions decoded at earlier steps have confidence ``+∞`` and are never re-masked,
  so at ``t - Δt = 0`` every token is decoded. MaskGIT's (Chang et al., 2022, §3.2) Gumbel
  noise on the confidences is applied by the sampler (`jaxtts.diffusion.sampler`).

Shapes are static (``T`` a bucket); lengths and prompt lengths are per-row int arrays, so one
compiled program serves every mix of them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# t is drawn from U(t_min, 1]: MaskGCT clamps t >= 1e-5 (σ(t) > 0, some masking always).
T_MIN = 1e-5


def mask_ratio(t: jax.Array) -> jax.Array:
  """``σ(t) = sin(π t / 2)`` (§3.3.2): 0 at t = 0 (nothing masked), 1 at t = 1 (all masked)."""
  return jnp.sin(0.5 * jnp.pi * t)


def positions(num_frames: int, lengths: jax.Array, prompt_lengths: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(valid, prompt, target)`` bool ``[B, T]``: frames ``< length``, ``< prompt_len`` (and
  valid), and valid frames after the prompt."""
  i = jnp.arange(num_frames)[None, :]
  valid = i < lengths[:, None]
  prompt = valid & (i < prompt_lengths[:, None])
  return valid, prompt, valid & ~prompt


def bernoulli_with_one(rng: jax.Array, probability: jax.Array, where: jax.Array) -> jax.Array:
  """``[B, T]`` bool: ``Bernoulli(probability [B])`` on the ``where`` positions, and at least
  one of them set in every row that has one (the position of the smallest uniform draw, which
  is set anyway whenever any is)."""
  u = jax.random.uniform(rng, where.shape)
  u = jnp.where(where, u, 2.0)
  first = jnp.arange(where.shape[1])[None, :] == jnp.argmin(u, axis=1)[:, None]
  return where & ((u < probability[:, None]) | first)


class TrainingMasks(NamedTuple):
  """``visible [B, T, Q]`` (the model sees the true code), ``loss [B, T]`` (level ``q``'s
  masked target tokens), ``level [B]`` and ``t [B]`` as drawn."""
  visible: jax.Array
  loss: jax.Array
  level: jax.Array
  t: jax.Array


def hide_prompt(visible: jax.Array, prompt: jax.Array, prompt_levels) -> jax.Array:
  """``visible [B, T, Q]`` with the prompt frames of the levels where ``prompt_levels [Q]`` is
  False hidden (NS3 Table 11's "no duration prompt"); ``prompt_levels`` None: unchanged."""
  if prompt_levels is None:
    return visible
  keep = jnp.asarray(prompt_levels, bool)[None, None, :]
  return visible & ~(prompt[..., None] & ~keep)


def training_masks(rng: jax.Array, num_frames: int, num_levels: int, lengths: jax.Array,
                   prompt_lengths: jax.Array, level_weights: jax.Array | None = None,
                   prompt_levels=None, stratified: bool = False) -> TrainingMasks:
  """The masks of one training step (module docstring).

  ``lengths``, ``prompt_lengths`` ``[B]`` int; ``level_weights [Q]`` the (unnormalised)
  probability of each level (uniform when None; MaskGCT weights level ``i`` by ``Q - i``);
  ``prompt_levels [Q]`` bool: the levels whose prompt is visible (None: all, the paper).
  ``stratified`` (uniform levels only): row ``b`` gets level ``(o + b) mod Q`` with ``o``
  uniform, so each row's level is still uniform but a batch of ``B >= Q`` rows trains every
  level (ours: a lower-variance draw, and every level's loss is measured every step)."""
  t_rng, level_rng, mask_rng = jax.random.split(rng, 3)
  b = lengths.shape[0]
  t = jax.random.uniform(t_rng, (b,), minval=T_MIN, maxval=1.0)
  logits = (jnp.zeros((num_levels,)) if level_weights is None
            else jnp.log(jnp.asarray(level_weights, jnp.float32)))
  if stratified:
    if level_weights is not None:
      raise ValueError("training_masks: stratified levels are uniform; level_weights must be "
                       "None")
    offset = jax.random.randint(level_rng, (), 0, num_levels)
    level = (offset + jnp.arange(b)) % num_levels
  else:
    level = jax.random.categorical(level_rng, logits, shape=(b,))
  valid, prompt, target = positions(num_frames, lengths, prompt_lengths)
  masked = bernoulli_with_one(mask_rng, mask_ratio(t), target)            # level q, [B, T]
  q = jnp.arange(num_levels)[None, None, :]
  lq = level[:, None, None]
  visible = jnp.where(q < lq, valid[..., None],
                      jnp.where(q == lq, (valid & ~masked)[..., None], prompt[..., None]))
  return TrainingMasks(visible=hide_prompt(visible, prompt, prompt_levels), loss=masked,
                       level=level, t=t)


def num_masked_after(step: jax.Array, num_steps: int, target_lengths: jax.Array) -> jax.Array:
  """``[B]`` int: how many target tokens stay masked after step ``step`` (0-based) of
  ``num_steps``: ``⌊N σ(1 - (step + 1) / num_steps)⌋`` with ``N`` the row's target length
  (NS3 §3.3.2, ``t - Δt`` with ``Δt = 1 / num_steps``); 0 after the last step."""
  t_next = 1.0 - (step + 1) / num_steps
  return jnp.floor(target_lengths.astype(jnp.float32) * mask_ratio(t_next)).astype(jnp.int32)


def remask(confidence: jax.Array, decoded_before: jax.Array, target: jax.Array,
           count: jax.Array) -> jax.Array:
  """``[B, T]`` bool: the positions masked again, the ``count [B]`` lowest-confidence target
  positions not decoded before (``decoded_before`` positions count as ``+∞``; non-target ones
  are never masked). A sort threshold (MaskGIT's ``mask_by_random_topk``), not a dynamic
  top-k, so shapes stay static; ties at the threshold are broken by position."""
  score = jnp.where(target & ~decoded_before, confidence.astype(jnp.float32), jnp.inf)
  order = jnp.argsort(score, axis=1, stable=True)
  rank = jnp.argsort(order, axis=1, stable=True)                 # rank of each position
  return target & ~decoded_before & (rank < count[:, None])
