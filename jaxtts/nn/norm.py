"""Conditional LayerNorm, shared by FACodec's decoder input and NaturalSpeech 3's AdaCLN.

NaturalSpeech 3 §3.2.1 (FACodec): the decoder input is ``z = γ(h_t) ⊙ LN(z_p + z_c + z_d) +
β(h_t)`` with ``[γ; β] = Linear(h_t)`` of the timbre vector, initialised at γ = 1, β = 0. §3.3's
diffusion blocks condition every LayerNorm the same way on the time embedding (AdaCLN; its
exact form is not public, ours is this one). ``LN`` here has no scale or bias of its own::

  x [B, T, C], cond [B, C_c] (or [B, T, C_c])  ->  γ ⊙ (x - mean) / sqrt(var + eps) + β
  [γ; β] = cond @ W + b,   W = 0,  b = [1 ... 1, 0 ... 0] at init

so a fresh layer is a plain LayerNorm and the condition learns to move it. Statistics are in
float32; the output has ``x``'s dtype.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ConditionalLayerNorm(nn.Module):
  """``(x [B, T, C], cond [B, C_c] | [B, T, C_c]) -> [B, T, C]`` (see the module docstring)."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    c = x.shape[-1]
    bias_init = lambda key, shape, dtype=jnp.float32: jnp.concatenate(  # noqa: E731
        [jnp.ones((c,), dtype), jnp.zeros((c,), dtype)])
    scale_shift = nn.Dense(
        2 * c, dtype=jnp.float32, name="scale_shift",
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp")),
        bias_init=nn.with_logical_partitioning(bias_init, ("mlp",)))(cond.astype(jnp.float32))
    if scale_shift.ndim == 2:
      scale_shift = scale_shift[:, None, :]
    gamma, beta = jnp.split(scale_shift, 2, axis=-1)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    return (gamma * y + beta).astype(x.dtype)
