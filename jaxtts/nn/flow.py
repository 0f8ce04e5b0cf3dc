"""Residual coupling flows with their log-determinant and inverse (VITS / CLONE prior flow).

CLONE's prior on the phoneme-level prosody latent is ``p(z | c) = N(f_θ(z; c); 0, I) |det ∂f_θ/∂z|``
(`000_31cfc13db0a5a5eb.txt`, eq. 15), with ``f_θ`` 4 flows, each a residual coupling over a
4-layer WN (hidden 192, kernel 5; Table 4), as VITS's ``ResidualCouplingBlock``. One coupling
(Dinh et al., "Density estimation using Real NVP", 2017) splits the channels into halves
``x = [x_a, x_b]`` and, with ``m, log s = NN(x_a, c)``::

    forward:  y_a = x_a,  y_b = m + x_b ⊙ exp(log s),   log|det ∂y/∂x| = Σ log s   (masked)
    inverse:  x_a = y_a,  x_b = (y_b − m) ⊙ exp(−log s)

and a channel flip (VITS ``Flip``) follows each coupling so both halves get transformed.
``mean_only=True`` is VITS's choice (``log s = 0``, log-det 0); CLONE's eq. 16 keeps the
log-determinant term, which only an affine coupling makes non-zero, so the preset picks.
The last projection starts at zero (VITS): every coupling is the identity at initialisation.
``log s`` is used as is, as in VITS (no tanh bound). Activations ``[B, T, C]``, ``mask [B, T, 1]``.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtts.nn.wavenet import WaveNet


class ResidualCoupling(nn.Module):
  """One coupling; ``__call__(x, mask, cond, inverse)`` -> ``(y [B, T, C], logdet [B])``."""
  hidden: int
  kernel_size: int
  num_layers: int
  dilation_rate: int = 1
  mean_only: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, cond: Optional[jax.Array] = None,
               inverse: bool = False) -> Tuple[jax.Array, jax.Array]:
    channels = x.shape[-1]
    if channels % 2:
      raise ValueError(f"ResidualCoupling needs an even channel count, got {channels}")
    half = channels // 2
    mask = mask.astype(jnp.float32)
    x_a, x_b = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    h = nn.Dense(self.hidden, dtype=self.dtype, name="pre", kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("latent", "channels")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("channels",)))(x_a) * mask
    h = WaveNet(self.hidden, self.kernel_size, self.num_layers, self.dilation_rate,
                dtype=self.dtype, name="wn")(h, mask, cond)
    stats = nn.Dense(half * (1 if self.mean_only else 2), dtype=jnp.float32, name="post",
                     kernel_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                              ("channels", "latent")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("latent",)))(
                         h.astype(jnp.float32)) * mask
    m = stats[..., :half]
    log_s = jnp.zeros_like(m) if self.mean_only else stats[..., half:]
    if inverse:
      y_b = (x_b - m) * jnp.exp(-log_s) * mask
      logdet = -jnp.sum(log_s, axis=(1, 2))
    else:
      y_b = (m + x_b * jnp.exp(log_s)) * mask
      logdet = jnp.sum(log_s, axis=(1, 2))
    return jnp.concatenate([x_a, y_b], axis=-1), logdet


class CouplingFlow(nn.Module):
  """``num_flows`` × (coupling, flip); ``inverse=True`` runs them backwards.

  ``__call__(x [B, T, C], mask [B, T, 1], cond, inverse)`` -> ``(y, logdet [B])`` with ``logdet``
  the log-determinant of the map applied (negated for the inverse), summed over valid frames.
  """
  num_flows: int
  hidden: int
  kernel_size: int
  num_layers: int
  dilation_rate: int = 1
  mean_only: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    self.couplings = [ResidualCoupling(self.hidden, self.kernel_size, self.num_layers,
                                       self.dilation_rate, self.mean_only, self.dtype,
                                       name=f"coupling_{i}") for i in range(self.num_flows)]

  def __call__(self, x: jax.Array, mask: jax.Array, cond: Optional[jax.Array] = None,
               inverse: bool = False) -> Tuple[jax.Array, jax.Array]:
    logdet = jnp.zeros(x.shape[:1], jnp.float32)
    x = x.astype(jnp.float32) * mask
    if not inverse:
      for coupling in self.couplings:
        x, ld = coupling(x, mask, cond)
        x, logdet = jnp.flip(x, axis=-1), logdet + ld
    else:
      for coupling in reversed(self.couplings):
        x, ld = coupling(jnp.flip(x, axis=-1), mask, cond, inverse=True)
        logdet = logdet + ld
    return x, logdet
