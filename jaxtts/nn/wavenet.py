"""WaveNet-style gated dilated convolution stack ("WN"), as VITS's ``modules.WN``.

Used by CLONE's prosody predictor, posterior encoder, acoustic encoder, posterior wave encoder
and the flow's couplings (`000_31cfc13db0a5a5eb.txt`, Table 4: "dilated CNN", kernel 5,
dilation rate 1, 192 channels). Layer ``i`` of ``L`` (VITS, `modules.py`)::

    a, b = split(Conv_{k, dilation r^i}(x) + cond_i)        # 2H channels
    h = tanh(a) * sigmoid(b)                                # the gated activation
    res, skip = split(Conv_1(h))                            # the last layer: skip only
    x = (x + res) * mask;   out += skip

and the output is ``out * mask``. The conditioning enters every layer through one projection
``cond [B, Cg] or [B, T, Cg] -> [B, (T,) 2 H L]``, split per layer: VITS conditions on the
speaker embedding (global); CLONE's posterior and acoustic encoders also take the linguistic
feature (frame-level), so both shapes are accepted. Convolutions are weight-normalised as in
VITS (`jaxtts.nn.conv.Conv1d`). Activations ``[B, T, C]``.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtts.nn.conv import Conv1d, conv_padding


class WaveNet(nn.Module):
  """``x [B, T, H]`` (``H = hidden``), ``mask [B, T, 1]``, optional ``cond`` -> ``[B, T, H]``."""
  hidden: int
  kernel_size: int
  num_layers: int
  dilation_rate: int = 1
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, cond: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    h_dim, layers = self.hidden, self.num_layers
    if x.shape[-1] != h_dim:
      raise ValueError(f"WaveNet input has {x.shape[-1]} channels, expected hidden={h_dim}")
    mask = mask.astype(self.dtype)
    if cond is not None:
      cond = Conv1d(2 * h_dim * layers, 1, dtype=self.dtype, name="cond")(
          cond[:, None] if cond.ndim == 2 else cond)                         # [B, 1|T, 2HL]
    x = x.astype(self.dtype)
    out = jnp.zeros_like(x)
    for i in range(layers):
      d = self.dilation_rate ** i
      a = Conv1d(2 * h_dim, self.kernel_size, dilation=d, padding=conv_padding(
          self.kernel_size, 1, d), dtype=self.dtype, name=f"in_{i}")(x)
      if cond is not None:
        a = a + cond[..., 2 * h_dim * i:2 * h_dim * (i + 1)]
      h = jnp.tanh(a[..., :h_dim]) * jax.nn.sigmoid(a[..., h_dim:])
      h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
      last = i == layers - 1
      rs = Conv1d(h_dim if last else 2 * h_dim, 1, dtype=self.dtype, name=f"res_skip_{i}")(h)
      if last:
        out = out + rs
      else:
        x = (x + rs[..., :h_dim]) * mask
        out = out + rs[..., h_dim:]
    return out * mask
