"""Duration tokens of NaturalSpeech 3 §3.3.1.

NS3's duration diffusion predicts durations as discrete tokens with a cross-entropy, not by
regression: a duration of ``d`` frames is token ``min(d, max_duration)``, so the vocabulary is
``max_duration + 1`` (``0`` is a valid duration: espeak's corpus gives some phones none). The
length regulator and phone pooling are `jaxtts.alignment.durations`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def duration_tokens(durations: jax.Array, max_duration: int) -> tuple[jax.Array, jax.Array]:
  """``durations [..]`` int frames -> ``(tokens [..], clipped [])``: tokens in ``[0,
  max_duration]`` and the count of durations that were longer (clipped to the top token)."""
  d = jnp.maximum(durations.astype(jnp.int32), 0)
  return jnp.minimum(d, max_duration), jnp.sum(d > max_duration)
