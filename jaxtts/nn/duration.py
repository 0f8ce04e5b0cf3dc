"""Deterministic duration predictor (FastSpeech 2's variance predictor, VITS's ``DurationPredictor``).

CLONE's Table 4 (`000_31cfc13db0a5a5eb.txt`): "Conv1D, kernel 3, filter 256", which is VITS's
``use_sdp=False`` branch: two blocks of ``Conv_k → ReLU → LayerNorm → Dropout`` and a 1×1
projection to ``log w`` per phoneme, masked. VITS feeds it ``stop_gradient(text encoding)``
plus the speaker embedding (a 1×1 projection added to the input); CLONE adds the prosody sample
(the caller concatenates or adds it to ``x``). Its loss is the MSE on ``log(w + 1e-6)`` per
valid phoneme (`duration_loss`). ``x [B, P, C]``, ``mask [B, P, 1]`` -> ``log_w [B, P]``.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def _conv(features: int, kernel_size: int, dtype, name: str) -> nn.Conv:
  return nn.Conv(features, (kernel_size,), padding="SAME", dtype=dtype, name=name,
                 kernel_init=nn.with_logical_partitioning(
                     nn.initializers.lecun_normal(), ("conv_kernel", "conv_in", "conv_out")),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)))


class DurationPredictor(nn.Module):
  filters: int = 256
  kernel_size: int = 3
  dropout: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, cond: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    mask = mask.astype(self.dtype)
    x = x.astype(self.dtype)
    if cond is not None:
      x = x + nn.Dense(x.shape[-1], dtype=self.dtype, name="cond")(
          cond[:, None] if cond.ndim == 2 else cond)
    for i in range(2):
      # Features replicated at the convolution's input: see `jaxtts.nn.transformer`'s
      # ConvFeedForward (jax 0.10.2's partitioner, wrong kernel gradients otherwise).
      x = nn.with_logical_constraint(x * mask, ("batch", "time", "channels"))
      x = nn.relu(_conv(self.filters, self.kernel_size, self.dtype, f"conv_{i}")(x))
      x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=f"norm_{i}")(x)
      x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    log_w = _conv(1, 1, jnp.float32, "proj")(x * mask) * mask
    return log_w[..., 0]


def duration_loss(log_w: jax.Array, durations: jax.Array, mask: jax.Array) -> jax.Array:
  """VITS's ``Σ (log w − log(d + 1e-6))² / Σ mask``: ``log_w, durations [B, P]``, ``mask [B, P]``."""
  mask = mask.astype(jnp.float32)
  target = jnp.log(durations.astype(jnp.float32) + 1e-6)
  return jnp.sum(jnp.square(log_w - target) * mask) / jnp.maximum(jnp.sum(mask), 1.0)
