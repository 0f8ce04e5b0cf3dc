"""Snake activation (Ziyin et al., 2020), as used by BigVGAN and DAC (GMM-VAE, paper A.5), and
SnakeBeta (BigVGAN, Lee et al., 2023, §3.1), the activation of NaturalSpeech 3's released
FACodec (``ns3_codec``; the paper says DAC's Snake)::

  Snake      x + sin^2(α x) / α                      α per channel, init 1
  SnakeBeta  x + exp(-β) sin^2(exp(α) x)             α, β per channel in log scale, init 0

The released code wraps each activation in BigVGAN's anti-aliased ``Activation1d`` (2x
upsampling and downsampling with fixed Kaiser-sinc filters); ours applies it at the signal's
rate."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def snake(x: jax.Array, alpha: jax.Array) -> jax.Array:
  """``x + sin(alpha * x)^2 / (alpha + 1e-9)`` with ``alpha`` broadcast over the last axis."""
  return x + jnp.reciprocal(alpha + 1e-9) * jnp.square(jnp.sin(alpha * x))


def snake_beta(x: jax.Array, log_alpha: jax.Array, log_beta: jax.Array) -> jax.Array:
  """``x + exp(-log_beta) sin(exp(log_alpha) x)^2``, parameters broadcast over the last axis."""
  return x + jnp.exp(-log_beta) * jnp.square(jnp.sin(jnp.exp(log_alpha) * x))


class Snake(nn.Module):
  """Per-channel Snake on channels-last activations ``[..., C]``.

  Parameter ``alpha`` [C] (float32, init 1, logical axes ``('channels',)``); with ``beta``
  (SnakeBeta) ``log_alpha`` and ``log_beta`` [C] (init 0). The activation is evaluated in
  float32 and returned in ``dtype`` (default: the input dtype), so bf16 inputs do not lose the
  small ``sin^2`` term.
  """
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32
  beta: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    out_dtype = x.dtype if self.dtype is None else self.dtype
    x32 = x.astype(jnp.float32)
    if self.beta:
      zeros = nn.with_logical_partitioning(nn.initializers.zeros, ("channels",))
      log_alpha = self.param("log_alpha", zeros, (c,), self.param_dtype)
      log_beta = self.param("log_beta", zeros, (c,), self.param_dtype)
      return snake_beta(x32, log_alpha.astype(jnp.float32),
                        log_beta.astype(jnp.float32)).astype(out_dtype)
    alpha = self.param("alpha", nn.with_logical_partitioning(nn.initializers.ones, ("channels",)),
                       (c,), self.param_dtype)
    return snake(x32, alpha.astype(jnp.float32)).astype(out_dtype)
