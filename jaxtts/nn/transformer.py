"""Pre-LN Transformer blocks with a convolutional FFN and optionally conditional norms.

One block serves FACodec's timbre extractor (NaturalSpeech 3 §3.2.1: 4 layers, 256 dims, 4
heads, plain norms) and NaturalSpeech 3's phoneme encoder and diffusion stacks (§3.3 and
Table 9 of the appendix: conv-FFN of kernel 9 or 3 and, in the diffusion, AdaCLN: every
LayerNorm conditional on the time embedding, `jaxtts.nn.norm.ConditionalLayerNorm`)::

  x = x + Dropout(MHSA(Norm_1(x, c)))                 # relative positions (attention.py)
  x = x + Dropout(W_2 * GELU(W_1 * Norm_2(x, c)))      # W_i: Conv1d(kernel), 'same' padding

with ``Norm = LayerNorm`` when ``cond`` is None and ``ConditionalLayerNorm(·, cond)``
otherwise; `TransformerStack` adds a final norm of the same kind. Activations ``[B, T, D]``;
``mask`` ``[B, T]`` bool marks valid frames (padding is zeroed before each convolution and
masked as attention keys, so it never reaches valid frames).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtts.nn.attention import RelPositionMultiHeadAttention
from jaxtts.nn.norm import ConditionalLayerNorm

_ACT = ("batch", "time", "embed")


def _norm(x: jax.Array, cond: Optional[jax.Array], name: str) -> jax.Array:
  if cond is None:
    return nn.LayerNorm(epsilon=1e-5, dtype=x.dtype, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                               ("embed",)))(x)
  return ConditionalLayerNorm(name=name)(x, cond)


class ConvFeedForward(nn.Module):
  """``[B, T, D] -> [B, T, D]``: Conv1d(kernel, D -> ffn_dim), GELU, Conv1d(output kernel,
  -> D); ``output_kernel_size`` None = ``kernel_size`` (FastSpeech-style), 1 = a Linear (the
  released FACodec timbre extractor's FFN)."""
  ffn_dim: int
  kernel_size: int = 1
  dtype: Any = jnp.float32
  output_kernel_size: Optional[int] = None

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    d = x.shape[-1]

    def conv(features, axes, name, y, kernel):
      if mask is not None:
        y = y * mask[..., None].astype(y.dtype)
      return nn.Conv(features, (kernel,), padding="SAME", dtype=self.dtype, name=name,
                     kernel_init=nn.with_logical_partitioning(
                         nn.initializers.lecun_normal(), ("conv_kernel",) + axes),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                            axes[-1:]))(y)

    # The convolution's input with its features replicated: on a (data, fsdp, tensor) mesh,
    # jax 0.10.2's SPMD partitioner returned wrong kernel gradients (0.2-0.9 % off, and
    # everything upstream with them) for a convolution whose input features arrived sharded;
    # this was the NS3 sharded-test failure (tests/test_sharding.py).
    x = nn.with_logical_constraint(x, ("batch", "time", "channels"))
    y = nn.gelu(conv(self.ffn_dim, ("embed", "mlp"), "conv_in", x, self.kernel_size),
                approximate=False)
    out_kernel = self.kernel_size if self.output_kernel_size is None else self.output_kernel_size
    return conv(d, ("mlp", "embed"), "conv_out", y, out_kernel)


class TransformerBlock(nn.Module):
  """One pre-LN block (module docstring). ``cond`` ``[B, C]`` or ``[B, T, C]`` or None."""
  num_heads: int
  ffn_dim: int
  kernel_size: int = 1
  dropout: float = 0.0
  dtype: Any = jnp.float32
  output_kernel_size: Optional[int] = None
  position: str = "relative_xl"

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None,
               cond: Optional[jax.Array] = None, deterministic: bool = True) -> jax.Array:
    x = nn.with_logical_constraint(x.astype(self.dtype), _ACT)
    y = RelPositionMultiHeadAttention(self.num_heads, dropout=self.dropout, dtype=self.dtype,
                                      position=self.position, name="attention")(_norm(x, cond, "norm_attention"), mask,
                                                        deterministic=deterministic)
    x = x + nn.Dropout(self.dropout)(y, deterministic=deterministic)
    y = ConvFeedForward(self.ffn_dim, self.kernel_size, self.dtype, self.output_kernel_size,
                        name="ffn")(
        _norm(x, cond, "norm_ffn"), mask)
    x = x + nn.Dropout(self.dropout)(y, deterministic=deterministic)
    return nn.with_logical_constraint(x, _ACT)


class TransformerStack(nn.Module):
  """``num_layers`` `TransformerBlock` and a final norm: ``[B, T, D] -> [B, T, D]``."""
  num_layers: int
  num_heads: int
  ffn_dim: int
  kernel_size: int = 1
  dropout: float = 0.0
  dtype: Any = jnp.float32
  output_kernel_size: Optional[int] = None
  position: str = "relative_xl"

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None,
               cond: Optional[jax.Array] = None, deterministic: bool = True) -> jax.Array:
    for i in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.ffn_dim, self.kernel_size, self.dropout,
                           self.dtype, self.output_kernel_size, self.position,
                           name=f"block_{i}")(x, mask, cond, deterministic)
    return _norm(x, cond, "norm_out")
