"""Snake activation (Ziyin et al., 2020), as used by BigVGAN and DAC (GMM-VAE, paper A.5)."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def snake(x: jax.Array, alpha: jax.Array) -> jax.Array:
  """``x + sin(alpha * x)^2 / (alpha + 1e-9)`` with ``alpha`` broadcast over the last axis."""
  return x + jnp.reciprocal(alpha + 1e-9) * jnp.square(jnp.sin(alpha * x))


class Snake(nn.Module):
  """Per-channel Snake on channels-last activations ``[..., C]``.

  Parameter ``alpha`` [C] (float32, init 1, logical axes ``('channels',)``). The activation is
  evaluated in float32 and returned in ``dtype`` (default: the input dtype), so bf16 inputs do
  not lose the small ``sin^2`` term.
  """
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param("alpha", nn.with_logical_partitioning(nn.initializers.ones, ("channels",)),
                       (x.shape[-1],), self.param_dtype)
    out_dtype = x.dtype if self.dtype is None else self.dtype
    y = snake(x.astype(jnp.float32), alpha.astype(jnp.float32))
    return y.astype(out_dtype)
