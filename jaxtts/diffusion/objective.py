"""The training objective of masked discrete diffusion (NaturalSpeech 3 §3.3.2).

For one batch of codes ``[B, T, Q]`` with lengths and prompt lengths: draw the masks of
`jaxtts.diffusion.masking.training_masks` (time ``t``, level ``q`` and the masked target
tokens, per row), drop the prompt of each row with probability ``cfg_drop`` (classifier-free
guidance; NS3: 0.15, per row here, MaskGCT draws once per batch), and take the cross-entropy of
level ``q``'s masked tokens::

  L = Σ_{b,i} m_{b,i} CE(logits_{b,i}, c_{b,i,q_b}) / Σ_{b,i} m_{b,i}

Padding and the prompt are never in ``m``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxtts.diffusion import masking

# apply_fn(codes, visible, level, t, condition, mask, prompt, drop_prompt, rng) -> logits
ApplyFn = Callable[..., jax.Array]


def masked_diffusion_loss(apply_fn: ApplyFn, codes: jax.Array, lengths: jax.Array,
                          prompt_lengths: jax.Array, condition: jax.Array, rng: jax.Array, *,
                          cfg_drop: float = 0.15, level_weights: Any = None,
                          prompt_levels: Any = None, stratified: bool = False
                          ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """``(loss, metrics)`` of one batch (module docstring); metrics: ``loss``, ``accuracy`` of
  the masked tokens, ``masked_fraction`` of the target frames, ``cfg_dropped`` rows,
  ``level_loss [Q]`` and ``level_rows [Q]`` (rows per level)."""
  mask_rng, drop_rng, model_rng = jax.random.split(rng, 3)
  b, t_frames, q_levels = codes.shape
  masks = masking.training_masks(mask_rng, t_frames, q_levels, lengths, prompt_lengths,
                                 level_weights, prompt_levels, stratified)
  valid, prompt, target = masking.positions(t_frames, lengths, prompt_lengths)
  drop = jax.random.bernoulli(drop_rng, cfg_drop, (b,))
  logits = apply_fn(codes, masks.visible, masks.level, masks.t, condition, valid, prompt, drop,
                    model_rng)
  labels = jnp.take_along_axis(codes, masks.level[:, None, None], axis=2)[..., 0]
  m = masks.loss.astype(jnp.float32)
  logits = logits.astype(jnp.float32)
  # -inf logits (beyond a level's vocabulary) are finite here so that 0 * them stays 0.
  ce = optax.softmax_cross_entropy_with_integer_labels(jnp.maximum(logits, -1e9), labels)
  n = jnp.maximum(jnp.sum(m), 1.0)
  loss = jnp.sum(ce * m) / n
  accuracy = jnp.sum((jnp.argmax(logits, -1) == labels) * m) / n
  # Per level: the mean cross-entropy of the masked tokens of the rows that drew it (0 for a
  # level no row drew; with `stratified` levels and B >= Q every level is drawn).
  per_level = jax.nn.one_hot(masks.level, q_levels)                                # [B, Q]
  rows_ce, rows_n = jnp.sum(ce * m, axis=1), jnp.sum(m, axis=1)
  level_loss = jnp.sum(per_level * rows_ce[:, None], 0) / jnp.maximum(
      jnp.sum(per_level * rows_n[:, None], 0), 1.0)
  return loss, {"loss": loss, "accuracy": accuracy, "level_loss": level_loss,
                "level_rows": jnp.sum(per_level, 0),
                "masked_fraction": jnp.sum(m) / jnp.maximum(jnp.sum(target), 1),
                "cfg_dropped": jnp.sum(drop.astype(jnp.float32))}
